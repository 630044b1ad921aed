"""``framestream decode`` / ``encode`` on every rank of a torchrun job: the exact tiler's tiles split across ranks.

Every rank loads the VAE and reads the input (latents are small; the encoder reads the
same video stream on every rank and uses only its tiles' crops). Rank 0 alone writes the
output, through the same sinks and atomic publish as one process
(:func:`framestream.jobs.decode_one` / :func:`framestream.jobs.encode_one` with the
tile-parallel chunks plugged in); the other ranks only compute and send.
"""

from __future__ import annotations

import logging
from typing import Any

import torch

from framestream.distributed.runtime import ParallelRuntime, ProcessWorld
from framestream.distributed.vae import iter_decode_parallel, iter_encode_parallel, split_tiles
from framestream.distributed.config import ParallelConfig
from framestream.tiling.planner import TilingConfig

__all__ = ["decode_one_distributed", "encode_one_distributed"]

logger = logging.getLogger(__name__)


def _runtime(world: ProcessWorld, parallel: ParallelConfig | None, tile_order: str) -> tuple[ParallelRuntime, ParallelConfig]:
    parallel = parallel or ParallelConfig()
    if not parallel.vae_tile_parallel:
        raise ValueError("this command runs under torchrun only tile-parallel (ParallelConfig.vae_tile_parallel=True)")
    if tile_order != "frame":
        raise ValueError("--tile-order tile is a one-process low-memory mode; under torchrun use the default 'frame'")
    return ParallelRuntime(parallel, world), parallel


def decode_one_distributed(item: Any, vae: Any, options: Any, world: ProcessWorld, *, latents: tuple, parallel: ParallelConfig | None = None) -> Any:
    """Tile-parallel :func:`framestream.jobs.decode_one`: a ``DecodeResult`` on rank 0, None elsewhere.

    Without ``options.tiling`` the default :class:`TilingConfig` tiles are split.
    """
    from framestream.jobs import decode_one
    from framestream.tiling.wan_exact import plan_exact_decode

    runtime, parallel = _runtime(world, parallel, options.tile_order)
    z, meta = latents
    plan = plan_exact_decode(vae, tuple(z.shape[-2:]), options.tiling or TilingConfig())
    logger.info(runtime.layout(split_tiles(plan, runtime.world_size).describe(), dit=False))

    def chunks(z: torch.Tensor):
        for frames, start in iter_decode_parallel(vae, z, plan, runtime, chunk_size=options.chunk_size, head=parallel.vae_head):
            yield frames, start

    if world.is_main:
        return decode_one(item, vae, options, latents=latents, chunks=chunks)
    # Same latents as rank 0 gives decode_one (un-normalised in float32, then cast).
    z = z.to(device=options.device, dtype=torch.float32)
    if meta.normalized:
        z = vae.denormalize_latents(z)
    with torch.inference_mode():
        for _ in chunks(z.to(options.dtype)):
            pass
    return None


def encode_one_distributed(item: Any, vae: Any, options: Any, world: ProcessWorld, *, plan: Any, parallel: ParallelConfig | None = None) -> Any:
    """Tile-parallel :func:`framestream.jobs.encode_one`: an ``EncodeResult`` on rank 0, None elsewhere."""
    from framestream.jobs import encode_one
    from framestream.jobs.encode import iter_pixel_chunks
    from framestream.tiling.wan_exact import plan_exact_encode

    runtime, parallel = _runtime(world, parallel, options.tile_order)
    height, width = plan.size
    tile_plan = plan_exact_encode(vae, (height, width), options.tiling or TilingConfig())
    logger.info(runtime.layout(split_tiles(tile_plan, runtime.world_size).describe(), dit=False))

    def means(video_plan: Any):
        pixels = iter_pixel_chunks(video_plan, options.chunk_size, options.device, options.dtype)
        z_dim = vae.arch.z_dim
        for moments, _ in iter_encode_parallel(vae, pixels, tile_plan, runtime, chunk_size=options.chunk_size, back=parallel.vae_back):
            if moments is not None:
                yield moments[:, :z_dim]

    if world.is_main:
        return encode_one(item, vae, options, plan=plan, chunks=means)
    with torch.inference_mode():
        for _ in means(plan):
            pass
    return None
