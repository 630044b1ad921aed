"""Decode jobs: one latent file -> one output (mp4, PNG folder, ``.npy``, ``.safetensors``), streaming.

:func:`decode_one` is the unit every engine runs (the CLI, torchrun shards, a Ray actor):
it takes a :class:`DecodeItem` (which file to which output), a VAE that is already
loaded and the shared :class:`DecodeOptions`, and publishes the output atomically, so
every engine writes the same bytes.

- :func:`iter_decode`: latents -> ``(frames, start_index)`` chunks, untiled through
  :meth:`WanVAE.decode` with one causal cache, or through the exact tiler
  (:mod:`framestream.tiling.wan_exact`) when a :class:`TilingConfig` is given;
- :func:`decode_to_sink`: those chunks converted to uint8 on the device, copied to the
  host (:class:`HostFrameCopier`) and written to a sink (:mod:`framestream.jobs.sinks`)
  as they arrive.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import numpy as np
import torch
from tqdm.auto import tqdm

from framestream.io.atomic import check_free_space, check_new_output
from framestream.io.latents import LatentMetadata, load_latents
from framestream.io.transfer import HostFrameCopier
from framestream.jobs.checks import (
    SPATIAL_FACTOR,
    TEMPORAL_FACTORS,
    check_chunk,
    check_latents,
    check_output,
    decoded_frames,
    output_format,
    vae_name,
    wan_exact_module,
)
from framestream.jobs.options import VaeJobOptions
from framestream.jobs.sinks import expected_output_bytes, open_sink
from framestream.tiling.planner import TilingConfig

__all__ = [
    "DecodeItem",
    "DecodeOptions",
    "DecodeResult",
    "check_decode_output",
    "decode_one",
    "decode_to_sink",
    "iter_decode",
    "read_latents",
]


@dataclass(frozen=True)
class DecodeItem:
    """One decode: a latent file and the output it becomes."""

    source: Path
    """Latent file (``.safetensors`` / ``.pt``) written by ``framestream encode`` or :func:`save_latents`."""
    output: Path
    """Output file or PNG folder."""
    format: str | None = None
    """``mp4``, ``png``, ``npy`` or ``safetensors``; ``None``: from the output path."""
    fps: float | None = None
    """Frame rate of a video output; ``None``: the latent file's, else 16."""


@dataclass(frozen=True)
class DecodeOptions(VaeJobOptions):
    """How every item of a decode job runs (shared by all items and engines).

    ``dtype`` is the compute dtype: latents are un-normalised in float32, then cast to it.
    """

    HALF: ClassVar[str] = "include_decoder"

    crf: int = 18
    """libx264 quality of a video output."""
    threads: int | None = None
    """Video encoder threads (``None``: the codec's choice)."""


@dataclass(frozen=True)
class DecodeResult:
    """What :func:`decode_one` wrote."""

    output: Path
    format: str
    frames: int
    height: int
    width: int
    fps: float


def read_latents(source: str | Path, version: str) -> tuple[torch.Tensor, LatentMetadata]:
    """Load a latent file and check it fits the VAE ``version`` (see :func:`check_latents`)."""
    z, meta = load_latents(source)
    check_latents(z, meta, version, source)
    return z, meta


def check_decode_output(item: DecodeItem, options: DecodeOptions, latent_shape: tuple[int, ...] | None = None) -> str:
    """Checks of ``item.output`` that run before any work; returns the output format.

    The place must be writable, an existing output needs ``options.overwrite``, stale
    temporaries of a killed run are removed, and with ``latent_shape`` known an
    uncompressed output (npy, safetensors) must fit in the free space.
    """
    fmt = output_format(item.output, item.format)
    check_output(item.output, fmt)
    check_new_output(item.output, options.overwrite, directory=fmt == "png")
    if latent_shape is not None:
        factor = SPATIAL_FACTOR[options.version]
        frames = decoded_frames(latent_shape[2], TEMPORAL_FACTORS[options.version])
        need = expected_output_bytes(fmt, frames, latent_shape[3] * factor, latent_shape[4] * factor)
        if need is not None:
            check_free_space(item.output, need)
    return fmt


def iter_decode(
    vae: Any,
    z: torch.Tensor,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    offload_caches: bool = False,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode un-normalised latents ``(1, C, T, h, w)`` to ``(frames (1, 3, t, H, W), start_index)`` chunks.

    Untiled: ``chunk_size`` latent frames per :meth:`WanVAE.decode` call, one causal cache
    for the whole stream. Tiled: :func:`framestream.tiling.wan_exact.iter_decode_tiled`
    (``tile_order="frame"``, frames streamed per chunk), or the tile-major low-memory
    decode (``"tile"``: one tile batch's caches alive at a time, the whole video returned
    at the end as uint8); ``offload_caches`` as in ``iter_decode_tiled``. The chunks cover the ``1 + 4(T-1)`` frames in order, each once.
    """
    check_chunk(chunk_size)
    if tile_order not in ("frame", "tile"):
        raise ValueError(f"tile order must be 'frame' or 'tile', got {tile_order!r}")
    from framestream.models.ltx2.vae import LTX2VAE

    if isinstance(vae, LTX2VAE):  # whole clip per call; tiled: frames streamed per temporal tile
        from framestream.tiling.dispatch import iter_decode_tiled

        if tiling is None:
            yield vae.decode(z), 0
        else:
            yield from iter_decode_tiled(vae, z, tiling)
        return
    if tiling is not None and tile_order == "tile":
        yield wan_exact_module().decode_tiled(vae, z, tiling, chunk_size=chunk_size, order="tile", out_dtype=torch.uint8), 0
        return
    if tiling is not None:
        yield from wan_exact_module().iter_decode_tiled(vae, z, tiling, chunk_size=chunk_size, offload_caches=offload_caches)
        return
    from framestream.models.wan.vae.cache import WanCausalCache

    cache = WanCausalCache()
    position = 0
    for start in range(0, z.shape[2], chunk_size):
        frames = vae.decode(z[:, :, start : start + chunk_size], chunk_size=chunk_size, cache=cache)
        yield frames, position
        position += frames.shape[2]


def decode_to_sink(
    vae: Any,
    z: torch.Tensor,
    sink: Any,
    *,
    chunk_size: int = 1,
    tiling: TilingConfig | None = None,
    tile_order: str = "frame",
    offload_caches: bool = False,
    progress: bool = True,
    chunks: Iterable[tuple[torch.Tensor, int]] | None = None,
) -> int:
    """Decode and hand each chunk to ``sink`` as soon as it is on the host; returns the frame count.

    Frames become uint8 on the device (:func:`frames_to_uint8`) and are copied through a
    :class:`HostFrameCopier` (pinned, overlapped with the next chunk on CUDA). The sink is
    closed on success and aborted on any error. ``chunks`` (``(frames (B, 3, t, H, W) in
    [-1, 1], start)``) made elsewhere replaces :func:`iter_decode`: the tile-parallel decode
    of :mod:`framestream.distributed.vae`, or another decoder's stream (TAEHV; ``vae`` is then
    None and the Wan frame count rule applies).
    """
    total = decoded_frames(z.shape[2]) if vae is None else decoded_frames(z.shape[2], vae.temporal_ratio)
    copier = HostFrameCopier(z.device)
    written = 0
    try:
        with tqdm(total=total, unit="frame", desc="decode", disable=None if progress else True, dynamic_ncols=True) as bar:

            def emit(chunks: list[np.ndarray]) -> None:
                nonlocal written
                for host in chunks:
                    sink.write(host[0])
                    written += host.shape[1]
                    bar.update(host.shape[1])

            expected = 0
            with torch.inference_mode():
                if chunks is None:
                    chunks = iter_decode(
                        vae, z, chunk_size=chunk_size, tiling=tiling, tile_order=tile_order, offload_caches=offload_caches
                    )
                for frames, start in chunks:
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


def decode_one(
    item: DecodeItem,
    vae: Any,
    options: DecodeOptions,
    *,
    latents: tuple[torch.Tensor, LatentMetadata] | None = None,
    chunks: Callable[[torch.Tensor], Iterable[tuple[torch.Tensor, int]]] | None = None,
) -> DecodeResult:
    """Decode ``item.source`` with the loaded ``vae`` and publish ``item.output`` atomically.

    The output checks (:func:`check_decode_output`) run first, so an existing output is
    refused unless ``options.overwrite``; on any error or interrupt nothing is published.

    ``latents`` may pass the file's ``(tensor, metadata)`` already read (and checked) by
    the caller, so a CLI can check the file before loading the model without reading it
    twice. Latents marked normalised are un-normalised in float32 with the VAE's
    statistics, then cast to ``options.dtype``. ``chunks(z)`` replaces :func:`iter_decode`
    (see :func:`decode_to_sink`).
    """
    z, meta = latents if latents is not None else read_latents(item.source, options.version)
    fmt = check_decode_output(item, options, tuple(z.shape))
    fps = item.fps or meta.fps or 16.0
    z = z.to(device=options.device, dtype=torch.float32)
    if meta.normalized:
        z = vae.denormalize_latents(z)
    z = z.to(options.dtype)
    factor = SPATIAL_FACTOR[options.version]
    total = decoded_frames(z.shape[2], TEMPORAL_FACTORS[options.version])
    sink = open_sink(
        item.output,
        fmt,
        total_frames=total,
        fps=fps,
        crf=options.crf,
        threads=options.threads,
        metadata={"vae": vae_name(options.version), "fps": fps, "source": str(item.source)},
    )
    frames = decode_to_sink(
        vae, z, sink, chunk_size=options.chunk_size, tiling=options.tiling, tile_order=options.tile_order,
        offload_caches=options.offload_caches, progress=options.progress, chunks=chunks(z) if chunks is not None else None,
    )
    return DecodeResult(
        output=item.output, format=fmt, frames=frames, height=z.shape[3] * factor, width=z.shape[4] * factor, fps=fps
    )
