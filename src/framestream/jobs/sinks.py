"""Frame sinks: where decoded uint8 frames go as they arrive (mp4, PNG folder, ``.npy``, ``.safetensors``).

A sink has ``write(uint8 (t, H, W, 3))``, ``close() -> Path`` (publishes the output) and
``abort()`` (discards everything written so far). Every sink builds its output under a
hidden temporary name beside the target and publishes it with one rename on ``close``
(:mod:`framestream.io.atomic`): an error, a full disk or an interrupt leaves the target
as it was. Files are written sequentially (no memory maps, which die by SIGBUS on a full
disk); a full disk raises :class:`DiskFullError` naming the output.
"""

from __future__ import annotations

import contextlib
import json
import struct
from pathlib import Path
from typing import Any, NoReturn

import numpy as np

from framestream.io.atomic import as_disk_full, atomic_dir, atomic_path
from framestream.io.video import StreamingVideoWriter

__all__ = ["expected_output_bytes", "open_sink"]

NPY_HEADER_BYTES = 128
SAFETENSORS_HEADER_BYTES = 4096
"""Upper bounds of the headers, for the free-space check."""


def expected_output_bytes(fmt: str, frames: int, height: int, width: int) -> int | None:
    """Size of an uncompressed output (``npy``, ``safetensors``); ``None`` where compression decides it."""
    if fmt in ("npy", "safetensors"):
        header = NPY_HEADER_BYTES if fmt == "npy" else SAFETENSORS_HEADER_BYTES
        return frames * height * width * 3 + header
    return None


class _Staged:
    """The temporary of one output: entered on the first frame, published or discarded once."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self._stack: contextlib.ExitStack | None = None

    @property
    def open(self) -> bool:
        return self._stack is not None

    def enter(self, manager: Any) -> Any:
        """Enter the temporary's context manager (``atomic_path``/``atomic_dir``) and more after it."""
        if self._stack is None:
            self._stack = contextlib.ExitStack()
        return self._stack.enter_context(manager)

    def fail(self, err: BaseException) -> NoReturn:
        """Discard the temporary and raise ``err`` (a full disk as :class:`DiskFullError` naming the output)."""
        self.discard()
        converted = as_disk_full(err, self.path)
        if converted is err:
            raise err
        raise converted from err

    def publish(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            stack.close()

    def discard(self) -> None:
        stack, self._stack = self._stack, None
        if stack is not None:
            err = RuntimeError("output discarded")
            with contextlib.suppress(BaseException):
                stack.__exit__(RuntimeError, err, None)


class _VideoSink:
    """H.264 video through :class:`StreamingVideoWriter` (atomic itself)."""

    def __init__(self, path: Path, fps: float, crf: int, threads: int | None) -> None:
        self.path = path
        self.writer = StreamingVideoWriter(path, fps=fps, crf=crf, threads=threads)

    def write(self, frames: np.ndarray) -> None:
        self.writer.write(frames)

    def close(self) -> Path:
        return self.writer.close()

    def abort(self) -> None:
        self.writer.abort()


def _png_bytes(image: np.ndarray) -> bytes:
    import av

    codec = av.CodecContext.create("png", "w")
    codec.width, codec.height, codec.pix_fmt = image.shape[1], image.shape[0], "rgb24"
    packets = codec.encode(av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format="rgb24"))
    packets += codec.encode(None)
    return b"".join(bytes(p) for p in packets)


class _PngSink:
    """One PNG per frame (``frame_000000.png`` ...) in a temporary folder, published whole on close.

    An earlier output in the folder is replaced as a whole, so no stale frame of a longer
    earlier decode survives.
    """

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0
        self._staged = _Staged(path)
        self._dir: Path | None = None

    def write(self, frames: np.ndarray) -> None:
        try:
            if self._dir is None:
                self._dir = self._staged.enter(atomic_dir(self.path))
            for image in frames:
                (self._dir / f"frame_{self.count:06d}.png").write_bytes(_png_bytes(image))
                self.count += 1
        except BaseException as err:
            self._staged.fail(err)

    def close(self) -> Path:
        if self.count == 0:
            self.abort()
            raise ValueError(f"no frames were written; {self.path} was not created")
        try:
            self._staged.publish()
        except BaseException as err:
            self._staged.fail(err)
        return self.path

    def abort(self) -> None:
        self._staged.discard()


class _ArraySink:
    """``(T, H, W, 3)`` uint8 into ``.npy`` or ``.safetensors``: header first, then frames as they come."""

    def __init__(self, path: Path, kind: str, total_frames: int, metadata: dict[str, str]) -> None:
        self.path, self.kind, self.total, self.metadata = path, kind, total_frames, metadata
        self.count = 0
        self._staged = _Staged(path)
        self._file: Any = None

    def _header(self, shape: tuple[int, ...]) -> bytes:
        if self.kind == "npy":
            import io

            buffer = io.BytesIO()
            np.lib.format.write_array_header_1_0(buffer, {"descr": "|u1", "fortran_order": False, "shape": shape})
            return buffer.getvalue()
        header = {
            "frames": {"dtype": "U8", "shape": list(shape), "data_offsets": [0, int(np.prod(shape))]},
            "__metadata__": self.metadata,
        }
        blob = json.dumps(header, separators=(",", ":")).encode()
        blob += b" " * (-len(blob) % 8)
        return struct.pack("<Q", len(blob)) + blob

    def write(self, frames: np.ndarray) -> None:
        if self.count + len(frames) > self.total:
            raise RuntimeError(f"{self.path}: more than the {self.total} expected frames")
        try:
            if self._file is None:
                tmp = self._staged.enter(atomic_path(self.path))
                self._file = self._staged.enter(open(tmp, "wb"))
                self._file.write(self._header((self.total, frames.shape[1], frames.shape[2], 3)))
            self._file.write(np.ascontiguousarray(frames, dtype=np.uint8).tobytes())
            self.count += len(frames)
        except BaseException as err:
            self._staged.fail(err)

    def close(self) -> Path:
        if self._file is None:
            raise ValueError(f"no frames were written; {self.path} was not created")
        if self.count != self.total:
            self.abort()
            raise RuntimeError(f"{self.path}: got {self.count} frames, expected {self.total}")
        try:
            self._file.flush()
            self._staged.publish()
        except BaseException as err:
            self._staged.fail(err)
        return self.path

    def abort(self) -> None:
        self._file = None
        self._staged.discard()


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
