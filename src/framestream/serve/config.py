"""Config of the live streaming server."""

from __future__ import annotations

from dataclasses import field

from framestream.config import InstantiateConfig, config_dataclass

__all__ = ["ServerConfig", "LOOPBACK"]

LOOPBACK = "127.0.0.1"


def _server_class() -> type:
    from framestream.serve.app import StreamServer

    return StreamServer


@config_dataclass
class ServerConfig(InstantiateConfig):
    """Everything ``framestream serve`` can be told; ``setup()`` builds the :class:`StreamServer`."""

    _target: type = field(default_factory=_server_class)
    recipe: str = "demo"
    """Recipe name (``demo`` or a Wan recipe from ``framestream generate --list``)."""
    checkpoint_dir: str | None = None
    """Folder with the recipe's weights (not needed for ``demo`` and ``-tiny`` recipes)."""
    overrides: tuple[str, ...] = ()
    """``--path.to.field VALUE`` overrides of the recipe's pipeline config."""
    host: str = LOOPBACK
    """Address to bind; loopback unless told otherwise."""
    port: int = 8000
    """TCP port (0 picks a free one)."""
    device: str = "cpu"
    """Torch device of the model worker."""
    threads: int | None = None
    """CPU threads for torch on the worker (None keeps torch's default)."""
    token: str | None = None
    """Shared secret clients must present (``?token=`` or a hello message); None disables auth."""
    max_sessions: int = 4
    """Sessions streaming at once; more are queued and told their position."""
    max_waiting: int = 16
    """Sessions that may wait for a slot; beyond that a start is refused."""
    max_blocks: int | None = None
    """AR blocks per session (None: the recipe's limit, 64 for ``demo``)."""
    max_prompt_chars: int = 500
    """Longest prompt accepted."""
    max_message_bytes: int = 65536
    """Largest client message accepted (a WebRTC offer is a few KiB)."""
    frame_queue_frames: int = 48
    """Frames buffered per session before the oldest is dropped."""
    fps: float = 16.0
    """Playback rate; generation runs at most about one block ahead of it."""
    jpeg_quality: int = 80
    """JPEG quality of the WebSocket transport."""
    webrtc: bool = True
    """Offer the WebRTC transport (needs aiortc)."""

    def __post_init__(self) -> None:
        for name in ("max_sessions", "max_prompt_chars", "max_message_bytes", "frame_queue_frames"):
            if getattr(self, name) < 1:
                raise ValueError(f"--{name.replace('_', '-')} must be >= 1, got {getattr(self, name)}")
        if self.max_waiting < 0:
            raise ValueError(f"--max-waiting must be >= 0, got {self.max_waiting}")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"--max-blocks must be >= 1, got {self.max_blocks}")
        if not 0 <= self.port <= 65535:
            raise ValueError(f"--port must be in 0..65535, got {self.port}")
        if not 0 < self.fps <= 240:
            raise ValueError(f"--fps must be in (0, 240], got {self.fps}")
        if not 1 <= self.jpeg_quality <= 100:
            raise ValueError(f"--jpeg-quality must be in 1..100, got {self.jpeg_quality}")
        if self.threads is not None and self.threads < 1:
            raise ValueError(f"--threads must be >= 1, got {self.threads}")
        if self.token is not None and not self.token:
            raise ValueError("--token must not be empty")
