"""Video files: streaming mp4 writing (frames go to disk as they arrive) and reading.

- :func:`to_uint8` converts float frames in ``[-1, 1]`` (or any ``value_range``) to
  uint8 with rounding and clamping; uint8 input passes through.
- :class:`StreamingVideoWriter` encodes frames with PyAV (H.264 / libx264, yuv420p)
  as each :meth:`~StreamingVideoWriter.write` call arrives, so memory does not grow
  with the video. It writes to a hidden temporary file beside the output and renames
  it into place on a clean close; if closed by an exception the temporary file is
  removed and an existing output is left untouched.
- :func:`read_video` / :func:`iter_video_frames` read a video back as uint8
  ``(T, H, W, 3)`` RGB tensors.

Frame layouts accepted by the writer: uint8 or float ``(T, H, W, 3)`` / ``(H, W, 3)``
(numpy or torch), and float torch ``(1, 3, T, H, W)`` / ``(3, T, H, W)`` decoder
output.
"""

from __future__ import annotations

import contextlib
import types
from dataclasses import dataclass
from collections.abc import Iterator
from fractions import Fraction
from pathlib import Path
from typing import Any, NoReturn

import numpy as np
import torch

from framestream.io.atomic import as_disk_full, atomic_path
from framestream.io.transfer import frames_to_uint8

__all__ = [
    "StreamingVideoWriter",
    "VideoInfo",
    "center_crop_frames",
    "iter_video_frames",
    "probe_video",
    "read_video",
    "resize_frames",
    "to_uint8",
    "uint8_to_unit_range",
    "video_fps",
]

ArrayLike = torch.Tensor | np.ndarray


def to_uint8(frames: ArrayLike, value_range: tuple[float, float] = (-1.0, 1.0)) -> ArrayLike:
    """Map float frames from ``value_range`` to uint8 ``[0, 255]``, rounding to nearest and clamping.

    Works on torch tensors (on their device, so only uint8 crosses to the host) and numpy
    arrays, any shape; returns the same kind. uint8 input is returned unchanged. NaN maps
    to the bottom of the range. Rounding rather than truncating matters: truncation biases
    every pixel down by half a level on average.

    The arithmetic is :func:`framestream.io.transfer.frames_to_uint8`'s (one implementation):
    other value ranges are first mapped affinely onto ``[-1, 1]``.
    """
    low, high = (float(v) for v in value_range)
    if not high > low:
        raise ValueError(f"value_range must be (low, high) with high > low, got {value_range}")
    if isinstance(frames, np.ndarray):
        if frames.dtype == np.uint8:
            return frames
        if not (np.issubdtype(frames.dtype, np.floating) or np.issubdtype(frames.dtype, np.integer)):
            raise TypeError(f"to_uint8: unsupported array dtype {frames.dtype}")
        return _to_uint8_tensor(torch.from_numpy(np.asarray(frames, dtype=np.float32)), low, high).numpy()
    if isinstance(frames, torch.Tensor):
        if frames.dtype == torch.uint8:
            return frames
        if not (frames.is_floating_point() or frames.dtype in (torch.int16, torch.int32, torch.int64)):
            raise TypeError(f"to_uint8: unsupported tensor dtype {frames.dtype}")
        return _to_uint8_tensor(frames, low, high)
    raise TypeError(f"to_uint8: expected a torch.Tensor or numpy.ndarray, got {type(frames).__name__}")


def _to_uint8_tensor(frames: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """Any-shape tensor -> uint8 of the same shape through :func:`frames_to_uint8`."""
    x = torch.nan_to_num(frames.to(torch.float32), nan=low)
    if (low, high) != (-1.0, 1.0):
        x = (x - low).mul_(2.0 / (high - low)).sub_(1.0)
    # frames_to_uint8 is elementwise but wants a (3, T, H, W) layout: view the values as one.
    flat = x.reshape(-1)
    n = flat.numel()
    pad = (-n) % 3
    if pad:
        flat = torch.nn.functional.pad(flat, (0, pad))
    out = frames_to_uint8(flat.view(3, -1, 1, 1), channels_last=False).reshape(-1)
    return out[:n].reshape(frames.shape)


def _as_thwc_uint8(frames: Any, value_range: tuple[float, float]) -> np.ndarray:
    """Any accepted layout -> contiguous uint8 numpy ``(T, H, W, 3)``."""
    if not isinstance(frames, (torch.Tensor, np.ndarray)):
        raise TypeError(f"write() takes a torch.Tensor or numpy.ndarray, got {type(frames).__name__}")
    shape = tuple(frames.shape)
    if len(shape) == 5:
        if shape[0] != 1 or shape[1] != 3:
            raise ValueError(f"5-D frames must be (1, 3, T, H, W), got shape {shape}")
        frames = frames[0]
        shape = shape[1:]
    if len(shape) == 4 and shape[0] == 3 and shape[-1] != 3:
        frames = frames.permute(1, 2, 3, 0) if isinstance(frames, torch.Tensor) else frames.transpose(1, 2, 3, 0)
    elif len(shape) == 3 and shape[-1] == 3:
        frames = frames[None]
    elif not (len(shape) == 4 and shape[-1] == 3):
        raise ValueError(f"frames must be (T, H, W, 3), (H, W, 3), (3, T, H, W) or (1, 3, T, H, W); got shape {shape}")
    frames = to_uint8(frames, value_range)
    if isinstance(frames, torch.Tensor):
        frames = frames.detach().cpu().numpy()
    return np.ascontiguousarray(frames)


class StreamingVideoWriter:
    """Context manager that encodes frames to an H.264 video as they are written.

    Example::

        with StreamingVideoWriter("out.mp4", fps=16) as writer:
            for chunk in pipeline.rollout(8):
                writer.write(chunk)          # (1, 3, T, H, W) floats in [-1, 1]

    Args:
        path: Output file; its suffix picks the container (``.mp4``, ``.mkv``, ``.mov``...).
            Parent directories are created. An existing file is replaced on close.
        fps: Frame rate (int, float or Fraction; 29.97 is stored as 2997/100).
        crf: libx264 constant rate factor, 0 (lossless) .. 51; 18 is visually near-lossless.
        preset: libx264 speed/size preset (``ultrafast`` .. ``veryslow``).
        codec: Encoder name; H.264 (libx264) by default.
        pix_fmt: Output pixel format; yuv420p (the widely playable one) needs even sizes.
        value_range: Range of float input frames (see :func:`to_uint8`).
        threads: Encoder threads; None lets the codec decide (all cores for libx264). Use 1
            when the frames come from a CPU model sharing the same cores.

    The frame size is fixed by the first :meth:`write`; odd widths/heights with a
    4:2:0 pixel format are rejected there with ``ValueError`` before anything is
    encoded. Closing without any frame written raises ``ValueError`` and leaves no file.
    """

    def __init__(
        self,
        path: str | Path,
        fps: float | Fraction = 16,
        *,
        crf: int = 18,
        preset: str = "medium",
        codec: str = "libx264",
        pix_fmt: str = "yuv420p",
        value_range: tuple[float, float] = (-1.0, 1.0),
        threads: int | None = None,
    ) -> None:
        self.path = Path(path)
        if not self.path.suffix:
            raise ValueError(f"video path needs a container suffix such as .mp4, got {str(path)!r}")
        self.fps = Fraction(fps).limit_denominator(100_000) if not isinstance(fps, Fraction) else fps
        if self.fps <= 0:
            raise ValueError(f"fps must be > 0, got {fps}")
        if isinstance(crf, bool) or not isinstance(crf, int) or not 0 <= crf <= 51:
            raise ValueError(f"crf must be an integer in [0, 51], got {crf!r}")
        self.crf = crf
        self.preset = preset
        self.codec = codec
        self.pix_fmt = pix_fmt
        self.value_range = value_range
        if threads is not None and (isinstance(threads, bool) or not isinstance(threads, int) or threads < 1):
            raise ValueError(f"threads must be a positive integer or None, got {threads!r}")
        self.threads = threads
        self.num_frames = 0
        """Frames written so far."""
        self.size: tuple[int, int] | None = None
        """``(height, width)``, fixed by the first write."""
        self._stack: contextlib.ExitStack | None = None
        self._container: Any = None
        self._stream: Any = None
        self._file: Any = None
        self._closed = False

    # ------------------------------------------------------------------ lifecycle
    def __enter__(self) -> StreamingVideoWriter:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: types.TracebackType | None,
    ) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort(exc_type, exc, tb)

    def _open(self, height: int, width: int) -> None:
        import av

        if self.pix_fmt in ("yuv420p", "yuvj420p", "nv12") and (height % 2 or width % 2):
            raise ValueError(
                f"{self.pix_fmt} video needs an even width and height, got {width}x{height}; "
                "crop or pad the frames to even sizes"
            )
        container_format = self._container_format()
        stack = contextlib.ExitStack()
        try:
            tmp_path = stack.enter_context(atomic_path(self.path))
            # Our own file object lets write() flush encoded packets to the OS as they are muxed.
            self._file = stack.enter_context(open(tmp_path, "wb"))
            container = av.open(self._file, mode="w", format=container_format)
            stack.callback(container.close)
            stream = container.add_stream(self.codec, rate=self.fps)
            stream.width, stream.height = width, height
            stream.pix_fmt = self.pix_fmt
            if self.threads is not None:
                stream.codec_context.thread_count = self.threads
            if self.codec in ("libx264", "libx265"):
                stream.options = {"crf": str(self.crf), "preset": self.preset}
            stream.codec_context.open()  # now, so bad codec options fail before any frame is encoded
        except BaseException as err:
            # Unwind with the error so atomic_path deletes the temporary file instead of publishing it.
            stack.__exit__(type(err), err, err.__traceback__)
            raise
        self._stack, self._container, self._stream = stack, container, stream
        self.size = (height, width)

    def _container_format(self) -> str:
        import av

        suffix = self.path.suffix.lower()
        known = {".mp4": "mp4", ".m4v": "mp4", ".mov": "mov", ".mkv": "matroska", ".webm": "webm", ".avi": "avi"}
        if suffix in known:
            return known[suffix]
        name = suffix.lstrip(".")
        if name in av.formats_available:
            return name
        raise ValueError(f"unknown video container suffix {suffix!r}; use .mp4, .mkv or .mov")

    def write(self, frames: ArrayLike) -> None:
        """Encode ``frames`` now (see the module doc for accepted layouts) and flush to disk.

        Invalid frames raise before anything is encoded and leave the writer usable; an
        encoder or disk error discards the partial file and closes the writer.
        """
        import av

        if self._closed:
            raise RuntimeError(f"StreamingVideoWriter for {self.path} is closed")
        array = _as_thwc_uint8(frames, self.value_range)
        if array.shape[0] == 0:
            return
        height, width = array.shape[1], array.shape[2]
        if self._container is None:
            self._open(height, width)
        elif (height, width) != self.size:
            raise ValueError(f"frame size changed from {self.size[1]}x{self.size[0]} to {width}x{height}")
        try:
            for image in array:
                frame = av.VideoFrame.from_ndarray(image, format="rgb24")
                frame.pts = self.num_frames
                frame.time_base = 1 / self.fps
                for packet in self._stream.encode(frame):
                    self._container.mux(packet)
                self.num_frames += 1
            self._file.flush()
        except BaseException as err:
            # The encoder or the disk failed: the file cannot be completed, so discard it now.
            self.abort(type(err), err, err.__traceback__)
            _raise_named(err, self.path)

    def close(self) -> Path:
        """Flush the encoder, finish the file and move it into place; returns the output path."""
        if self._closed:
            return self.path
        self._closed = True
        if self._container is None:
            raise ValueError(f"no frames were written; {self.path} was not created")
        stack, self._stack = self._stack, None
        try:
            for packet in self._stream.encode(None):
                self._container.mux(packet)
        except BaseException as err:
            with contextlib.suppress(BaseException):
                stack.__exit__(type(err), err, err.__traceback__)
            _raise_named(err, self.path)
        try:
            stack.close()  # closes the container and file, then renames the temporary file into place
        except BaseException as err:
            _raise_named(err, self.path)
        return self.path

    def abort(self, exc_type: Any = None, exc: Any = None, tb: Any = None) -> None:
        """Discard the output: close everything and delete the temporary file."""
        if self._closed:
            return
        self._closed = True
        stack, self._stack = self._stack, None
        if stack is None:
            return
        if exc_type is None:
            exc = RuntimeError("video writing aborted")
            exc_type, tb = RuntimeError, None
        with contextlib.suppress(BaseException):
            stack.__exit__(exc_type, exc, tb)


def _raise_named(err: BaseException, path: Path) -> NoReturn:
    """Re-raise ``err``; a full disk as :class:`DiskFullError` naming the output."""
    converted = as_disk_full(err, path)
    if converted is err:
        raise err
    raise converted from err


def iter_video_frames(path: str | Path, chunk_size: int = 16) -> Iterator[torch.Tensor]:
    """Yield a video's frames as uint8 ``(t, H, W, 3)`` RGB tensors of up to ``chunk_size`` frames."""
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    if chunk_size < 1:
        raise ValueError(f"chunk_size must be >= 1, got {chunk_size}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            buffer: list[np.ndarray] = []
            for frame in container.decode(video=0):
                buffer.append(frame.to_ndarray(format="rgb24"))
                if len(buffer) == chunk_size:
                    yield torch.from_numpy(np.stack(buffer))
                    buffer = []
            if buffer:
                yield torch.from_numpy(np.stack(buffer))
    except av.error.FFmpegError as err:  # a damaged or cut file: say which
        raise ValueError(f"cannot read video {path}: {err}") from None


def video_fps(path: str | Path) -> float:
    """Frame rate of the first video stream of ``path``."""
    import av

    with av.open(str(path)) as container:
        if not container.streams.video:
            raise ValueError(f"{path} has no video stream")
        stream = container.streams.video[0]
        rate = stream.average_rate or stream.base_rate or stream.guessed_rate
        if not rate:
            raise ValueError(f"{path}: the video stream has no frame rate")
        return float(rate)


def read_video(path: str | Path) -> tuple[torch.Tensor, float]:
    """Read a whole video as ``(uint8 tensor (T, H, W, 3) RGB, fps)``."""
    chunks = list(iter_video_frames(path, chunk_size=64))
    if not chunks:
        raise ValueError(f"{path} contains no video frames")
    return torch.cat(chunks), video_fps(path)


# ---------------------------------------------------------------------------- reader helpers
@dataclass(frozen=True)
class VideoInfo:
    """What :func:`probe_video` learns from a video's headers (and packet count)."""

    frames: int
    height: int
    width: int
    fps: float


def probe_video(path: str | Path) -> VideoInfo:
    """Frame count, size and fps of the first video stream, without decoding pixels.

    The count is the container's when it states one, else the number of video packets.
    Raises ``FileNotFoundError`` for a missing file and ``ValueError`` for a file PyAV
    cannot read or that has no video stream.
    """
    import av

    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"video file not found: {path}")
    try:
        with av.open(str(path)) as container:
            if not container.streams.video:
                raise ValueError(f"{path} has no video stream")
            stream = container.streams.video[0]
            height, width = stream.codec_context.height, stream.codec_context.width
            rate = stream.average_rate or stream.base_rate or stream.guessed_rate
            frames = int(stream.frames or 0)
            if frames <= 0:
                frames = sum(1 for packet in container.demux(stream) if packet.size)
    except av.error.FFmpegError as err:
        raise ValueError(f"cannot read video {path}: {err}") from None
    if not height or not width:
        raise ValueError(f"cannot read video {path}: the video stream has no frame size")
    return VideoInfo(frames=frames, height=int(height), width=int(width), fps=float(rate) if rate else 0.0)


def uint8_to_unit_range(frames: torch.Tensor, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    """uint8 ``(T, H, W, 3)`` RGB -> float ``(3, T, H, W)`` in ``[-1, 1]`` (the VAE's input range)."""
    if frames.dtype != torch.uint8 or frames.dim() != 4 or frames.shape[-1] != 3:
        raise ValueError(f"expected uint8 (T, H, W, 3) frames, got {frames.dtype} {tuple(frames.shape)}")
    return frames.permute(3, 0, 1, 2).to(dtype).div_(127.5).sub_(1.0)


def resize_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """Resize float frames ``(..., H, W)`` to ``height x width`` (bilinear, antialiased when shrinking)."""
    if frames.shape[-2:] == (height, width):
        return frames
    lead = frames.shape[:-2]
    flat = frames.reshape(-1, 1, *frames.shape[-2:]).float()
    out = torch.nn.functional.interpolate(flat, size=(height, width), mode="bilinear", align_corners=False, antialias=True)
    return out.reshape(*lead, height, width).to(frames.dtype)


def center_crop_frames(frames: torch.Tensor, height: int, width: int) -> torch.Tensor:
    """The centred ``height x width`` window of frames ``(..., H, W)``."""
    h, w = frames.shape[-2:]
    if height > h or width > w:
        raise ValueError(f"cannot crop {w}x{h} frames to {width}x{height}: the crop is larger than the frame")
    top, left = (h - height) // 2, (w - width) // 2
    return frames[..., top : top + height, left : left + width]
