"""Frame sinks: where decoded uint8 frames go as they arrive (mp4, PNG folder, ``.npy``, ``.safetensors``).

A sink has ``write(uint8 (t, H, W, 3))``, ``close() -> Path`` (publishes the output) and
``abort()`` (discards everything written so far).
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any

import numpy as np

from framestream.io.atomic import atomic_path
from framestream.io.video import StreamingVideoWriter

__all__ = ["open_sink"]


class _VideoSink:
    def __init__(self, path: Path, fps: float, crf: int, threads: int | None) -> None:
        self.path = path
        self.writer = StreamingVideoWriter(path, fps=fps, crf=crf, threads=threads)

    def write(self, frames: np.ndarray) -> None:
        self.writer.write(frames)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


class _PngSink:
    """One PNG per frame (``frame_000000.png`` ...), each written atomically."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def write(self, frames: np.ndarray) -> None:
        import av

        self.path.mkdir(parents=True, exist_ok=True)
        for image in frames:
            codec = av.CodecContext.create("png", "w")
            codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
            packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
            packets += codec.encode(None)
            with atomic_path(self.path / f"frame_{self.count:06d}.png") as tmp:
                tmp.write_bytes(b"".join(bytes(p) for p in packets))
            self.count += 1

    def close(self) -> Path:
        if self.count == 0:
            raise ValueError(f"no frames were written to {self.path}")
        return self.path

    def abort(self) -> None:
        pass  # finished frames stay; none is ever half-written


class _ArraySink:
    """``(T, H, W, 3)`` uint8 into ``.npy`` (memory-mapped) or ``.safetensors`` (streamed), atomically."""

    def __init__(self, path: Path, kind: str, total_frames: int, metadata: dict[str, str]) -> None:
        self.path, self.kind, self.total, self.metadata = path, kind, total_frames, metadata
        self.count = 0
        self._stack: contextlib.ExitStack | None = None
        self._array: np.ndarray | None = None
        self._file: Any = None

    def _open(self, height: int, width: int) -> None:
        stack = contextlib.ExitStack()
        tmp = stack.enter_context(atomic_path(self.path))
        shape = (self.total, height, width, 3)
        try:
            if self.kind == "npy":
                self._array = np.lib.format.open_memmap(tmp, mode="w+", dtype=np.uint8, shape=shape)
            else:
                header = {
                    "frames": {"dtype": "U8", "shape": list(shape), "data_offsets": [0, int(np.prod(shape))]},
                    "__metadata__": self.metadata,
                }
                blob = json.dumps(header, separators=(",", ":")).encode()
                blob += b" " * (-len(blob) % 8)
                self._file = stack.enter_context(open(tmp, "wb"))
                self._file.write(struct.pack("<Q", len(blob)) + blob)
        except BaseException as err:
            stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack = stack

    def write(self, frames: np.ndarray) -> None:
        if self._stack is None:
            self._open(frames.shape[1], frames.shape[2])
        if self.count + len(frames) > self.total:
            raise RuntimeError(f"{self.path}: more than the {self.total} expected frames")
        if self._array is not None:
            self._array[self.count : self.count + len(frames)] = frames
        else:
            self._file.write(np.ascontiguousarray(frames).tobytes())
        self.count += len(frames)

    def close(self) -> Path:
        if self._stack is None:
            raise ValueError(f"no frames were written; {self.path} was not created")
        if self.count != self.total:
            self.abort()
            raise RuntimeError(f"{self.path}: got {self.count} frames, expected {self.total}")
        if self._array is not None:
            self._array.flush()
            del self._array
            self._array = None
        stack, self._stack = self._stack, None
        stack.close()
        return self.path

    def abort(self) -> None:
        stack, self._stack = self._stack, None
        self._array = None
        if stack is not None:
            err = RuntimeError("aborted")
            with contextlib.suppress(BaseException):
                stack.__exit__(RuntimeError, err, None)


def open_sink(
    output: Path,
    fmt: str,
    *,
    total_frames: int,
    fps: float,
    crf: int = 18,
    threads: int | None = None,
    metadata: dict[str, Any] | None = None,
) -> Any:
    """A frame sink with ``write(uint8 (t, H, W, 3))``, ``close() -> Path`` and ``abort()``."""
    if fmt == "mp4":
        return _VideoSink(output, fps, crf, threads)
    if fmt == "png":
        return _PngSink(output)
    meta = {k: str(v) for k, v in (metadata or {}).items() if v is not None}
    return _ArraySink(output, fmt, total_frames, meta)
