"""Encode jobs: one video -> one latent file, read and encoded chunk by chunk.

:func:`encode_one` is the unit every engine runs (the CLI, ``encode-dataset``, torchrun
shards, a Ray actor): an :class:`EncodeItem` (which video to which file), a VAE already
loaded, and the shared :class:`EncodeOptions`; the latent file is published atomically
inside it, so every engine writes the same bytes.

- :func:`plan_encode` checks a video (size, frame count, resize/crop) from its headers;
- :func:`encode_video` reads it chunk by chunk into the encoder (``1 + 4k`` frames first,
  then ``4k``), so the pixels never sit in memory whole;
- :func:`encode_to_file` stores normalised latents with their metadata.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch
from tqdm.auto import tqdm

from framestream.io.latents import LatentMetadata, save_latents
from framestream.io.video import center_crop_frames, iter_video_frames, probe_video, resize_frames, uint8_to_unit_range
from framestream.io.atomic import check_free_space, check_new_output, check_writable
from framestream.jobs.checks import (
    LATENT_CHANNELS,
    SPATIAL_FACTOR,
    TEMPORAL_FACTOR,
    TEMPORAL_FACTORS,
    check_chunk,
    vae_name,
    wan_exact_module,
)
from framestream.jobs.options import VaeJobOptions
from framestream.tiling.planner import TilingConfig

__all__ = [
    "EncodeItem",
    "EncodeOptions",
    "EncodePlan",
    "EncodeResult",
    "check_encode_output",
    "encode_one",
    "encode_to_file",
    "encode_video",
    "iter_encode",
    "iter_pixel_chunks",
    "iter_raw_chunks",
    "model_pixels",
    "plan_encode",
]


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
    temporal_factor: int = TEMPORAL_FACTOR
    """Frames per latent frame of the VAE (4 for Wan, 8 for LTX-2)."""

    @property
    def latent_frames(self) -> int:
        return 1 + (self.frames - 1) // self.temporal_factor


def _valid_counts(n: int, r: int = TEMPORAL_FACTOR) -> str:
    below = (n - 1) // r * r + 1
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
    factor, r = SPATIAL_FACTOR[version], TEMPORAL_FACTORS[version]
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
        if frames < 1 or (frames - 1) % r:
            raise ValueError(
                f"--frames {frames}: the VAE takes 1 + {r}k frames (e.g. {_valid_counts(max(frames, 1), r)} or "
                f"{(max(frames, 1) - 1) // r * r + r + 1})"
            )
        if frames > available:
            raise ValueError(f"--frames {frames} but {source} has only {available} frames")
        count = frames
    elif (available - 1) % r == 0:
        count = available
    elif trim_frames:
        count = (available - 1) // r * r + 1
    else:
        count = (available - 1) // r * r + 1
        raise ValueError(
            f"{source} has {available} frames; the VAE takes 1 + {r}k frames. Pass --trim-frames to encode the "
            f"first {count}, or --frames N to choose"
        )
    fps = info.fps if info.fps > 0 else 16.0
    return EncodePlan(
        source=Path(source), frames=count, available=available, source_size=src, size=target, mode=mode, fps=fps, temporal_factor=r
    )


def iter_raw_chunks(plan: EncodePlan, chunk_size: int) -> Iterator[torch.Tensor]:
    """The planned frames as uint8 ``(t, H, W, 3)`` chunks of the source size: ``1 + r*chunk_size`` frames first, then ``r*chunk_size``."""
    step = plan.temporal_factor * chunk_size
    wanted = 1 + step
    pending = torch.empty(0, *plan.source_size, 3, dtype=torch.uint8)
    sent = 0
    for raw in iter_video_frames(plan.source, chunk_size=step):
        if tuple(raw.shape[1:3]) != plan.source_size:
            raise ValueError(f"{plan.source}: frame size changed mid-stream to {raw.shape[2]}x{raw.shape[1]}")
        pending = torch.cat([pending, raw[: plan.frames - sent - pending.shape[0]]])
        while pending.shape[0] >= wanted:
            yield pending[:wanted]
            sent += wanted
            pending, wanted = pending[wanted:], step
        if sent + pending.shape[0] >= plan.frames:
            break
    if sent + pending.shape[0] < plan.frames:
        raise ValueError(f"{plan.source} ended after {sent + pending.shape[0]} frames; expected {plan.frames}")
    if pending.shape[0]:
        yield pending


def model_pixels(raw: torch.Tensor, plan: EncodePlan, device: torch.device, dtype: torch.dtype) -> torch.Tensor:
    """One uint8 ``(t, H, W, 3)`` chunk -> the encoder's ``(1, 3, t, h, w)`` input in ``[-1, 1]``, resized/cropped on ``device``."""
    height, width = plan.size
    x = uint8_to_unit_range(raw.to(device), torch.float32)
    if plan.mode == "resize":
        x = resize_frames(x, height, width).clamp_(-1.0, 1.0)
    elif plan.mode == "crop":
        x = center_crop_frames(x, height, width)
    return x.to(dtype).unsqueeze(0).contiguous()


def iter_pixel_chunks(plan: EncodePlan, chunk_size: int, device: torch.device, dtype: torch.dtype) -> Iterator[torch.Tensor]:
    """``(1, 3, t, H, W)`` chunks in ``[-1, 1]``: ``1 + r*chunk_size`` frames first, then ``r*chunk_size``."""
    for raw in iter_raw_chunks(plan, chunk_size):
        yield model_pixels(raw, plan, device, dtype)


def iter_encode(
    vae: Any,
    plan: EncodePlan,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    device: torch.device | str = "cpu",
    dtype: torch.dtype = torch.float32,
    pixels: Iterable[torch.Tensor] | None = None,
    safe_tiles: bool = True,
) -> Iterator[torch.Tensor]:
    """Posterior-mean latent chunks (un-normalised) of the planned frames, read and encoded chunk by chunk.

    Untiled: :meth:`WanVAE.encode` with one causal cache for the stream; tiled:
    :func:`framestream.tiling.wan_exact.encode_tiled` with one :class:`WanTiledEncodeState`;
    tiled with ``tile_order="tile"``: the whole clip is read, then encoded tile-major
    (one tile batch's caches alive at a time) and returned as one chunk. With ``safe_tiles``
    Wan tiles are first checked by :func:`framestream.jobs.tiling.safe_encode_tiling`
    (enlarged, or dropped, with a warning, when they would cost more time and memory than untiled).
    """
    check_chunk(chunk_size)
    if tile_order not in ("frame", "tile"):
        raise ValueError(f"tile order must be 'frame' or 'tile', got {tile_order!r}")
    if tiling is not None and safe_tiles and not _is_ltx2(vae):
        import warnings

        from framestream.jobs.tiling import safe_encode_tiling

        tiling, message = safe_encode_tiling(vae, plan.size, plan.frames, tiling, dtype=dtype, chunk_size=chunk_size, order=tile_order)
        if message:
            warnings.warn(message, stacklevel=2)
    device = torch.device(device)
    # An engine that reads the video elsewhere (a Ray reader task) passes the chunks it made.
    chunks = iter_pixel_chunks(plan, chunk_size, device, dtype) if pixels is None else iter(pixels)
    if _is_ltx2(vae):  # every layer is local: the whole clip per call, tiled in space if asked
        from framestream.tiling.dispatch import encode_tiled

        video = torch.cat(list(chunks), dim=2)
        yield vae.encode(video) if tiling is None else encode_tiled(vae, video, tiling)
        return
    if tiling is not None and tile_order == "tile":
        video = torch.cat(list(chunks), dim=2)
        yield wan_exact_module().encode_tiled(vae, video, tiling, chunk_size=chunk_size, order="tile")
        return
    if tiling is not None:
        wan_exact = wan_exact_module()
        state = wan_exact.WanTiledEncodeState()
        for x in chunks:
            yield wan_exact.encode_tiled(vae, x, tiling, chunk_size=chunk_size, state=state)
        return
    from framestream.models.wan.vae.cache import WanCausalCache

    cache = WanCausalCache()
    for x in chunks:
        yield vae.encode(x, chunk_size=chunk_size, cache=cache)


def _is_ltx2(vae: Any) -> bool:
    from framestream.models.ltx2.vae import LTX2VAE

    return isinstance(vae, LTX2VAE)


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
    pixels: Iterable[torch.Tensor] | None = None,
    chunks: Iterable[torch.Tensor] | None = None,
    safe_tiles: bool = True,
) -> torch.Tensor:
    """Un-normalised posterior mean ``(1, C, 1 + (frames-1)/4, H/s, W/s)`` in float32.

    ``chunks``: posterior-mean chunks made elsewhere (the tile-parallel encode of
    :mod:`framestream.distributed.vae`) instead of :func:`iter_encode`.
    """
    parts = []
    with torch.inference_mode(), tqdm(
        total=plan.frames, unit="frame", desc=f"encode {plan.source.name}", disable=None if progress else True, dynamic_ncols=True
    ) as bar:
        if chunks is None:
            chunks = iter_encode(
                vae,
                plan,
                chunk_size=chunk_size,
                tiling=tiling,
                tile_order=tile_order,
                device=device,
                dtype=dtype,
                pixels=pixels,
                safe_tiles=safe_tiles,
            )
        for i, mu in enumerate(chunks):
            parts.append(mu.float())
            bar.update(mu.shape[2] * plan.temporal_factor - (plan.temporal_factor - 1 if i == 0 else 0))
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
    pixels: Iterable[torch.Tensor] | None = None,
    chunks: Iterable[torch.Tensor] | None = None,
    safe_tiles: bool = True,
) -> torch.Tensor:
    """Encode, normalise with the VAE's statistics and save atomically with metadata; returns the latents (CPU)."""
    mu = encode_video(
        vae,
        plan,
        chunk_size=chunk_size,
        tiling=tiling,
        tile_order=tile_order,
        device=device,
        dtype=dtype,
        progress=progress,
        pixels=pixels,
        chunks=chunks,
        safe_tiles=safe_tiles,
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


@dataclass(frozen=True)
class EncodeItem:
    """One encode: a video and the latent file (``.safetensors`` / ``.pt``) it becomes."""

    source: Path
    output: Path


@dataclass(frozen=True)
class EncodeOptions(VaeJobOptions):
    """How every item of an encode job runs (shared by all items and engines).

    ``dtype`` is the compute dtype: the pixels are given to the encoder in it.
    """

    HALF: ClassVar[str] = "include_encoder"

    resize: tuple[int, int] | None = None
    """(width, height) every frame is resized to."""
    crop: tuple[int, int] | None = None
    """(width, height) of the centred crop."""
    frames: int | None = None
    """Encode exactly the first ``frames`` (``1 + 4k``)."""
    trim_frames: bool = False
    """Encode the largest ``1 + 4k`` frames the video has."""
    safe_tiles: bool = True
    """Wan tiles that would cost more time and memory than untiled are enlarged or dropped, with
    a warning (see :func:`iter_encode`); False runs ``tiling`` as given (``--tile-size auto``
    sized it for a memory budget)."""

    def plan(self, source: str | Path) -> EncodePlan:
        """Check ``source`` against these options from its headers (see :func:`plan_encode`)."""
        return plan_encode(
            source, self.version, resize=self.resize, crop=self.crop, frames=self.frames, trim_frames=self.trim_frames
        )


@dataclass(frozen=True)
class EncodeResult:
    """What :func:`encode_one` wrote."""

    source: Path
    output: Path
    frames: int
    """Pixel frames encoded."""
    latent_shape: tuple[int, ...]
    size: tuple[int, int]
    """(height, width) given to the VAE."""
    fps: float


def check_encode_output(item: EncodeItem, options: EncodeOptions, plan: EncodePlan | None = None) -> None:
    """Checks of ``item.output`` that run before any work.

    A latent file suffix, a writable place, no existing output unless ``options.overwrite``
    (stale temporaries of a killed run are removed), and with ``plan`` known, room for the file.
    """
    output = Path(item.output)
    if output.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"latent file must end in .safetensors or .pt, got {output.name!r}")
    check_writable(output)
    check_new_output(output, options.overwrite)
    if plan is not None:
        factor = SPATIAL_FACTOR[options.version]
        channels = LATENT_CHANNELS[options.version]
        need = channels * plan.latent_frames * (plan.size[0] // factor) * (plan.size[1] // factor) * 4 + 4096
        check_free_space(output, need)


def encode_one(
    item: EncodeItem,
    vae: Any,
    options: EncodeOptions,
    *,
    plan: EncodePlan | None = None,
    pixels: Iterable[torch.Tensor] | None = None,
    chunks: Callable[[EncodePlan], Iterable[torch.Tensor]] | None = None,
) -> EncodeResult:
    """Encode ``item.source`` with the loaded ``vae`` and publish ``item.output`` atomically.

    ``plan`` may pass the :class:`EncodePlan` the caller already made (checked before the
    model was loaded); otherwise the video is planned here with ``options``. The output
    checks (:func:`check_encode_output`) run first; on any error or interrupt nothing is
    published. ``pixels`` may pass the encoder's input chunks already read (and converted,
    see :func:`model_pixels`) elsewhere, e.g. by a Ray reader; then ``plan`` is required.
    ``chunks(plan)`` replaces :func:`iter_encode` (see :func:`encode_video`), e.g. with the
    tile-parallel encode of :mod:`framestream.distributed.vae`.
    """
    if pixels is not None and plan is None:
        raise ValueError("encode_one: pixels need the plan they were read with")
    plan = plan if plan is not None else options.plan(item.source)
    check_encode_output(item, options, plan)
    z = encode_to_file(
        vae,
        plan,
        item.output,
        options.version,
        chunk_size=options.chunk_size,
        tiling=options.tiling,
        tile_order=options.tile_order,
        device=options.device,
        dtype=options.dtype,
        progress=options.progress,
        pixels=pixels,
        chunks=chunks(plan) if chunks is not None else None,
        safe_tiles=options.safe_tiles,
    )
    return EncodeResult(
        source=plan.source, output=Path(item.output), frames=plan.frames, latent_shape=tuple(z.shape), size=plan.size, fps=plan.fps
    )
