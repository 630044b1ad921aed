"""Tile-parallel exact Wan VAE decode and encode: the exact tiler's tiles split across ranks.

The exact tiler (:mod:`framestream.tiling.wan_exact`) needs no halo exchange: every tile
computes its own halo, and only the latent-resolution stage (decode head / encode back,
with the mid-block attention) couples tiles. So ranks never talk *inside* the VAE:

- :func:`split_tiles` gives every rank a set of tiles, balanced by cost (the tile's input
  crop area = owned area plus halo, what its convolutions pay for), largest first onto
  the least-loaded rank; each rank batches its own tiles by shape (``tile_batch_size``).
  Each tile keeps its own causal cache on its rank for the whole stream, so the result is
  the one-process result, tile for tile.
- **decode**, per chunk: the head runs on every rank (``head='every_rank'``, no traffic)
  or on rank 0, its features broadcast (``'rank0'``); each rank runs the tail of its
  tiles; the owned pixels are gathered to rank 0, which yields the chunk's frames (other
  ranks yield ``None``) -- frames stream per chunk as in one process.
- **encode**, per chunk: each rank runs the front of its tiles; the owned latent-resolution
  features are gathered to rank 0, which runs the back (``back='rank0'``), or all-gathered
  so every rank runs it (``'every_rank'``).

Bytes per chunk (what :mod:`framestream.distributed.comm` counts): decode sends each
non-zero rank's owned pixels once (``B * 3 * frames * owned_px * dtype``), plus with
``head='rank0'`` the head features to every other rank; encode sends owned feature cells.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass

import torch
import torch.nn.functional as F

from framestream.distributed.comm import all_gather_uneven, broadcast, gather_uneven
from framestream.distributed.runtime import ParallelRuntime
from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.model import WanVAE, padded_latent_chunks
from framestream.tiling.batching import batch_schedule
from framestream.tiling.wan_exact import ExactTile, ExactTilePlan
from framestream.tiling.wan_exact.tile_calls import _stage_hook

__all__ = ["TileShares", "split_tiles", "iter_decode_parallel", "iter_encode_parallel"]


def _cost(tile: ExactTile) -> int:
    return (tile.row.crop[1] - tile.row.crop[0]) * (tile.col.crop[1] - tile.col.crop[0])


@dataclass(frozen=True)
class TileShares:
    """Which tiles every rank runs (``tiles[r]``, plan order) and in which calls (``calls[r]``)."""

    plan: ExactTilePlan
    tiles: tuple[tuple[int, ...], ...]
    calls: tuple[tuple[tuple[int, ...], ...], ...]

    def cost(self, rank: int) -> int:
        return sum(_cost(self.plan.tiles[i]) for i in self.tiles[rank])

    def describe(self) -> str:
        total = sum(self.cost(r) for r in range(len(self.tiles))) or 1
        shares = ", ".join(
            f"rank {r}: {len(t)} tiles ({100 * self.cost(r) / total:.0f}%)" for r, t in enumerate(self.tiles)
        )
        return f"tile-parallel {len(self.plan)} {self.plan.kind} tiles -> {shares}"


def split_tiles(plan: ExactTilePlan, world_size: int) -> TileShares:
    """Balance the plan's tiles over ``world_size`` ranks by cost (largest first, least-loaded rank; ties: lower rank)."""
    tiles = plan.tiles
    load = [0] * world_size
    owned: list[list[int]] = [[] for _ in range(world_size)]
    for i in sorted(range(len(tiles)), key=lambda i: (-_cost(tiles[i]), i)):
        r = min(range(world_size), key=lambda r: (load[r], r))
        owned[r].append(i)
        load[r] += _cost(tiles[i])
    mine = [tuple(sorted(o)) for o in owned]
    calls = tuple(
        tuple(tuple(m[j] for j in batch) for batch in batch_schedule([tiles[i].key for i in m], plan.tile_batch_size))
        for m in mine
    )
    return TileShares(plan, tuple(mine), calls)


def _run_calls(stage, source: torch.Tensor, plan: ExactTilePlan, calls, caches: list[WanCausalCache], pad: int) -> list[torch.Tensor]:
    """This rank's tiles of one chunk: every call's owned regions, flattened, in ``calls`` order."""
    b = source.shape[0]
    owned = []
    for ci, members in enumerate(calls):
        group = [plan.tiles[i] for i in members]
        crops = [source[..., t.row.crop[0] : t.row.crop[1], t.col.crop[0] : t.col.crop[1]] for t in group]
        x = crops[0] if len(crops) == 1 else torch.cat(crops, dim=0)
        y = stage(x, caches[ci], num_padded=pad, after_block=_stage_hook(group[0], plan.staged), atomic=False)
        for j, t in enumerate(group):
            owned.append(y[j * b : (j + 1) * b][..., t.row.own_local, t.col.own_local].reshape(-1))
        del y
    return owned


def _place(dest: torch.Tensor, flat: torch.Tensor, plan: ExactTilePlan, calls) -> None:
    """Inverse of :func:`_run_calls`'s packing: one rank's owned regions into the full output."""
    offset = 0
    for members in calls:
        for i in members:
            t = plan.tiles[i]
            rows, cols = t.row.own_out, t.col.own_out
            shape = (*dest.shape[:-2], rows.stop - rows.start, cols.stop - cols.start)
            n = torch.Size(shape).numel()
            dest[..., rows, cols] = flat[offset : offset + n].view(shape)
            offset += n
    assert offset == flat.numel(), (offset, flat.numel())


def _exchange_owned(
    runtime: ParallelRuntime, owned: list[torch.Tensor], like: torch.Tensor, everywhere: bool
) -> list[torch.Tensor] | None:
    """Every rank's packed owned regions, on rank 0 (or on every rank); sizes travel first (8 bytes each)."""
    mine = torch.cat(owned) if owned else like.new_empty(0)
    group = runtime.all
    sizes_t = all_gather_uneven(group, torch.tensor([mine.numel()], dtype=torch.int64, device=like.device), 0, [1] * group.size, None)
    sizes = [int(s.item()) for s in sizes_t]
    if everywhere:
        return all_gather_uneven(group, mine, 0, sizes, runtime.stats)
    return gather_uneven(group, mine, sizes, runtime.stats)


@torch.no_grad()
def iter_decode_parallel(
    vae: WanVAE,
    z: torch.Tensor,
    plan: ExactTilePlan,
    runtime: ParallelRuntime,
    *,
    chunk_size: int = 1,
    head: str = "every_rank",
) -> Iterator[tuple[torch.Tensor | None, int]]:
    """Exact tiled decode of a self-contained video over all ranks: ``(frames or None, start)`` per chunk.

    Every rank must call it with the same ``z`` (``head='rank0'``: only rank 0's is read).
    Rank 0 gets each chunk's frames ``(B, C, n, H, W)``; the others ``None``.
    """
    if head not in ("every_rank", "rank0"):
        raise ValueError(f"head must be 'every_rank' or 'rank0', got {head!r}")
    if plan.kind != "decode" or plan.in_hw != tuple(z.shape[-2:]):
        raise ValueError(f"the plan is a {plan.kind} plan for {plan.in_hw}, the latents are {tuple(z.shape[-2:])}")
    shares = split_tiles(plan, runtime.world_size)
    calls = shares.calls[runtime.rank]
    caches = [WanCausalCache() for _ in calls]
    head_cache = WanCausalCache()
    b = z.shape[0]
    out_h, out_w = plan.out_hw
    pos = 0
    for c0, chunk, pad in padded_latent_chunks(z, chunk_size):
        real = chunk_size - pad
        n = vae.decoded_frames(real, c0 > 0)
        if head == "every_rank" or runtime.rank == 0:
            feat = vae.decode_head(chunk, head_cache, num_padded=pad, atomic=False)
        if head == "rank0" and runtime.distributed:
            shape = torch.tensor(feat.shape if runtime.rank == 0 else [0] * 5, dtype=torch.int64, device=z.device)
            shape = broadcast(runtime.all, shape, None)
            if runtime.rank != 0:
                feat = z.new_empty(tuple(int(s) for s in shape))
            feat = broadcast(runtime.all, feat, runtime.stats)
        owned = _run_calls(vae.decode_tail, feat, plan, calls, caches, pad)
        del feat
        parts = _exchange_owned(runtime, owned, z, everywhere=False)
        frames = None
        if parts is not None:
            frames = z.new_empty(b, vae.arch.output_pixel_channels, n, out_h, out_w)
            for r, flat in enumerate(parts):
                _place(frames, flat, plan, shares.calls[r])
        yield frames, pos
        pos += n


def _encode_spans(t: int, k: int, r: int, started: bool) -> Iterator[tuple[int, int, int, int]]:
    """``(first frame, frames used, real latents, padded latents)`` of the encoder chunks (as the tiler's)."""
    start = 0
    if not started:
        yield 0, 1, 1, 0
        start = 1
    while start < t:
        used = min(k * r, t - start)
        yield start, used, used // r, k - used // r
        start += used


@torch.no_grad()
def iter_encode_parallel(
    vae: WanVAE,
    videos: Iterable[torch.Tensor],
    plan: ExactTilePlan,
    runtime: ParallelRuntime,
    *,
    chunk_size: int = 1,
    back: str = "rank0",
) -> Iterator[tuple[torch.Tensor | None, int]]:
    """Exact tiled encode over all ranks of a video given in pieces: ``(moments or None, start)`` per chunk.

    ``videos``: the stream's pixels in ``[-1, 1]``, ``1 + 4k`` frames first, then ``4k`` per
    piece (what :func:`framestream.jobs.encode.iter_pixel_chunks` yields); every rank must
    pass the same pixels. ``moments`` as :func:`~framestream.tiling.wan_exact.iter_encode_tiled`,
    on rank 0 only with ``back='rank0'``, on every rank with ``'every_rank'``; ``start`` counts
    latent frames from the start of the stream.
    """
    if back not in ("every_rank", "rank0"):
        raise ValueError(f"back must be 'every_rank' or 'rank0', got {back!r}")
    if plan.kind != "encode":
        raise ValueError(f"got a {plan.kind} plan for an encode")
    shares = split_tiles(plan, runtime.world_size)
    calls = shares.calls[runtime.rank]
    caches = [WanCausalCache() for _ in calls]
    back_cache = WanCausalCache()
    grid_h, grid_w = plan.grid_hw
    everywhere = back == "every_rank"
    r_t = vae.temporal_ratio
    pos = 0
    for x in videos:
        if plan.in_hw != tuple(x.shape[-2:]):
            raise ValueError(f"the plan is for {plan.in_hw} pixels, the video is {tuple(x.shape[-2:])}")
        t = x.shape[2]
        if (t - 1) % r_t if pos == 0 else t % r_t:
            raise ValueError(f"video piece of {t} frames: the first needs 1 + {r_t}k frames, later ones {r_t}k")
        b = x.shape[0]
        for start, used, real, pad in _encode_spans(t, chunk_size, r_t, pos > 0):
            chunk = x[:, :, start : start + used]
            if pad:
                chunk = F.pad(chunk, (0, 0, 0, 0, 0, pad * r_t))
            owned = _run_calls(vae.encode_front, chunk, plan, calls, caches, pad)
            del chunk
            parts = _exchange_owned(runtime, owned, x, everywhere)
            moments = None
            if parts is not None:
                cells = b * (real + pad) * grid_h * grid_w
                channels = sum(p.numel() for p in parts) // cells
                feats = x.new_empty(b, channels, real + pad, grid_h, grid_w)
                for r, flat in enumerate(parts):
                    _place(feats, flat, plan, shares.calls[r])
                moments = vae.encode_back(feats, back_cache, num_padded=pad, atomic=False)
                del feats
            yield moments, pos
            pos += real
