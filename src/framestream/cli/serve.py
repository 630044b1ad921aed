"""``framestream serve``: watch and steer a generation live in the browser.

Examples::

    framestream serve demo                      # random-weight demo model on CPU, http://127.0.0.1:8000
    framestream serve demo --port 0 --max-sessions 2 --token s3cret
    framestream serve wan2.1-self-forcing-1.3b --checkpoint-dir ~/weights --device cuda

Open the printed address, type a prompt, press Start; type a new prompt while it plays to
steer the stream from the next block. The page uses WebRTC when it can and falls back to
JPEG frames over the WebSocket. Extra ``--path.to.field VALUE`` arguments override any field
of the recipe's pipeline config, as in ``generate``. Binds 127.0.0.1 unless ``--host`` says
otherwise.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "serve",
        help="live streaming server: watch and steer a generation in the browser",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", help="recipe name: demo, or one of `framestream generate --list`")
    parser.add_argument("--checkpoint-dir", type=Path, default=None, help="folder with the recipe's weights")
    parser.add_argument("--host", default="127.0.0.1", help="address to bind (default: 127.0.0.1, loopback only)")
    parser.add_argument("--port", type=int, default=8000, help="TCP port; 0 picks a free one (default: 8000)")
    parser.add_argument("--device", default="cpu", help="torch device of the model worker (default: cpu)")
    parser.add_argument("--threads", type=int, default=None, help="torch CPU threads of the worker (default: torch's)")
    parser.add_argument("--token", default=None, help="require this token from clients (?token=... in the page URL)")
    parser.add_argument("--max-sessions", type=int, default=4, help="sessions streaming at once; more wait in a queue (default: 4)")
    parser.add_argument("--max-waiting", type=int, default=16, help="sessions allowed to wait (default: 16)")
    parser.add_argument("--max-blocks", type=int, default=None, help="AR blocks per session (default: the recipe's; 64 for demo)")
    parser.add_argument("--max-prompt-chars", type=int, default=500, help="longest prompt accepted (default: 500)")
    parser.add_argument("--max-message-bytes", type=int, default=65536, help="largest client message (default: 65536)")
    parser.add_argument("--frame-queue", type=int, default=48, help="frames buffered per session before the oldest drops (default: 48)")
    parser.add_argument("--fps", type=float, default=16.0, help="playback frame rate (default: 16)")
    parser.add_argument("--jpeg-quality", type=int, default=80, help="JPEG quality of the WebSocket transport (default: 80)")
    parser.add_argument("--no-webrtc", action="store_true", help="offer only the WebSocket transport")
    parser.add_argument("--print-config", action="store_true", help="print the resolved server and pipeline config and exit")
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    from framestream.serve.config import ServerConfig

    config = ServerConfig(
        recipe=args.recipe,
        checkpoint_dir=None if args.checkpoint_dir is None else str(args.checkpoint_dir),
        overrides=tuple(getattr(args, "overrides", []) or []),
        host=args.host,
        port=args.port,
        device=args.device,
        threads=args.threads,
        token=args.token,
        max_sessions=args.max_sessions,
        max_waiting=args.max_waiting,
        max_blocks=args.max_blocks,
        max_prompt_chars=args.max_prompt_chars,
        max_message_bytes=args.max_message_bytes,
        frame_queue_frames=args.frame_queue,
        fps=args.fps,
        jpeg_quality=args.jpeg_quality,
        webrtc=not args.no_webrtc,
    )
    server = config.setup()  # resolves and checks the recipe before any weights load
    if args.print_config:
        print(config)
        print(server.recipe.config)
        return 0
    if server.recipe.random_weights:
        print(f"framestream serve: {args.recipe} has RANDOM weights (a pipeline smoke test, not a trained model)", flush=True)

    def ready(port: int) -> None:
        shown = f"[{args.host}]" if ":" in args.host else args.host
        print(f"framestream serve: {args.recipe} on http://{shown}:{port}/ (Ctrl-C stops)", flush=True)

    server.run(on_ready=ready)
    return 0
