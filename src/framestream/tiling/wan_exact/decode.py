"""Exact tiled Wan decode: frame-major streaming and the low-memory tile-major order."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Literal

import torch

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.model import WanVAE, padded_latent_chunks
from framestream.tiling.planner import TilingConfig
from framestream.tiling.wan_exact.plan import ExactTilePlan
from framestream.tiling.wan_exact.state import WanTiledDecodeState, _resolve_plan
from framestream.tiling.wan_exact.tile_calls import (
    _check_chunk_size,
    _converter,
    _gather,
    _run_tile_calls,
    _scatter,
    _shallow,
    _stage_hook,
)
from framestream.utils.host_memory import release_freed_host_memory

__all__ = ["iter_decode_tiled", "decode_tiled"]


def _prepare_decode(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None,
    chunk_size: int,
    state: WanTiledDecodeState | None,
    staged: bool,
) -> tuple[ExactTilePlan, WanTiledDecodeState]:
    """Every check, before any work."""
    if not isinstance(vae, WanVAE) or not vae.has_decoder:
        raise ValueError("exact tiled decoding needs a WanVAE with a decoder")
    if not torch.is_tensor(z) or not z.is_floating_point() or z.dim() != 5:
        raise ValueError(f"latents must be a floating-point (B, C, T, h, w) tensor, got {getattr(z, 'shape', type(z).__name__)}")
    if z.shape[1] != vae.arch.z_dim:
        raise ValueError(f"latents must have z_dim={vae.arch.z_dim} channels, got {z.shape[1]}")
    if min(z.shape[0], z.shape[2], z.shape[3], z.shape[4]) < 1:
        raise ValueError(f"latents need a batch, a frame and a pixel, got shape {tuple(z.shape)}")
    _check_chunk_size(chunk_size)
    if state is None:
        state = WanTiledDecodeState()
    elif not isinstance(state, WanTiledDecodeState):
        raise TypeError(f"state must be a WanTiledDecodeState, got {type(state).__name__}")
    plan = _resolve_plan("decode", vae, (int(z.shape[3]), int(z.shape[4])), tiling, state, staged)
    state._check_continues(plan, int(z.shape[0]))
    return plan, state


def iter_decode_tiled(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledDecodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    offload_caches: bool = False,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode latents ``(B, z_dim, T, h, w)`` exactly, tile by tile, yielding ``(frames, start)``.

    One item per chunk of ``chunk_size`` latent frames, in order: the chunk's frames
    ``(B, C, n, H, W)`` in the latents' dtype, and the index of its first frame within this
    call's output (``1 + 4(T-1)`` frames at the start of a stream, ``4T`` when ``state``
    continues one). Equals ``vae.decode(z)`` up to float rounding. ``tiling`` is a
    :class:`TilingConfig` (default ``TilingConfig()``; for a continuing ``state``, its plan) or
    an :class:`ExactTilePlan`. ``state`` is updated chunk by chunk (see docs/exact_tiling.md);
    ``None`` decodes a self-contained video. All checks run before the first chunk.
    Gradients are not tracked. ``atomic_chunks=False`` replaces each call's cache as soon
    as the call is done instead of at the end of the chunk: about half the cache memory,
    but a failure inside a chunk then leaves the state unusable (it refuses to continue).
    ``offload_caches=True`` keeps every tile call's cache in (pinned) host memory except
    during its own call, so the device holds one call's cache instead of a whole frame's
    (exact; it costs two host-device copies of each cache per chunk; a no-op on the CPU).
    """
    plan, state = _prepare_decode(vae, z, tiling, chunk_size, state, staged)
    return _decode_stream(vae, z, plan, state, chunk_size, bool(atomic_chunks), bool(offload_caches))


@torch.no_grad()
def _decode_stream(
    vae: WanVAE, z: torch.Tensor, plan: ExactTilePlan, state: WanTiledDecodeState, k: int, atomic: bool, offload: bool
) -> Iterator[tuple[torch.Tensor, int]]:
    b = z.shape[0]
    out_h, out_w = plan.out_hw
    pos = 0
    for _, chunk, pad in padded_latent_chunks(z, k):
        real = k - pad
        n = vae.decoded_frames(real, state.started)
        head = _shallow(state.head) if atomic else state.head
        feat = vae.decode_head(chunk, head, num_padded=pad, atomic=atomic)
        del chunk
        out, calls = _run_tile_calls(
            vae.decode_tail, feat, plan, state, pad, atomic, lambda y: y.new_empty(b, y.shape[1], n, out_h, out_w), offload
        )
        del feat
        release_freed_host_memory(out)
        assert out.shape[2] == n
        # Commit the whole chunk, right before handing its frames out.
        state.plan, state.batch_size, state.head, state.calls = plan, b, head, tuple(calls)
        state.latent_frames += real
        state.frames += n
        state.broken = False
        yield out, pos
        pos += n
        del out


def decode_tiled(
    vae: WanVAE,
    z: torch.Tensor,
    tiling: TilingConfig | ExactTilePlan | None = None,
    *,
    chunk_size: int = 1,
    state: WanTiledDecodeState | None = None,
    staged: bool = True,
    atomic_chunks: bool = False,
    on_frames_ready: Callable[[torch.Tensor, int], None] | None = None,
    order: Literal["frame", "tile"] = "frame",
    out_dtype: torch.dtype | None = None,
    offload_caches: bool = False,
) -> torch.Tensor:
    """Whole-call form of :func:`iter_decode_tiled`: the output is allocated once and filled.

    ``on_frames_ready(frames, start)`` is called for every chunk as soon as it is final
    (frame-major: the decoder's float frames; tile-major: the chunk's slice of the output,
    in ``out_dtype``).

    ``order="frame"`` (default) walks chunks in the outer loop, every tile per chunk (the
    streaming order of :func:`iter_decode_tiled`): frames are final chunk by chunk, but the
    tail caches of *all* tiles (about a full-frame cache at every decoder layer) stay alive
    for the whole call (unless ``offload_caches``, see :func:`iter_decode_tiled`).

    ``order="tile"`` is the low-memory mode: the head (mid-block attention, latent
    resolution) runs over all chunks first and its features of every chunk are kept (small:
    latent resolution); then each tile batch runs the tail over all chunks with its own
    fresh cache, writes its owned pixels into the output and drops its cache. Peak ≈ the
    head features of all chunks + ONE call's tail cache + one call's activations + the
    output. Same pixels as ``order="frame"`` (same chunk shapes, padding and stage crops).
    Frames are final only at the end (``on_frames_ready`` then runs for every chunk, in
    order): use the frame-major stream when frames are needed early. It decodes a
    self-contained video: ``state`` must be ``None`` (``ValueError`` otherwise), and
    ``atomic_chunks`` and ``offload_caches`` have no effect (no state to protect; one cache alive).

    ``out_dtype``: dtype of the returned video (default: the latents'). ``torch.uint8``
    converts every tile's (or chunk's) pixels with
    :func:`framestream.io.transfer.frames_to_uint8` (``channels_last=False``) before they
    are written, so the held video costs one byte per channel; the result equals
    ``frames_to_uint8`` of the float output. A floating dtype casts.
    """
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    ok_dtype = isinstance(out_dtype, torch.dtype) and (out_dtype == torch.uint8 or out_dtype.is_floating_point)
    if out_dtype is not None and not ok_dtype:
        raise ValueError(f"out_dtype must be None, torch.uint8 or a floating dtype, got {out_dtype!r}")
    if order == "tile" and state is not None:
        raise ValueError(
            "order='tile' decodes a self-contained video and cannot continue a stream (state must be None); "
            "use order='frame' to stream with a WanTiledDecodeState"
        )
    plan, state = _prepare_decode(vae, z, tiling, chunk_size, state, staged)
    b, _, t, h, w = z.shape
    s = vae.spatial_ratio
    n_out = vae.decoded_frames(t, state.started)
    shape = (b, vae.arch.output_pixel_channels, n_out, h * s, w * s)
    convert = _converter(out_dtype)
    if order == "tile":
        output = _decode_tile_major(vae, z, plan, chunk_size, shape, out_dtype or z.dtype, convert)
        if on_frames_ready is not None:
            for start, n in _chunk_frames(vae, t, chunk_size):
                on_frames_ready(output[:, :, start : start + n], start)
        return output
    output = z.new_empty(shape, dtype=out_dtype or z.dtype)
    for frames, start in _decode_stream(vae, z, plan, state, chunk_size, bool(atomic_chunks), bool(offload_caches)):
        output[:, :, start : start + frames.shape[2]] = convert(frames)
        if on_frames_ready is not None:
            on_frames_ready(frames, start)
    return output


def _chunk_frames(vae: WanVAE, t: int, k: int) -> Iterator[tuple[int, int]]:
    """``(first output frame, frames)`` of every chunk of a self-contained decode."""
    pos = 0
    for c0 in range(0, t, k):
        n = vae.decoded_frames(min(k, t - c0), c0 > 0)
        yield pos, n
        pos += n


@torch.no_grad()
def _decode_tile_major(
    vae: WanVAE,
    z: torch.Tensor,
    plan: ExactTilePlan,
    k: int,
    shape: tuple[int, ...],
    dtype: torch.dtype,
    convert: Callable[[torch.Tensor], torch.Tensor],
) -> torch.Tensor:
    """``order="tile"`` of :func:`decode_tiled`: head over all chunks, then every call over all chunks."""
    b, t = z.shape[0], z.shape[2]
    # (1) The head on every chunk (own cache, written through), keeping its latent-resolution features.
    head = WanCausalCache()
    feats: list[tuple[torch.Tensor, int]] = []
    for _, chunk, pad in padded_latent_chunks(z, k):
        feats.append((vae.decode_head(chunk, head, num_padded=pad, atomic=False), pad))
        del chunk
    del head
    output = z.new_empty(shape, dtype=dtype)
    spans = list(_chunk_frames(vae, t, k))
    tiles = plan.tiles
    # (2) Every call (tile batch) over all chunks with a fresh cache, dropped before the next call.
    for members in plan.batches:
        group = [tiles[i] for i in members]
        hook = _stage_hook(group[0], plan.staged)
        cache = WanCausalCache()
        for (feat, pad), (start, n) in zip(feats, spans):
            y = vae.decode_tail(_gather(feat, group), cache, num_padded=pad, after_block=hook, atomic=False)
            assert y.shape[2] == n
            _scatter(output[:, :, start : start + n], y, group, b, convert)
            del y
            release_freed_host_memory(output)
        del cache
    return output
