"""Memory estimate and budget mode for the exact Wan tiler (:mod:`framestream.tiling.wan_exact`).

The estimate is computed from layer shapes: for every stage of the decoder tail, the
channels x frames x crop area of the buffers a call holds at once (inputs, the padded
copy each causal conv builds, outputs), plus the causal caches (2 frames per causal
conv input, at the crop's size) and the chunk's head output and frames. It was checked
against counted live tensor bytes on CPU within 0.8-1.5x (``tests/test_tiling_wan_exact.py``).
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from typing import Any, Literal, NamedTuple

import torch

from framestream.models.wan.vae.model import WanVAE
from framestream.models.wan.vae.modules import CausalConv3d, Resample, ResidualBlock, ResidualUpBlock, UpBlock
from framestream.tiling.budget import TilingChoice
from framestream.tiling.planner import TilingConfig
from framestream.tiling.receptive_field import decoder_block_scales
from framestream.tiling.wan_exact.plan import ExactTilePlan, _check_batch, _positive_pair, plan_exact_decode

__all__ = [
    "ExactDecodeMemory",
    "estimate_exact_decode_memory",
    "choose_exact_tiling",
    "check_search_limits",
    "search_exact_tilings",
]


class ExactDecodeMemory(NamedTuple):
    """Estimated bytes of an exact tiled decode (see :func:`estimate_exact_decode_memory`)."""

    head_cache: int
    """The head's causal cache (whole latent frame)."""
    tail_cache: int
    """Tail caches alive at once: all tiles' (one copy) frame-major; the largest call's tile-major."""
    head_peak: int
    """Head activations of one chunk (plus the chunk's latents)."""
    call_peak: int
    """Largest tail call's activations (its stacked input included)."""
    chunk_io: int
    """Held during the tail calls. Frame-major: the chunk's head output and output frames;
    tile-major: the head features of all chunks and the whole output video."""
    total: int
    """Estimated peak: caches (old and new copies, see the doc) plus the larger phase."""
    order: str = "frame"
    """The decode order estimated (see :func:`decode_tiled`)."""

def _elems(*dims: int) -> int:
    return math.prod(dims)


def _conv_buffer(c: int, t: int, h: int, w: int, conv: CausalConv3d) -> int:
    """The padded copy a causal conv builds of its input (temporal context and spatial halo)."""
    _, ph, pw = conv.spatial_padding
    return _elems(c, t + conv.context, h + 2 * ph, w + 2 * pw)


def _resnet_profile(r: ResidualBlock, t: int, h: int, w: int) -> tuple[int, int]:
    """(peak elements above the block's input, cache elements) of a residual block."""
    a = t * h * w
    sc = r.out_dim * a if r.conv_shortcut is not None else 0
    # conv1: norm1 output (its argument), the padded buffer, the output; conv2 likewise.
    p1 = sc + r.in_dim * a + _conv_buffer(r.in_dim, t, h, w, r.conv1) + r.out_dim * a
    p2 = sc + r.out_dim * a + _conv_buffer(r.out_dim, t, h, w, r.conv2) + r.out_dim * a
    cache = (r.conv1.context * r.in_dim + r.conv2.context * r.out_dim) * h * w
    return max(p1, p2), cache


def _upsample_profile(u: Resample, c: int, t: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(peak elements above the input, cache elements, output channels, output frames) of a spatial upsampler."""
    a = t * h * w
    peak, cache, t2 = 0, 0, t
    if u.mode == "upsample3d":  # time_conv to 2C channels, then a copy interleaving the two halves as frames
        peak = max(_conv_buffer(c, t, h, w, u.time_conv) + 2 * c * a, 4 * c * a)
        cache = u.time_conv.context * c * h * w
        t2 = 2 * t
    cu = u.resample[1].out_channels
    a2 = t2 * 4 * h * w
    doubled = c * t2 * h * w if t2 != t else 0
    up = c * a2  # the nearest-2x copy
    conv = up + c * a2 + cu * a2 if t2 > 1 else up + cu * a2  # per-frame 2D conv: a (B*T)-image copy in, a copy out
    peak = max(peak, doubled + up, conv, up + 2 * cu * a2 if t2 > 1 else 0)
    return peak, cache, cu, t2


def _tail_call(
    vae: WanVAE,
    sizes_h: tuple[int, ...],
    sizes_w: tuple[int, ...],
    rows: int,
    k: int,
    inner_h: tuple[tuple[tuple[int, int], ...], ...] = (),
    inner_w: tuple[tuple[tuple[int, int], ...], ...] = (),
) -> tuple[int, int]:
    """(peak elements, cache elements) of one tail call on ``rows`` stacked crops, steady state.

    Walks the tail's modules with the crop's extent at every stage; a layer's peak counts
    the tensors alive while it runs (its inputs held by the callers, the norm output it
    reads, the padded copy of a causal conv, its output, shortcut tensors).
    """
    dec = vae.decoder
    c = dec.up_blocks[0].resnets[0].in_dim
    t, h, w = k, sizes_h[0], sizes_w[0]
    held = c * t * h * w  # the call's stacked input, alive throughout
    peak, cache = held, 0
    t_full = t
    for i, (block, up) in enumerate(zip(dec.up_blocks, decoder_block_scales(vae))):
        if i == dec.full_rate_from and vae.frame_slice is not None and t > vae.frame_slice:
            # Time-sliced from here (WanVAE.frame_slice): the whole chunk's input stays held,
            # the blocks see one slice at a time.
            held += c * t * h * w
            t_full, t = t, vae.frame_slice
        block_in = c * t * h * w
        outer = held if i else 0  # the stacked input, once it is no longer the block's input
        x = block_in
        cuts = list(zip(inner_h[i], inner_w[i])) if i < len(inner_h) and i < len(inner_w) else []
        for j, r in enumerate(block.resnets):
            p, ca = _resnet_profile(r, t, h, w)
            keep = block_in if j else 0  # the block's input stays referenced by the caller
            peak = max(peak, outer + keep + x + p)
            cache += ca
            c = r.out_dim
            x = c * t * h * w
            if j < len(cuts):  # the tiler's crop after this residual block (a copy)
                h, w = cuts[j][0][1], cuts[j][1][1]
                peak = max(peak, outer + keep + x + c * t * h * w)
                x = c * t * h * w
        upsampler = block.upsamplers[0] if isinstance(block, UpBlock) and block.upsamplers is not None else None
        if isinstance(block, ResidualUpBlock):
            upsampler = block.upsampler
        if upsampler is not None:
            p, ca, cu, t2 = _upsample_profile(upsampler, c, t, h, w)
            peak = max(peak, outer + block_in + x + p)
            cache += ca
            c, t, h2, w2 = cu, t2, h * up, w * up
            full = c * t * h2 * w2
            if isinstance(block, ResidualUpBlock) and block.avg_shortcut is not None:
                peak = max(peak, outer + block_in + 2 * full)  # output plus the DupUp3D copy
        else:
            h2, w2 = h, w
            full = c * t * h2 * w2
        h, w = sizes_h[i + 1], sizes_w[i + 1]
        if (h, w) != (h2, w2):
            peak = max(peak, outer + full + c * t * h * w)  # the stage crop's copy
    x = c * t * h * w
    co = dec.conv_out.out_channels
    peak = max(peak, held + x + c * t * h * w + _conv_buffer(c, t, h, w, dec.conv_out) + co * t * h * w)
    peak = max(peak, held + x + 2 * co * t * h * w)  # unpatchify copy
    if t_full != t:  # the slices' outputs, then their concatenation
        peak = max(peak, held + 2 * co * t_full * h * w)
    cache += dec.conv_out.context * c * h * w
    return peak * rows, cache * rows


def _head_profile(vae: WanVAE, h: int, w: int, k: int) -> tuple[int, int, int]:
    """(peak elements, cache elements, output channels) of the head on the whole latent frame."""
    dec = vae.decoder
    zd = vae.arch.z_dim
    c = dec.conv_in.out_channels
    a = k * h * w
    peak = zd * a + _conv_buffer(zd, k, h, w, dec.conv_in) + c * a
    cache = dec.conv_in.context * zd * h * w
    for r in dec.mid_block.resnets:
        p, ca = _resnet_profile(r, k, h, w)
        peak = max(peak, zd * a + c * a + p)
        cache += ca
    peak = max(peak, zd * a + 7 * c * a)  # attention: norm, qkv (3C), sdpa out, projection, residual
    return peak, cache, c


def estimate_exact_decode_memory(
    vae: WanVAE,
    plan: ExactTilePlan,
    *,
    batch_size: int = 1,
    chunk_size: int = 1,
    dtype: torch.dtype = torch.float32,
    atomic_chunks: bool = False,
    order: Literal["frame", "tile"] = "frame",
    latent_frames: int | None = None,
    out_dtype: torch.dtype | None = None,
    offload_caches: bool = False,
) -> ExactDecodeMemory:
    """Estimated peak bytes of decoding with ``plan`` (weights not included).

    Derived from layer shapes (channels x frames x crop area x element size at every
    stage, see :func:`_tail_call`): the caches of the head and of every tile (2 frames of
    every causal conv's input at its stage crop, 1 channel block per ``time_conv``), the
    head's activations on a chunk, the largest tail call's activations, and the chunk's
    head output and output frames. With ``atomic_chunks`` a chunk is committed at its
    end, so the old and the new caches coexist until then and the estimate counts both
    copies (like the untiled model, whose chunk also holds its old cache until it
    commits); without (the default), slots are written through as each layer reads
    them, so one copy of the caches is live. Steady-state
    chunks (``chunk_size`` latents, temporal upsampling active) are the largest.

    ``order="frame"`` estimates the stream of :func:`iter_decode_tiled` (the output video
    is not counted: frames are handed out per chunk). ``order="tile"`` estimates
    ``decode_tiled(..., order="tile")`` of ``latent_frames`` latents (required), output in
    ``out_dtype`` (default ``dtype``) included: the larger of the head phase (head cache,
    head activations, the head features of all chunks) and the tail phase (the head
    features, the output, one call's cache and activations); ``atomic_chunks`` is ignored.
    ``offload_caches`` (frame order) counts device memory with idle tile caches in host
    memory: the largest call's cache instead of every tile's.
    """
    if plan.kind != "decode":
        raise ValueError("estimate_exact_decode_memory needs a decode plan")
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    if order == "tile" and (isinstance(latent_frames, bool) or not isinstance(latent_frames, int) or latent_frames < 1):
        raise ValueError(f"order='tile' needs latent_frames (a positive int), got {latent_frames!r}")
    e = torch.empty((), dtype=dtype).element_size()
    b, k = batch_size, chunk_size
    h, w = plan.grid_hw
    head_peak, head_cache, c_head = _head_profile(vae, h, w, k)
    row_sizes = {r.key: (r.sizes(), r.resnet_stages) for r in plan.rows}
    col_sizes = {c.key: (c.sizes(), c.resnet_stages) for c in plan.cols}
    call_peak, tail_cache, call_cache = 0, 0, 0
    row_count, col_count = Counter(r.key for r in plan.rows), Counter(c.key for c in plan.cols)
    for rk, nr in row_count.items():
        for ck, nc in col_count.items():
            n = nr * nc
            rows = min(n, plan.tile_batch_size)
            (sh, ih), (sw, iw) = row_sizes[rk], col_sizes[ck]
            p, ca = _tail_call(vae, sh, sw, rows * b, k, ih, iw)
            call_peak, call_cache = max(call_peak, p), max(call_cache, ca)
            tail_cache += ca // rows * n
    s, r = vae.spatial_ratio, vae.temporal_ratio
    head_peak, head_cache = b * head_peak, b * head_cache
    pixels = vae.arch.output_pixel_channels * h * s * w * s
    if order == "tile":
        assert latent_frames is not None
        chunks = -(-latent_frames // k)
        feats = b * c_head * chunks * k * h * w * e
        oe = torch.empty((), dtype=out_dtype or dtype).element_size()
        output = b * pixels * vae.decoded_frames(latent_frames, False) * oe
        held = feats + output
        total = max(head_cache * e + head_peak * e + feats, held + (call_cache + call_peak) * e)
        return ExactDecodeMemory(
            head_cache * e, call_cache * e, head_peak * e, call_peak * e, held, total, "tile"
        )
    chunk_io = b * (c_head * k * h * w + pixels * k * r)
    if offload_caches:
        tail_cache = call_cache
    # Atomic chunks hold old and new caches until the commit; write-through holds one copy.
    caches = 2 * (head_cache + tail_cache) if atomic_chunks else head_cache + tail_cache
    total = caches + max(head_peak, chunk_io + call_peak)
    return ExactDecodeMemory(*(int(v * e) for v in (head_cache, tail_cache, head_peak, call_peak, chunk_io, total)))


def check_search_limits(budget_bytes: float, max_tile_batch_size: int | None) -> None:
    """The checks a budget search needs before any work: a positive budget and a valid batch cap."""
    if max_tile_batch_size is not None:
        _check_batch(max_tile_batch_size)
    if not budget_bytes > 0:
        raise ValueError(f"budget_bytes must be positive, got {budget_bytes!r}")


def search_exact_tilings(
    max_side: int,
    plan_for: Callable[[int, int], ExactTilePlan],
    estimate: Callable[[ExactTilePlan], Any],
    budget_bytes: float,
    max_tile_batch_size: int | None = None,
    *,
    skip_one_tile: bool = False,
) -> tuple[TilingChoice | None, tuple[int, Any] | None]:
    """The largest owned tile side (in latents), then the largest tile batch, whose ``estimate(plan).total``
    fits ``budget_bytes``; plus the leanest ``(tile, estimate)`` seen (for the error when none fits).

    Sides from ``max_side`` down to 1 are tried; a side giving the same owned tiles as a larger
    one is skipped, and the side returned is the smallest giving the chosen plan (its largest
    owned side). ``plan_for(side, batch)`` plans; ``skip_one_tile`` leaves out one-tile plans.
    """
    leanest: tuple[int, Any] | None = None
    seen: set[tuple] = set()
    for tile in range(max_side, 0, -1):
        plan = plan_for(tile, 1)
        owned = (tuple(r.own for r in plan.rows), tuple(c.own for c in plan.cols))
        if (skip_one_tile and len(plan) == 1) or owned in seen:
            continue
        seen.add(owned)
        est = estimate(plan)
        if leanest is None or est.total < leanest[1].total:
            leanest = (tile, est)
        if est.total > budget_bytes:
            continue
        canonical = max(b - a for axis in owned for a, b in axis)
        if canonical != tile and plan_for(canonical, 1) == plan:
            tile = canonical
        top = max(Counter(t.key for t in plan.tiles).values())
        if max_tile_batch_size is not None:
            top = min(top, max_tile_batch_size)
        best = next((b for b in range(top, 1, -1) if estimate(plan_for(tile, b)).total <= budget_bytes), 1)
        return TilingChoice(tile_size_px=tile, tile_batch_size=best), leanest
    return None, leanest


def choose_exact_tiling(
    vae: WanVAE,
    latent_hw: tuple[int, int],
    budget_bytes: float,
    dtype: torch.dtype = torch.float32,
    *,
    batch_size: int = 1,
    chunk_size: int = 1,
    staged: bool = True,
    atomic_chunks: bool = False,
    max_tile_batch_size: int | None = None,
    order: Literal["frame", "tile"] = "frame",
    latent_frames: int | None = None,
    out_dtype: torch.dtype | None = None,
    offload_caches: bool = False,
) -> TilingChoice:
    """Largest square owned tile (px), then the largest tile batch, whose estimate fits the budget.

    The estimate is :func:`estimate_exact_decode_memory` (weights excluded); every tile
    size from the whole frame down to one latent is tried (sizes that give the same plan
    as a larger one are skipped, and the tile returned is the smallest size giving the
    chosen plan: its largest owned side). The caches do not shrink with the tile (they
    cover the whole frame, and small tiles add halo), so a budget that no tile size fits
    raises ``ValueError`` with the leanest estimate. Use the result as
    ``TilingConfig(tile_size_px=c.tile_size_px, tile_overlap_px=0, tile_batch_size=c.tile_batch_size)``.

    ``order="tile"`` (with ``latent_frames``, ``out_dtype``) sizes ``decode_tiled(..., order="tile")``:
    only one call's cache is alive there, so smaller tiles do lower the estimate; what no
    tiling removes is the head (features of all chunks) and the output video.
    """
    h, w = _positive_pair(latent_hw, "latent_hw")
    check_search_limits(budget_bytes, max_tile_batch_size)
    s = vae.spatial_ratio

    def estimate(plan: ExactTilePlan) -> ExactDecodeMemory:
        return estimate_exact_decode_memory(
            vae,
            plan,
            batch_size=batch_size,
            chunk_size=chunk_size,
            dtype=dtype,
            atomic_chunks=atomic_chunks,
            order=order,
            latent_frames=latent_frames,
            out_dtype=out_dtype,
            offload_caches=offload_caches,
        )

    def plan_for(tile: int, batch: int) -> ExactTilePlan:
        config = TilingConfig(tile_size_px=tile * s, tile_overlap_px=0)
        return plan_exact_decode(vae, (h, w), config, tile_batch_size=batch, staged=staged)

    choice, lean = search_exact_tilings(max(h, w), plan_for, estimate, budget_bytes, max_tile_batch_size)
    if choice is not None:
        return TilingChoice(tile_size_px=choice.tile_size_px * s, tile_batch_size=choice.tile_batch_size)
    assert lean is not None
    leanest = lean[1]
    if leanest.order == "tile":
        raise ValueError(
            f"no exact tiling of {h}x{w} latents fits {budget_bytes:.4g} bytes (order='tile'): the leanest tile size "
            f"needs an estimated {leanest.total:.4g} bytes, {leanest.chunk_io:.4g} of them for the head features and "
            "the output video, which no tiling removes"
        )
    raise ValueError(
        f"no exact tiling of {h}x{w} latents fits {budget_bytes:.4g} bytes: the leanest tile size needs an estimated "
        f"{leanest.total:.4g} bytes, {leanest.total - max(leanest.head_peak, leanest.chunk_io + leanest.call_peak):.4g} "
        "of them for the caches, which no tiling removes"
    )
