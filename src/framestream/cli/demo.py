"""``framestream demo``: stream a short video from the built-in random-weight demo model.

A smoke test of the streaming pipeline (transformer with KV cache, self-forcing
scheduler, streaming decoder, mp4 writer) that runs on CPU in seconds. Any config
field can be overridden, e.g. ``--diffusion-model.scheduler.shift 3``.
"""

from __future__ import annotations

import argparse
import contextlib
import logging
import time
from pathlib import Path

__all__ = ["register", "run", "check_video_output"]

RANDOM_WEIGHTS_NOTICE = (
    "framestream demo: the demo model has RANDOM weights. This is a smoke test of the streaming "
    "pipeline, not a trained model; expect structured noise, not content."
)


def check_video_output(output: Path, *, overwrite: bool, fps: float | None, device: str, command: str):
    """Checks of a streamed video output that run before any model is built; returns the torch device.

    ``fps=None``: the frame rate comes from the recipe later (always positive), nothing to check.
    """
    from framestream.io.atomic import check_new_output, check_writable
    from framestream.jobs.checks import resolve_device

    if fps is not None and fps <= 0:
        raise ValueError(f"--fps must be > 0, got {fps}")
    if not output.suffix:
        raise ValueError(f"-o {output}: {command} writes a video; give a file name such as out.mp4")
    resolved = resolve_device(device)
    check_writable(output)
    check_new_output(output, overwrite)
    return resolved


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "demo",
        help="stream a short video from the random-weight demo model (pipeline smoke test)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
        epilog="Extra --path.to.field VALUE arguments override the demo pipeline config "
        "(e.g. --diffusion-model.scheduler.shift 3 --diffusion-model.seed 7).",
    )
    parser.add_argument("--steps", type=int, default=8, help="autoregressive steps (chunks) to generate (default: 8)")
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs/demo.mp4"), help="output video (default: outputs/demo.mp4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    parser.add_argument("--fps", type=float, default=16.0, help="frame rate of the output video (default: 16)")
    parser.add_argument("--device", default="cpu", help="torch device to run on, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--threads",
        type=int,
        default=1,
        help="CPU threads for torch and the video encoder (default: 1; the model is tiny, more threads "
        "mostly add contention)",
    )
    parser.add_argument(
        "--profile",
        action="store_true",
        help="show one timing row per AR step (and log each step) instead of the summary only",
    )
    parser.set_defaults(func=run, accepts_overrides=True)


def run(args: argparse.Namespace) -> int:
    import torch
    from rich.console import Console
    from tqdm.auto import tqdm
    from tqdm.contrib.logging import logging_redirect_tqdm

    from framestream.config import apply_overrides, derive_config
    from framestream.io.video import StreamingVideoWriter
    from framestream.models.demo import demo_pipeline_config
    from framestream.pipeline import profile_table

    if args.steps < 1:
        raise ValueError(f"--steps must be >= 1, got {args.steps}")
    if args.threads < 1:
        raise ValueError(f"--threads must be >= 1, got {args.threads}")
    device = check_video_output(args.output, overwrite=args.overwrite, fps=args.fps, device=args.device, command="demo")
    console = Console()  # the notice, results (table, summary) on stdout; stderr stays for errors
    console.print(f"[bold yellow]{RANDOM_WEIGHTS_NOTICE}[/]")

    config = apply_overrides(demo_pipeline_config(), list(getattr(args, "overrides", []) or []))
    # The demo always collects stage timings: on CPU that costs nothing, on GPU one sync per step.
    config = derive_config(config, enable_sync_and_profile=True)
    pipeline = config.setup().to(device).eval()

    decoder = pipeline.decoder
    chunk_latents = pipeline.diffusion_model.transformer.config.chunk_frames
    total_frames = sum(decoder.get_output_temporal_size(i, chunk_latents) for i in range(args.steps))

    pipeline_logger = logging.getLogger("framestream.pipeline")
    saved_level, saved_threads = pipeline_logger.level, torch.get_num_threads()
    if not args.profile:
        pipeline_logger.setLevel(logging.WARNING)  # per-step timing lines only with --profile
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    cache = pipeline.initialize_cache()
    try:
        with contextlib.ExitStack() as stack:
            writer = stack.enter_context(StreamingVideoWriter(args.output, fps=args.fps, threads=args.threads))
            stack.enter_context(logging_redirect_tqdm())
            bar = stack.enter_context(tqdm(total=total_frames, unit="frame", desc="demo", dynamic_ncols=True, disable=None))
            for chunk in pipeline.rollout(args.steps, cache=cache):
                writer.write(chunk)
                bar.update(chunk.shape[2])
    finally:
        pipeline_logger.setLevel(saved_level)
        torch.set_num_threads(saved_threads)
    elapsed = time.perf_counter() - start

    records = cache.event_profiler.records if cache.event_profiler is not None else []
    console.print(profile_table(records, title=f"demo: per-stage timing on {device}", per_step=args.profile))
    height, width = writer.size or (0, 0)
    console.print(
        f"wrote {writer.num_frames} frames ({width}x{height}, {args.fps:g} fps) in {args.steps} AR steps "
        f"to {args.output} in {elapsed:.2f} s ({writer.num_frames / elapsed:.1f} frames/s). "
        "[yellow]Random weights: a pipeline smoke test, not a trained model.[/]"
    )
    return 0
