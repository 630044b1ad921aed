"""Exact tiled Wan encode: frame-major streaming and the low-memory tile-major order."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Literal

import torch
import torch.nn.functional as F

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.model import LOGVAR_RANGE, WanVAE
from framestream.tiling.planner import TilingConfig
from framestream.tiling.wan_exact.plan import ExactTilePlan
from framestream.tiling.wan_exact.state import WanTiledEncodeState, _resolve_plan
from framestream.tiling.wan_exact.tile_calls import _check_chunk_size, _gather, _run_tile_calls, _scatter, _shallow, _stage_hook
from framestream.utils.host_memory import release_freed_host_memory

__all__ = ["iter_encode_tiled", "encode_tiled"]


def _prepare_encode(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None,
    chunk_size: int,
    state: WanTiledEncodeState | None,
    staged: bool,
) -> tuple[ExactTilePlan, WanTiledEncodeState]:
    if not isinstance(vae, WanVAE) or not vae.has_encoder:
        raise ValueError("exact tiled encoding needs a WanVAE with an encoder")
    a = vae.arch
    if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 5:
        raise ValueError(f"video must be a floating-point (B, C, T, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
    if x.shape[1] != a.pixel_channels:
        raise ValueError(f"video must have {a.pixel_channels} channels, got {x.shape[1]}")
    s, r = a.scale_factor_spatial, a.scale_factor_temporal
    if x.shape[0] < 1 or x.shape[3] < s or x.shape[4] < s or x.shape[3] % s or x.shape[4] % s:
        raise ValueError(f"video height and width must be positive multiples of {s}, got {tuple(x.shape[3:])}")
    _check_chunk_size(chunk_size)
    if state is None:
        state = WanTiledEncodeState()
    elif not isinstance(state, WanTiledEncodeState):
        raise TypeError(f"state must be a WanTiledEncodeState, got {type(state).__name__}")
    t = x.shape[2]
    if state.started:
        if t < r or t % r:
            raise ValueError(f"a continuing stream needs a positive multiple of {r} frames, got {t}")
    elif t < 1 or (t - 1) % r:
        raise ValueError(f"the first call of a stream needs 1 + {r}k frames, got {t}")
    plan = _resolve_plan("encode", vae, (int(x.shape[3]), int(x.shape[4])), tiling, state, staged)
    state._check_continues(plan, int(x.shape[0]))
    return plan, state


def iter_encode_tiled(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledEncodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    offload_caches: bool = False,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Encode a video in [-1, 1] exactly, tile by tile, yielding ``(moments, start)`` per chunk.

    ``moments`` are the posterior moments ``(B, 2*z_dim, n, h, w)`` (mean, then raw
    log-variance) of the chunk's latent frames, as :meth:`WanVAE.encode_moments`; ``start``
    is the chunk's first latent within this call. Chunks follow :meth:`WanVAE.encode`: the
    stream's first frame alone, then ``4*chunk_size`` frames (a short last chunk is
    zero-padded). Equals the untiled encode up to float rounding. Gradients are not tracked.
    ``state``, ``atomic_chunks`` and ``offload_caches`` work as in :func:`iter_decode_tiled`.
    """
    plan, state = _prepare_encode(vae, x, tiling, chunk_size, state, staged)
    return _encode_stream(vae, x, plan, state, chunk_size, bool(atomic_chunks), bool(offload_caches))


def _encode_spans(t: int, k: int, r: int, started: bool) -> list[tuple[int, int, int, int]]:
    """The encoder chunks of ``t`` pixel frames: ``(first frame, frames used, real latents, padded latents)``.

    A stream's first frame is encoded alone; then ``k*r`` frames per chunk, the last one
    zero-padded to full size.
    """
    spans, start = [], 0
    if not started:
        spans.append((0, 1, 1, 0))
        start = 1
    while start < t:
        used = min(k * r, t - start)
        spans.append((start, used, used // r, k - used // r))
        start += used
    return spans


def _pixel_chunk(x: torch.Tensor, start: int, used: int, pad: int, r: int) -> torch.Tensor:
    """Frames ``[start, start+used)`` of ``x``, zero-padded by ``pad`` latents' worth of frames."""
    chunk = x[:, :, start : start + used]
    return F.pad(chunk, (0, 0, 0, 0, 0, pad * r)) if pad else chunk


@torch.no_grad()
def _encode_stream(
    vae: WanVAE, x: torch.Tensor, plan: ExactTilePlan, state: WanTiledEncodeState, k: int, atomic: bool, offload: bool
) -> Iterator[tuple[torch.Tensor, int]]:
    b = x.shape[0]
    r = vae.temporal_ratio
    grid_h, grid_w = plan.grid_hw
    pos = 0
    for start, used, real, pad in _encode_spans(x.shape[2], k, r, state.started):
        chunk = _pixel_chunk(x, start, used, pad, r)
        feats, calls = _run_tile_calls(
            vae.encode_front, chunk, plan, state, pad, atomic, lambda y: y.new_empty(b, y.shape[1], y.shape[2], grid_h, grid_w),
            offload,
        )
        del chunk
        release_freed_host_memory(feats)
        back = _shallow(state.back) if atomic else state.back
        moments = vae.encode_back(feats, back, num_padded=pad, atomic=atomic)
        del feats
        state.plan, state.batch_size, state.back, state.calls = plan, b, back, tuple(calls)
        state.frames += used
        state.latent_frames += real
        state.broken = False
        yield moments, pos
        pos += real
        del moments


@torch.no_grad()
def _encode_tile_major(vae: WanVAE, x: torch.Tensor, plan: ExactTilePlan, k: int, moments: torch.Tensor) -> None:
    """``order="tile"`` of :func:`encode_tiled`: every call over all chunks, then the back over all chunks."""
    b, t = x.shape[0], x.shape[2]
    r = vae.temporal_ratio
    grid_h, grid_w = plan.grid_hw
    spans = _encode_spans(t, k, r, started=False)
    feats: list[torch.Tensor | None] = [None] * len(spans)
    tiles = plan.tiles
    for members in plan.batches:
        group = [tiles[i] for i in members]
        hook = _stage_hook(group[0], plan.staged)
        cache = WanCausalCache()
        for i, (start, used, _, pad) in enumerate(spans):
            chunk = _pixel_chunk(x, start, used, pad, r)
            y = vae.encode_front(_gather(chunk, group), cache, num_padded=pad, after_block=hook, atomic=False)
            if feats[i] is None:
                feats[i] = y.new_empty(b, y.shape[1], y.shape[2], grid_h, grid_w)
            _scatter(feats[i], y, group, b)
            del y, chunk
            release_freed_host_memory(x)
        del cache
    back = WanCausalCache()
    pos = 0
    for i, (_, _, real, pad) in enumerate(spans):
        moments[:, :, pos : pos + real] = vae.encode_back(feats[i], back, num_padded=pad, atomic=False)
        feats[i] = None
        pos += real


def encode_tiled(
    vae: WanVAE,
    x: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledEncodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    return_logvar: bool = False,
    order: Literal["frame", "tile"] = "frame",
    offload_caches: bool = False,
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Whole-call form of :func:`iter_encode_tiled`, returning what :meth:`WanVAE.encode` returns:
    the posterior mean, or ``(mean, clamped logvar)`` with ``return_logvar``.

    ``order="tile"`` is the low-memory mode (as in :func:`decode_tiled`): every tile batch
    walks the whole clip through the high-resolution front with a fresh cache that is
    dropped before the next batch, the stitched latent-resolution features of every chunk
    are kept, then the back (mid-block attention) runs over them. Only one batch's front
    caches are alive at a time, instead of every tile's (which, with halos, can exceed the
    untiled cache). Same result as ``order="frame"``; ``state`` must be ``None``.
    ``offload_caches`` (frame order) as in :func:`iter_decode_tiled`.
    """
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    if order == "tile" and state is not None:
        raise ValueError(
            "order='tile' encodes a self-contained video and cannot continue a stream (state must be None); "
            "use order='frame' to stream with a WanTiledEncodeState"
        )
    plan, state = _prepare_encode(vae, x, tiling, chunk_size, state, staged)
    b, _, t, hh, ww = x.shape
    r, s, zd = vae.temporal_ratio, vae.spatial_ratio, vae.arch.z_dim
    n = t // r if state.started else 1 + (t - 1) // r
    moments = x.new_empty(b, 2 * zd, n, hh // s, ww // s)
    if order == "tile":
        _encode_tile_major(vae, x, plan, chunk_size, moments)
    else:
        for m, start in _encode_stream(vae, x, plan, state, chunk_size, bool(atomic_chunks), bool(offload_caches)):
            moments[:, :, start : start + m.shape[2]] = m
    mean = moments[:, :zd].contiguous()
    if not return_logvar:
        return mean
    return mean, moments[:, zd:].clamp(*LOGVAR_RANGE)
