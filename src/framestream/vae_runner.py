"""Run the Wan VAE on files: checked loading, streaming decode to frame sinks, streaming encode of videos.

The function layer under ``framestream decode`` / ``encode`` / ``encode-dataset``:

- :func:`check_checkpoint` / :func:`load_vae`: the checkpoint is located and its Wan
  version compared with the one asked for (headers only) before any weight is read;
- :func:`iter_decode`: latents -> ``(frames, start_index)`` chunks, untiled through
  :meth:`WanVAE.decode` with one causal cache, or through the exact tiler
  (:mod:`framestream.tiling.wan_exact`) when a :class:`TilingConfig` is given;
- :func:`decode_to_sink`: those chunks converted to uint8 on the device, copied to the
  host (:class:`HostFrameCopier`) and written to a sink (mp4, PNG folder, ``.npy``,
  ``.safetensors``) as they arrive;
- :func:`plan_encode` checks a video (size, frame count, resize/crop) from its headers;
  :func:`encode_video` reads it chunk by chunk into the encoder (``1 + 4k`` frames first,
  then ``4k``), so the pixels never sit in memory whole; :func:`encode_to_file` stores
  normalised latents with their metadata.

Every check that can fail on user input raises ``ValueError`` / ``FileNotFoundError`` /
``PermissionError`` with one plain sentence, before the model is built where possible.
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import resource
import struct
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm.auto import tqdm

from framestream.io.atomic import atomic_path, check_writable
from framestream.io.latents import LatentMetadata, save_latents
from framestream.io.transfer import HostFrameCopier
from framestream.io.video import (
    StreamingVideoWriter,
    center_crop_frames,
    iter_video_frames,
    probe_video,
    resize_frames,
    uint8_to_unit_range,
)
from framestream.tiling.planner import TilingConfig
from framestream.utils.dtypes import parse_dtype

__all__ = [
    "VAE_NAMES",
    "EncodePlan",
    "PeakMemory",
    "check_checkpoint",
    "check_latents",
    "decode_to_sink",
    "encode_to_file",
    "encode_video",
    "iter_decode",
    "iter_encode",
    "load_vae",
    "make_tiling",
    "open_sink",
    "output_format",
    "parse_float_dtype",
    "parse_size",
    "plan_encode",
    "resolve_device",
    "vae_version",
]

VAE_NAMES = {"wan2.1": "2.1", "wan2.2": "2.2"}
"""CLI name -> Wan VAE version."""
LATENT_CHANNELS = {"2.1": 16, "2.2": 48}
SPATIAL_FACTOR = {"2.1": 8, "2.2": 16}
TEMPORAL_FACTOR = 4
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
FORMATS = ("mp4", "png", "npy", "safetensors")


# ---------------------------------------------------------------------------- argument checks
def vae_version(name: str) -> str:
    """``"wan2.1"`` -> ``"2.1"`` (also accepts ``"2.1"``)."""
    key = str(name).strip().lower()
    if key in VAE_NAMES:
        return VAE_NAMES[key]
    if key in VAE_NAMES.values():
        return key
    raise ValueError(f"unknown VAE {name!r}; choose wan2.1 or wan2.2")


def vae_name(version: str) -> str:
    return f"wan{version}"


def parse_float_dtype(name: str, option: str) -> torch.dtype:
    """A floating dtype name (fp32/bf16/fp16 and aliases) or a clear ``ValueError`` naming ``option``."""
    dtype = parse_dtype(name, option)
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"{option}: {name!r} is not a floating dtype the VAE runs in; choose fp32, bf16 or fp16")
    return dtype


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``"832x480"`` -> ``(width, height)``."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{option} takes WIDTHxHEIGHT (e.g. 832x480), got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{option}: width and height must be positive, got {text!r}")
    return width, height


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``None``: ``cuda:{local_rank}`` when CUDA is available, else CPU. Unknown or unavailable devices raise."""
    if name is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type != "cpu" and device.type != "mps":
        raise ValueError(f"--device {name}: unsupported device type {device.type!r}")
    return device


def make_tiling(
    tile_size: int | None,
    tile_overlap: int | None,
    tile_batch_size: int | None,
    spatial_factor: int,
) -> TilingConfig | None:
    """A :class:`TilingConfig` from the CLI's pixel sizes, or ``None`` (untiled) without ``--tile-size``.

    The exact tiler derives each tile's halo from the model and ignores the overlap; it is
    still validated (multiple of the factor, below the tile) and defaults to a quarter of
    the tile. Sizes that are not multiples of ``spatial_factor`` raise ``ValueError``.
    """
    if tile_size is None:
        extra = [n for n, v in (("--tile-overlap", tile_overlap), ("--tile-batch-size", tile_batch_size)) if v is not None]
        if extra:
            raise ValueError(f"{' and '.join(extra)} need --tile-size (tiling is off without it)")
        return None
    if tile_size < spatial_factor or tile_size % spatial_factor:
        raise ValueError(
            f"--tile-size {tile_size} must be a positive multiple of the VAE's spatial factor {spatial_factor} "
            f"(e.g. {max(spatial_factor, tile_size // spatial_factor * spatial_factor)})"
        )
    if tile_overlap is None:
        tile_overlap = tile_size // 4 // spatial_factor * spatial_factor
    if tile_overlap < 0 or tile_overlap % spatial_factor:
        raise ValueError(f"--tile-overlap {tile_overlap} must be a non-negative multiple of the VAE's spatial factor {spatial_factor}")
    if tile_overlap >= tile_size:
        raise ValueError(f"--tile-overlap {tile_overlap} must be smaller than --tile-size {tile_size}")
    batch = 1 if tile_batch_size is None else tile_batch_size
    if batch < 1:
        raise ValueError(f"--tile-batch-size must be >= 1, got {batch}")
    config = TilingConfig(tile_size_px=tile_size, tile_overlap_px=tile_overlap, tile_batch_size=batch)
    config.in_latents(spatial_factor)  # the planner's own check
    _wan_exact()  # fail now, not after the model is loaded
    return config


def check_chunk(chunk: int) -> int:
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1 latent frame, got {chunk}")
    return chunk


# ---------------------------------------------------------------------------- checkpoint and model
def check_checkpoint(path: str | Path, version: str, *, need_encoder: bool = False, need_decoder: bool = False) -> Path:
    """Locate the checkpoint and check its Wan version and halves from headers only; returns the local path."""
    from framestream.models.wan.vae.checkpoint import detect_checkpoint, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        try:
            path = resolve_checkpoint(str(path))  # a Hugging Face repo id
        except RuntimeError as err:
            raise ValueError(str(err)) from None
    info = detect_checkpoint(path)
    if info.version != version:
        raise ValueError(
            f"--checkpoint {path} holds a Wan {info.version} VAE ({info.layout} layout) but --vae is "
            f"{vae_name(version)}; pass --vae {vae_name(info.version)} or a Wan {version} checkpoint"
        )
    if need_encoder and not info.has_encoder:
        raise ValueError(f"--checkpoint {path} has no encoder weights (a decoder-only checkpoint cannot encode)")
    if need_decoder and not info.has_decoder:
        raise ValueError(f"--checkpoint {path} has no decoder weights (an encoder-only checkpoint cannot decode)")
    return path


def load_vae(
    path: str | Path,
    version: str,
    *,
    weights_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    include_encoder: bool = False,
    include_decoder: bool = False,
) -> Any:
    """Check (see :func:`check_checkpoint`) and load the half (or halves) needed, eval mode, no grad."""
    from framestream.models.wan.vae.checkpoint import load_wan_vae

    path = check_checkpoint(path, version, need_encoder=include_encoder, need_decoder=include_decoder)
    return load_wan_vae(
        path,
        arch=None,
        dtype=weights_dtype,
        device=device,
        include_encoder=include_encoder,
        include_decoder=include_decoder,
    )


def check_latents(z: torch.Tensor, metadata: LatentMetadata, version: str, source: str | Path) -> None:
    """Latents fit the chosen VAE: channel count, batch of one, and the VAE the file names."""
    expected = LATENT_CHANNELS[version]
    if metadata.vae is not None and metadata.vae.lower() in VAE_NAMES and VAE_NAMES[metadata.vae.lower()] != version:
        raise ValueError(f"{source} holds {metadata.vae} latents but --vae is {vae_name(version)}; pass --vae {metadata.vae}")
    if z.shape[1] != expected:
        hint = next((vae_name(v) for v, c in LATENT_CHANNELS.items() if c == z.shape[1]), None)
        raise ValueError(
            f"{source} has {z.shape[1]}-channel latents but {vae_name(version)} expects {expected}"
            + (f"; pass --vae {hint}" if hint else "")
        )
    if z.shape[0] != 1:
        raise ValueError(f"{source} holds a batch of {z.shape[0]} latent videos; decode takes one (batch size 1)")
    if not z.is_floating_point():
        raise ValueError(f"{source}: latents must be floating point, got {z.dtype}")


def decoded_frames(latent_frames: int) -> int:
    return 1 + (latent_frames - 1) * TEMPORAL_FACTOR


# ---------------------------------------------------------------------------- decode
def _wan_exact() -> Any:
    """The exact Wan tiler module, or a clear ``NotImplementedError`` while it is not available."""
    import importlib
    import importlib.util

    if importlib.util.find_spec("framestream.tiling.wan_exact") is None:
        raise NotImplementedError(
            "tiled Wan VAE decode/encode needs framestream.tiling.wan_exact, which this install does not have; "
            "run without --tile-size"
        )
    return importlib.import_module("framestream.tiling.wan_exact")


def iter_decode(
    vae: Any,
    z: torch.Tensor,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode un-normalised latents ``(1, C, T, h, w)`` to ``(frames (1, 3, t, H, W), start_index)`` chunks.

    Untiled: ``chunk_size`` latent frames per :meth:`WanVAE.decode` call, one causal cache
    for the whole stream. Tiled: :func:`framestream.tiling.wan_exact.iter_decode_tiled`
    (``tile_order="frame"``, frames streamed per chunk), or the tile-major low-memory
    decode (``"tile"``: one tile batch's caches alive at a time, the whole video returned
    at the end as uint8). The chunks cover the ``1 + 4(T-1)`` frames in order, each once.
    """
    check_chunk(chunk_size)
    if tile_order not in ("frame", "tile"):
        raise ValueError(f"tile order must be 'frame' or 'tile', got {tile_order!r}")
    if tiling is not None and tile_order == "tile":
        yield _wan_exact().decode_tiled(vae, z, tiling, chunk_size=chunk_size, order="tile", out_dtype=torch.uint8), 0
        return
    if tiling is not None:
        yield from _wan_exact().iter_decode_tiled(vae, z, tiling, chunk_size=chunk_size)
        return
    from framestream.models.wan.vae.cache import WanCausalCache

    cache = WanCausalCache()
    position = 0
    for start in range(0, z.shape[2], chunk_size):
        frames = vae.decode(z[:, :, start : start + chunk_size], chunk_size=chunk_size, cache=cache)
        yield frames, position
        position += frames.shape[2]


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


def output_format(output: str | Path, fmt: str | None = None) -> str:
    """``mp4`` (any video container suffix), ``png`` (a folder), ``npy`` or ``safetensors``."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    text = str(output)
    path = Path(text)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
        return "png"
    if suffix in VIDEO_SUFFIXES:
        return "mp4"
    if suffix in (".npy", ".safetensors"):
        return suffix[1:]
    raise ValueError(
        f"cannot tell the output format from {text!r}: use a .mp4 (.mkv, .mov) video, a folder for PNG frames "
        "(e.g. frames/), .npy or .safetensors, or pass --format"
    )


def check_output(output: Path, fmt: str) -> None:
    """``PermissionError`` now if the output cannot be written."""
    if fmt == "png":
        if output.exists() and not output.is_dir():
            raise PermissionError(f"output path not writable: {output} exists and is not a directory")
        check_writable(output / "frame_000000.png")
    else:
        check_writable(output)


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


def decode_to_sink(
    vae: Any,
    z: torch.Tensor,
    sink: Any,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    progress: bool = True,
) -> int:
    """Decode and hand each chunk to ``sink`` as soon as it is on the host; returns the frame count.

    Frames become uint8 on the device (:func:`frames_to_uint8`) and are copied through a
    :class:`HostFrameCopier` (pinned, overlapped with the next chunk on CUDA). The sink is
    closed on success and aborted on any error.
    """
    total = decoded_frames(z.shape[2])
    copier = HostFrameCopier(z.device)
    written = 0
    try:
        with tqdm(total=total, unit="frame", desc="decode", disable=not progress, dynamic_ncols=True) as bar:

            def emit(chunks: list[np.ndarray]) -> None:
                nonlocal written
                for host in chunks:
                    sink.write(host[0])
                    written += host.shape[1]
                    bar.update(host.shape[1])

            expected = 0
            with torch.inference_mode():
                for frames, start in iter_decode(vae, z, chunk_size=chunk_size, tiling=tiling, tile_order=tile_order):
                    if start != expected:
                        raise RuntimeError(f"decoder yielded frames from {start}, expected {expected}")
                    expected += frames.shape[2]
                    emit(copier.push(frames))
                emit(copier.flush())
        if written != total:
            raise RuntimeError(f"decoded {written} frames, expected {total}")
    except BaseException:
        sink.abort()
        raise
    sink.close()
    return written


# ---------------------------------------------------------------------------- encode
@dataclass(frozen=True)
class EncodePlan:
    """A checked encode job: which frames of which video, at which size."""

    source: Path
    frames: int
    """Pixel frames to encode (``1 + 4k``), taken from the start of the video."""
    available: int
    source_size: tuple[int, int]
    """(height, width) of the video."""
    size: tuple[int, int]
    """(height, width) given to the VAE."""
    mode: str
    """``"none"``, ``"resize"`` or ``"crop"``."""
    fps: float

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // TEMPORAL_FACTOR


def _valid_counts(n: int) -> str:
    below = (n - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
    return f"{below}" if below >= 1 else "1"


def plan_encode(
    source: str | Path,
    version: str,
    *,
    resize: tuple[int, int] | None = None,
    crop: tuple[int, int] | None = None,
    frames: int | None = None,
    trim_frames: bool = False,
) -> EncodePlan:
    """Check a video for encoding from its headers; ``resize``/``crop`` are (width, height).

    The VAE needs sizes divisible by its spatial factor (8 for Wan 2.1, 16 for 2.2) and
    ``1 + 4k`` frames. Nothing is dropped silently: a size that does not fit needs
    ``--resize``/``--crop``, a frame count that does not fit needs ``--frames N`` (exactly
    the first ``N``) or ``--trim-frames`` (the largest ``1 + 4k`` the video has).
    """
    if resize is not None and crop is not None:
        raise ValueError("pass either --resize or --crop, not both")
    info = probe_video(source)
    factor = SPATIAL_FACTOR[version]
    src = (info.height, info.width)
    if info.frames < 1:
        raise ValueError(f"{source} contains no video frames")
    mode, target = "none", src
    if resize is not None:
        mode, target = "resize", (resize[1], resize[0])
    elif crop is not None:
        mode, target = "crop", (crop[1], crop[0])
        if target[0] > src[0] or target[1] > src[1]:
            raise ValueError(f"--crop {crop[0]}x{crop[1]} is larger than the video ({src[1]}x{src[0]})")
    if target[0] % factor or target[1] % factor:
        fit = (max(factor, src[1] // factor * factor), max(factor, src[0] // factor * factor))
        what = f"--{mode} {target[1]}x{target[0]}" if mode != "none" else f"{source} is {src[1]}x{src[0]}, which"
        raise ValueError(
            f"{what} is not divisible by {factor}, the spatial factor of {vae_name(version)}; "
            f"pass --resize WxH or --crop WxH with multiples of {factor} (e.g. --crop {fit[0]}x{fit[1]})"
        )
    available = info.frames
    if frames is not None:
        if frames < 1 or (frames - 1) % TEMPORAL_FACTOR:
            raise ValueError(
                f"--frames {frames}: the VAE takes 1 + 4k frames (e.g. {_valid_counts(max(frames, 1))} or "
                f"{(max(frames, 1) - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 5})"
            )
        if frames > available:
            raise ValueError(f"--frames {frames} but {source} has only {available} frames")
        count = frames
    elif (available - 1) % TEMPORAL_FACTOR == 0:
        count = available
    elif trim_frames:
        count = (available - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
    else:
        count = (available - 1) // TEMPORAL_FACTOR * TEMPORAL_FACTOR + 1
        raise ValueError(
            f"{source} has {available} frames; the VAE takes 1 + 4k frames. Pass --trim-frames to encode the "
            f"first {count}, or --frames N to choose"
        )
    fps = info.fps if info.fps > 0 else 16.0
    return EncodePlan(source=Path(source), frames=count, available=available, source_size=src, size=target, mode=mode, fps=fps)


def iter_pixel_chunks(plan: EncodePlan, chunk_size: int, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """``(1, 3, t, H, W)`` chunks in ``[-1, 1]``: ``1 + 4*chunk_size`` frames first, then ``4*chunk_size``."""
    step = TEMPORAL_FACTOR * chunk_size
    wanted = 1 + step
    height, width = plan.size

    def convert(raw: torch.Tensor) -> torch.Tensor:
        x = uint8_to_unit_range(raw.to(device), torch.float32)
        if plan.mode == "resize":
            x = resize_frames(x, height, width).clamp_(-1.0, 1.0)
        elif plan.mode == "crop":
            x = center_crop_frames(x, height, width)
        return x.to(dtype).unsqueeze(0).contiguous()

    pending = torch.empty(0, *plan.source_size, 3, dtype=torch.uint8)
    sent = 0
    for raw in iter_video_frames(plan.source, chunk_size=step):
        if tuple(raw.shape[1:3]) != plan.source_size:
            raise ValueError(f"{plan.source}: frame size changed mid-stream to {raw.shape[2]}x{raw.shape[1]}")
        pending = torch.cat([pending, raw[: plan.frames - sent - pending.shape[0]]])
        while pending.shape[0] >= wanted:
            yield convert(pending[:wanted])
            sent += wanted
            pending, wanted = pending[wanted:], step
        if sent + pending.shape[0] >= plan.frames:
            break
    if sent + pending.shape[0] < plan.frames:
        raise ValueError(f"{plan.source} ended after {sent + pending.shape[0]} frames; expected {plan.frames}")
    if pending.shape[0]:
        yield convert(pending)


def iter_encode(
    vae: Any,
    plan: EncodePlan,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
) -> Iterator[torch.Tensor]:
    """Posterior-mean latent chunks (un-normalised) of the planned frames, read and encoded chunk by chunk.

    Untiled: :meth:`WanVAE.encode` with one causal cache for the stream; tiled:
    :func:`framestream.tiling.wan_exact.encode_tiled` with one :class:`WanTiledEncodeState`;
    tiled with ``tile_order="tile"``: the whole clip is read, then encoded tile-major
    (one tile batch's caches alive at a time) and returned as one chunk.
    """
    check_chunk(chunk_size)
    if tile_order not in ("frame", "tile"):
        raise ValueError(f"tile order must be 'frame' or 'tile', got {tile_order!r}")
    device = torch.device(device)
    chunks = iter_pixel_chunks(plan, chunk_size, device, dtype)
    if tiling is not None and tile_order == "tile":
        video = torch.cat(list(chunks), dim=2)
        yield _wan_exact().encode_tiled(vae, video, tiling, chunk_size=chunk_size, order="tile")
        return
    if tiling is not None:
        wan_exact = _wan_exact()
        state = wan_exact.WanTiledEncodeState()
        for x in chunks:
            yield wan_exact.encode_tiled(vae, x, tiling, chunk_size=chunk_size, state=state)
        return
    from framestream.models.wan.vae.cache import WanCausalCache

    cache = WanCausalCache()
    for x in chunks:
        yield vae.encode(x, chunk_size=chunk_size, cache=cache)


def encode_video(
    vae: Any,
    plan: EncodePlan,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> torch.Tensor:
    """Un-normalised posterior mean ``(1, C, 1 + (frames-1)/4, H/s, W/s)`` in float32."""
    parts = []
    with torch.inference_mode(), tqdm(
        total=plan.frames, unit="frame", desc=f"encode {plan.source.name}", disable=not progress, dynamic_ncols=True
    ) as bar:
        chunks = iter_encode(vae, plan, chunk_size=chunk_size, tiling=tiling, tile_order=tile_order, device=device, dtype=dtype)
        for i, mu in enumerate(chunks):
            parts.append(mu.float())
            bar.update(mu.shape[2] * TEMPORAL_FACTOR - (3 if i == 0 else 0))
    z = torch.cat(parts, dim=2)
    if z.shape[2] != plan.latent_frames:
        raise RuntimeError(f"encoded {z.shape[2]} latent frames, expected {plan.latent_frames}")
    return z


def encode_to_file(
    vae: Any,
    plan: EncodePlan,
    output: str | Path,
    version: str,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    progress: bool = True,
) -> torch.Tensor:
    """Encode, normalise with the VAE's statistics and save atomically with metadata; returns the latents (CPU)."""
    mu = encode_video(
        vae, plan, chunk_size=chunk_size, tiling=tiling, tile_order=tile_order, device=device, dtype=dtype, progress=progress
    )
    z = vae.normalize_latents(mu).cpu()
    metadata = LatentMetadata(
        vae=vae_name(version),
        frames=plan.frames,
        fps=plan.fps,
        height=plan.size[0],
        width=plan.size[1],
        normalized=True,
        source=str(plan.source),
    )
    save_latents(output, z, metadata)
    return z


# ---------------------------------------------------------------------------- reporting
class PeakMemory:
    """Peak memory of a run: ``max_memory_allocated`` on CUDA, the process's peak RSS otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "rss"

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux

    def summary(self, **fields: Any) -> dict[str, Any]:
        return {
            **fields,
            "seconds": round(time.perf_counter() - self.start, 4),
            "peak_memory_bytes": self.peak_bytes(),
            "peak_memory_kind": self.kind,
            "device": str(self.device),
        }


def human_bytes(n: int) -> str:
    if n <= 0:
        return "0 B"
    unit = min(int(math.log(n, 1024)), 4)
    return f"{n / 1024**unit:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][unit]}"
