"""Memory estimate, "never a loss" planning and budget mode for the exact tiled Wan encode.

The estimate is computed from layer shapes, like the decode one (:mod:`framestream.tiling.wan_budget`):
for every stage of the encoder front (patchify, conv_in, down blocks) the channels x frames x
crop area of the buffers a tile call holds at once, plus the causal caches (2 frames of every
causal conv's input at its stage crop, 1 frame per temporal downsampler), the back (mid block,
conv_out, quant_conv) at latent resolution, and the pixels and features the order holds. It was
checked against counted live tensor bytes on CPU within 0.8-1.5x (``tests/test_encode_planner.py``).

The untiled encode is the one-tile plan (tile = whole frame), streamed frame-major: what
:meth:`WanVAE.encode` holds. :func:`plan_exact_encode_safe` uses it as the bar a tiling must
beat; :func:`choose_exact_encode_tiling` sizes tiles for a memory budget.
"""

from __future__ import annotations

import dataclasses
from collections import Counter
from collections.abc import Callable
from typing import Literal, NamedTuple

import torch

from framestream.models.wan.vae.model import WanVAE
from framestream.models.wan.vae.modules import CausalConv3d, Resample, ResidualBlock, ResidualDownBlock
from framestream.tiling.budget import TilingChoice
from framestream.tiling.planner import TilingConfig
from framestream.tiling.receptive_field import encoder_block_scales
from framestream.tiling.wan_budget import _conv_buffer, check_search_limits, search_exact_tilings
from framestream.tiling.wan_exact.plan import (
    MAX_ENCODE_HALO_OVERHEAD,
    ExactTilePlan,
    _check_batch,
    _positive_pair,
    _tile_units,
    encode_halo_overhead,
    plan_exact_encode,
)

__all__ = [
    "MAX_ENCODE_MEMORY_RATIO",
    "ExactEncodeMemory",
    "SafeEncodePlan",
    "choose_exact_encode_tiling",
    "estimate_exact_encode_memory",
    "plan_exact_encode_safe",
]

Order = Literal["frame", "tile"]

MAX_ENCODE_MEMORY_RATIO = 0.9
"""Default cap of :func:`plan_exact_encode_safe` on a tiling's estimated peak over the untiled
encode's: a saving within the estimate's error is none, and the tiles' halos cost time."""


class ExactEncodeMemory(NamedTuple):
    """Estimated bytes of an exact tiled encode (see :func:`estimate_exact_encode_memory`)."""

    front_cache: int
    """Front caches alive at once: all tiles' frame-major; the largest call's tile-major."""
    back_cache: int
    """The back's causal cache (latent resolution)."""
    call_peak: int
    """Largest front call's activations (its stacked and patchified input included)."""
    back_peak: int
    """The back's activations on one chunk (its moments included)."""
    held: int
    """Input and output held during the calls. Frame-major: one pixel chunk and its stitched
    features; tile-major: the whole video, the features of all chunks and all moments."""
    total: int
    """Estimated peak: caches plus the larger phase (front calls or back)."""
    order: str = "frame"
    """The encode order estimated (see :func:`encode_tiled`)."""


def _conv(conv: CausalConv3d, c: int, t: int, h: int, w: int) -> tuple[int, int]:
    """(elements a causal conv allocates at its peak, cache elements) on ``(c, t, h, w)``.

    The new cache slot is written before the convolution runs and the old one lives until it
    returns. One frame runs as a 2D conv per temporal tap summed into the first (no padded
    buffer: output plus one tap's term); more frames build the padded buffer.
    """
    co = conv.out_channels
    if conv.context == 0:  # 1x1x1 (shortcut, quant_conv): output only, no slot
        return co * t * h * w, 0
    slot = conv.context * c * h * w
    if t == 1 and conv.kernel_size[0] == conv.context + 1 and conv.stride == (1, 1, 1):
        return slot + 2 * co * h * w, slot
    return slot + _conv_buffer(c, t, h, w, conv) + co * t * h * w, slot


def _resnet(r: ResidualBlock, t: int, h: int, w: int) -> tuple[int, int]:
    """(peak elements above the block's input, cache elements) of a residual block."""
    a = t * h * w
    sc = _conv(r.conv_shortcut, r.in_dim, t, h, w)[0] if r.conv_shortcut is not None else 0
    p1, c1 = _conv(r.conv1, r.in_dim, t, h, w)
    p2, c2 = _conv(r.conv2, r.out_dim, t, h, w)
    # conv1 reads the norm1 output (its argument); conv2 the norm2 output, conv1's output freed.
    return max(sc + r.in_dim * a + p1, sc + r.out_dim * a + p2), c1 + c2


def _downsample(u: Resample, c: int, t: int, h: int, w: int) -> tuple[int, int, int]:
    """(peak elements above the input, cache elements, output frames) of a downsampler, steady state."""
    pad = c * t * (h + 1) * (w + 1)  # F.pad right/bottom
    h2, w2 = h // 2, w // 2
    out = c * t * h2 * w2
    # per-frame stride-2 conv: one frame directly; more as a (B*T)-image copy in, a contiguous copy out
    peak = pad + out if t == 1 else max(2 * pad + out, pad + 2 * out)
    if u.mode != "downsample3d":
        return peak, 0, t
    slot = c * h2 * w2  # the last frame, for the next chunk
    # steady state: cat(last frame of the previous chunk, chunk), then the stride-2 time conv
    peak = max(peak, out + slot + c * (1 + t) * h2 * w2 + c * (t // 2) * h2 * w2)
    return peak, slot, t // 2


def _block(b: object, c: int, t: int, h: int, w: int) -> tuple[int, int, int, int]:
    """(peak above the input, cache elements, output channels, output frames) of a down block."""
    if isinstance(b, ResidualBlock):
        p, ca = _resnet(b, t, h, w)
        return p, ca, b.out_dim, t
    if isinstance(b, Resample):
        p, ca, t2 = _downsample(b, c, t, h, w)
        return p, ca, c, t2
    if isinstance(b, ResidualDownBlock):  # Wan 2.2: resnets, downsampler, plus the AvgDown3D shortcut
        peak, cache, x = 0, 0, 0  # x: the resnet chain's current output (above the block's input)
        for r in b.resnets:
            p, ca = _resnet(r, t, h, w)
            peak, cache, c, x = max(peak, x + p), cache + ca, r.out_dim, r.out_dim * t * h * w
        t2, h2, w2 = t, h, w
        if b.downsampler is not None:
            p, ca, t2 = _downsample(b.downsampler, c, t, h, w)
            peak, cache, h2, w2 = max(peak, x + p), cache + ca, h // 2, w // 2
        out = c * t2 * h2 * w2
        s = b.avg_shortcut
        # the shortcut: a regrouping copy of the input, then its group mean, added into the output
        peak = max(peak, out + s.in_channels * t * h * w + out)
        return peak, cache, c, t2
    raise TypeError(f"no memory model for encoder block {type(b).__name__}")


def _front_call(vae: WanVAE, sizes_h: tuple[int, ...], sizes_w: tuple[int, ...], rows: int, frames: int, stacked: bool) -> tuple[int, int]:
    """(peak elements, cache elements) of one front call on ``rows`` stacked crops of ``frames`` pixel frames.

    Walks patchify, conv_in and the down blocks with the crop's extent at every stage
    (``sizes`` from :meth:`AxisCrop.sizes`). The full-rate stages run in time slices of
    ``vae.frame_slice`` frames: the slices' outputs pile up, then are concatenated.
    """
    enc = vae.encoder
    p = vae.arch.patch
    hh, ww = sizes_h[0], sizes_w[0]
    c, h, w = enc.conv_in.in_channels, hh // p, ww // p
    # Held by the callers for the whole call: the stacked crops (a view for one tile) and patchify's copy.
    held = (vae.arch.pixel_channels * frames * hh * ww if stacked else 0) + (c * frames * h * w if p > 1 else 0)
    fs = vae.frame_slice
    t = frames if fs is None or frames <= fs else fs
    slices = -(-frames // t)
    pk, cache = _conv(enc.conv_in, c, t, h, w)
    c = enc.conv_in.out_channels
    inner = pk  # peak within one slice (full-rate part), above `held`
    peak = 0  # peak after the full-rate part
    x = c * t * h * w
    split = enc.full_rate_until
    downs = encoder_block_scales(vae)
    for i, b in enumerate(enc.down_blocks):
        if i == split and slices > 1:
            # the slices' outputs: all but the last held while the last one runs, then concatenated
            inner += (slices - 1) * x
            x *= slices
            t *= slices
            peak = max(peak, held + 2 * x)
        pk, ca, c, t = _block(b, c, t, h, w)
        cache += ca
        h2, w2 = h // downs[i], w // downs[i]
        out = c * t * h2 * w2
        h, w = sizes_h[i + 1], sizes_w[i + 1]
        cropped = c * t * h * w
        step = max(x + pk, out + cropped if (h, w) != (h2, w2) else 0)  # block, then the stage crop's copy
        if i < split:
            inner = max(inner, step)
        else:
            peak = max(peak, held + step)
        x = cropped
    peak = max(peak, held + inner)
    return peak * rows, cache * rows


def _back(vae: WanVAE, h: int, w: int, k: int) -> tuple[int, int, int]:
    """(peak elements above its input, cache elements, input channels) of the back on ``k`` latent frames."""
    enc = vae.encoder
    c = enc.conv_out.in_channels
    a = k * h * w
    zd2 = enc.conv_out.out_channels
    peak, cache = 0, 0
    for j, r in enumerate(enc.mid_block.resnets):
        p, ca = _resnet(r, k, h, w)
        peak, cache = max(peak, (c * a if j else 0) + p), cache + ca
    peak = max(peak, 6 * c * a)  # attention: input, norm, qkv (3C), sdpa output
    p, ca = _conv(enc.conv_out, c, k, h, w)
    peak = max(peak, 2 * c * a + p, 2 * zd2 * a)  # conv_out on norm_out's output; quant_conv
    return peak, cache + ca, c


def estimate_exact_encode_memory(
    vae: WanVAE,
    plan: ExactTilePlan,
    *,
    batch_size: int = 1,
    chunk_size: int = 1,
    dtype: torch.dtype = torch.float32,
    atomic_chunks: bool = False,
    order: Order = "frame",
    frames: int | None = None,
    offload_caches: bool = False,
) -> ExactEncodeMemory:
    """Estimated peak bytes of encoding with ``plan`` (weights not included).

    ``order="frame"``: the stream of :func:`iter_encode_tiled` (steady-state chunks of
    ``4*chunk_size`` frames): every tile's front cache (twice with ``atomic_chunks``), the
    back's cache, the pixel chunk, its stitched features, and the larger of the largest front
    call and the back. The one-tile plan estimates :meth:`WanVAE.encode`. ``order="tile"``:
    ``encode_tiled(..., order="tile")`` of ``frames`` pixel frames (required): the whole video,
    every chunk's features and all moments are held; one call's cache at a time, then the back's.
    ``offload_caches`` (frame order) counts device memory with idle tile caches in host memory
    (``iter_encode_tiled(..., offload_caches=True)``): the largest call's front cache instead of every tile's.
    """
    if plan.kind != "encode":
        raise ValueError("estimate_exact_encode_memory needs an encode plan")
    if order not in ("frame", "tile"):
        raise ValueError(f"order must be 'frame' or 'tile', got {order!r}")
    if order == "tile" and (isinstance(frames, bool) or not isinstance(frames, int) or frames < 1):
        raise ValueError(f"order='tile' needs frames (a positive int), got {frames!r}")
    e = torch.empty((), dtype=dtype).element_size()
    b, k, r = batch_size, chunk_size, vae.temporal_ratio
    h, w = plan.grid_hw
    hh, ww = plan.in_hw
    row_sizes = {a.key: a.sizes() for a in plan.rows}
    col_sizes = {a.key: a.sizes() for a in plan.cols}
    call_peak, call_cache, front_cache = 0, 0, 0
    for rk, nr in Counter(a.key for a in plan.rows).items():
        for ck, nc in Counter(a.key for a in plan.cols).items():
            n = nr * nc
            rows = min(n, plan.tile_batch_size)
            p, ca = _front_call(vae, row_sizes[rk], col_sizes[ck], rows * b, k * r, rows > 1)
            call_peak, call_cache = max(call_peak, p), max(call_cache, ca)
            front_cache += ca // rows * n
    back_peak, back_cache, c = _back(vae, h, w, k)
    back_peak, back_cache = b * back_peak, b * back_cache
    pixels = b * vae.arch.pixel_channels * hh * ww
    if order == "tile":
        assert frames is not None
        chunks = 1 + -(-(frames - 1) // (k * r))
        held = pixels * frames + b * c * (1 + (chunks - 1) * k) * h * w + b * 2 * vae.arch.z_dim * (1 + (frames - 1) // r) * h * w
        total = held + max(call_cache + call_peak, back_cache + back_peak)
        return ExactEncodeMemory(*(v * e for v in (call_cache, back_cache, call_peak, back_peak, held, total)), "tile")
    held = pixels * k * r + b * c * k * h * w
    if offload_caches:
        front_cache = call_cache
    # Atomic chunks hold old and new caches until the commit; write-through holds one copy.
    caches = (front_cache + back_cache) * (2 if atomic_chunks else 1)
    total = caches + held + max(call_peak, back_peak)
    return ExactEncodeMemory(*(v * e for v in (front_cache, back_cache, call_peak, back_peak, held, total)))


def _one_tile(vae: WanVAE, video_hw: tuple[int, int], staged: bool) -> ExactTilePlan:
    """The one-tile plan: the untiled encode."""
    return plan_exact_encode(vae, video_hw, TilingConfig(tile_size_px=video_hw, tile_overlap_px=0), tile_batch_size=1, staged=staged)


def _px(hw: tuple[int, int]) -> str:
    return f"{hw[0]}" if hw[0] == hw[1] else f"{hw[0]}x{hw[1]}"


def _owned_px(plan: ExactTilePlan) -> tuple[int, int]:
    """The largest owned tile side of ``plan`` in pixels, (height, width)."""
    s = plan.arch.scale_factor_spatial
    return (max(b - a for a, b in (r.own for r in plan.rows)) * s, max(b - a for a, b in (c.own for c in plan.cols)) * s)


def _encode_estimator(
    vae: WanVAE,
    batch_size: int,
    chunk_size: int,
    dtype: torch.dtype,
    atomic_chunks: bool,
    frames: int | None,
    offload_caches: bool,
) -> Callable[[ExactTilePlan, Order], ExactEncodeMemory]:
    """``estimate(plan, order)``: :func:`estimate_exact_encode_memory` with these settings; cache
    offload counts only where it applies (frame order, more than one tile)."""

    def estimate(plan: ExactTilePlan, order: Order) -> ExactEncodeMemory:
        return estimate_exact_encode_memory(
            vae,
            plan,
            batch_size=batch_size,
            chunk_size=chunk_size,
            dtype=dtype,
            atomic_chunks=atomic_chunks,
            order=order,
            frames=frames,
            offload_caches=offload_caches and order == "frame" and len(plan) > 1,
        )

    return estimate


class SafeEncodePlan(NamedTuple):
    """Result of :func:`plan_exact_encode_safe`."""

    plan: ExactTilePlan
    """The plan to run: the requested tiles, larger ones, or one tile (the untiled encode)."""
    tiling: TilingConfig | None
    """A config that plans ``plan`` again (tile sides as an (h, w) pair); None for one tile."""
    memory: ExactEncodeMemory
    """``plan``'s estimate (for the order asked)."""
    untiled_memory: ExactEncodeMemory
    """The untiled encode's estimate (one tile, frame-major)."""
    message: str | None
    """One line naming the sizes when the requested tiles were enlarged or dropped; None when kept."""

    @property
    def untiled(self) -> bool:
        return len(self.plan) == 1


def plan_exact_encode_safe(
    vae: WanVAE,
    video_hw: tuple[int, int],
    tiling: TilingConfig | None = None,
    *,
    tile_batch_size: int | None = None,
    staged: bool = True,
    max_halo_overhead: float = MAX_ENCODE_HALO_OVERHEAD,
    max_memory_ratio: float = MAX_ENCODE_MEMORY_RATIO,
    order: Order = "frame",
    frames: int | None = None,
    batch_size: int = 1,
    chunk_size: int = 1,
    dtype: torch.dtype = torch.float32,
    atomic_chunks: bool = False,
    offload_caches: bool = False,
) -> SafeEncodePlan:
    """:func:`plan_exact_encode` that never plans a loss: tiles are enlarged (one latent per side
    at a time) until the halo overhead is at most ``max_halo_overhead`` *and* the estimated peak
    (:func:`estimate_exact_encode_memory` for ``order``, ``frames``, ...) is below the untiled
    encode's, by the factor ``max_memory_ratio`` at least; when no tiling qualifies, the one-tile
    plan (the untiled encode) is returned.

    Why: the encoder's halo is wide and its caches cover each tile's crop, so small tiles can
    cost more time *and* memory than no tiling (frame-major, all tiles' caches are alive: at
    small frames that is always so). ``offload_caches`` sizes device memory with idle tile caches
    in host memory (frame order). ``message`` says what was changed.
    """
    if not isinstance(vae, WanVAE) or not vae.has_encoder:
        raise ValueError("plan_exact_encode_safe needs a WanVAE with an encoder")
    if not max_halo_overhead >= 1.0:
        raise ValueError(f"max_halo_overhead must be >= 1, got {max_halo_overhead!r}")
    if not 0 < max_memory_ratio <= 1:
        raise ValueError(f"max_memory_ratio must be in (0, 1], got {max_memory_ratio!r}")
    hw = _positive_pair(video_hw, "video_hw")
    config = TilingConfig() if tiling is None else tiling
    if tile_batch_size is not None:  # in the config, so that `tiling` plans the same calls
        config = dataclasses.replace(config, tile_batch_size=_check_batch(tile_batch_size))

    estimate = _encode_estimator(vae, batch_size, chunk_size, dtype, atomic_chunks, frames, offload_caches)
    plan = plan_exact_encode(vae, hw, config, staged=staged)  # validates everything
    whole = _one_tile(vae, hw, staged)
    untiled = estimate(whole, "frame")
    if len(plan) == 1:
        return SafeEncodePlan(plan, None, untiled, untiled, None)
    s = vae.spatial_ratio
    grid = plan.grid_hw
    (th, tw), _ = _tile_units(config, s)
    th, tw = min(grid[0], th), min(grid[1], tw)
    asked = (th * s, tw * s)
    why = ""
    while True:
        overhead = encode_halo_overhead(plan.rows, plan.cols, hw)
        memory = estimate(plan, order)
        saves = memory.total < untiled.total and memory.total <= max_memory_ratio * untiled.total
        if overhead <= max_halo_overhead and saves:
            break
        if not why:
            reasons = []
            if overhead > max_halo_overhead:
                reasons.append(f"recompute {overhead:.1f}x the frame's pixels (more than {max_halo_overhead:g}x does not pay off)")
            if not saves:
                est = f"{memory.total / 2**20:.1f} vs {untiled.total / 2**20:.1f} MiB untiled, {order}-major"
                if memory.total >= untiled.total:
                    reasons.append(f"need more memory than untiled ({est})")
                else:
                    reasons.append(f"save under {100 * (1 - max_memory_ratio):.0f}% of the untiled memory ({est})")
            why = " and ".join(reasons)
        th, tw = min(grid[0], th + 1), min(grid[1], tw + 1)
        config = dataclasses.replace(config, tile_size_px=(th * s, tw * s))
        plan = plan_exact_encode(vae, hw, config, staged=staged)
        if len(plan) == 1:
            return SafeEncodePlan(
                whole,
                None,
                untiled,
                untiled,
                f"exact tiled encode: {_px(asked)} px tiles would {why}; no larger tiling of the {hw[0]}x{hw[1]} px "
                "frame does better, so it is encoded untiled",
            )
    if not why:
        return SafeEncodePlan(plan, config, memory, untiled, None)
    new = _owned_px(plan)
    return SafeEncodePlan(
        plan,
        config,
        memory,
        untiled,
        f"exact tiled encode: {_px(asked)} px tiles would {why}; enlarged to {_px(new)} px "
        f"({overhead:.2f}x the pixels, an estimated {memory.total / 2**20:.1f} MiB)",
    )


def choose_exact_encode_tiling(
    vae: WanVAE,
    video_hw: tuple[int, int],
    budget_bytes: float,
    dtype: torch.dtype = torch.float32,
    *,
    batch_size: int = 1,
    chunk_size: int = 1,
    staged: bool = True,
    atomic_chunks: bool = False,
    max_tile_batch_size: int | None = None,
    order: Order = "frame",
    frames: int | None = None,
    offload_caches: bool = False,
) -> TilingChoice:
    """Largest square owned tile (px), then the largest tile batch, whose encode estimate fits the budget.

    When the untiled encode's estimate (one tile, frame-major) fits, returns the one-tile
    choice (``tile_size_px`` = the frame's longer side, batch 1): no tiling needed. Otherwise
    every tile size from the frame down to one latent is tried, as :func:`choose_exact_tiling`
    does for decode (``order="tile"`` needs ``frames``); a budget that none fits raises
    ``ValueError`` with the leanest estimate. Frame-major, every tile's cache is alive and the
    halos add to it, so tile-major is usually the order that fits.
    """
    hw = _positive_pair(video_hw, "video_hw")
    check_search_limits(budget_bytes, max_tile_batch_size)
    s = vae.spatial_ratio
    if hw[0] % s or hw[1] % s:
        raise ValueError(f"video height and width must be multiples of {s}, got {hw[0]}x{hw[1]}")
    h, w = hw[0] // s, hw[1] // s

    estimate = _encode_estimator(vae, batch_size, chunk_size, dtype, atomic_chunks, frames, offload_caches)

    def plan_for(tile: int, batch: int) -> ExactTilePlan:
        return plan_exact_encode(vae, hw, TilingConfig(tile_size_px=tile * s, tile_overlap_px=0), tile_batch_size=batch, staged=staged)

    untiled = estimate(_one_tile(vae, hw, staged), "frame")
    if untiled.total <= budget_bytes:
        return TilingChoice(tile_size_px=max(h, w) * s, tile_batch_size=1)
    choice, leanest = search_exact_tilings(
        max(h, w), plan_for, lambda plan: estimate(plan, order), budget_bytes, max_tile_batch_size, skip_one_tile=True
    )
    if choice is not None:
        return TilingChoice(tile_size_px=choice.tile_size_px * s, tile_batch_size=choice.tile_batch_size)
    lean = untiled if leanest is None or leanest[1].total >= untiled.total else leanest[1]
    where = "untiled" if lean is untiled else f"{leanest[0] * s} px tiles ({order}-major)"  # type: ignore[index]
    fixed = "the video, its features and moments" if lean.order == "tile" else "the caches"
    raise ValueError(
        f"no exact tiling of the {hw[0]}x{hw[1]} px encode fits {budget_bytes:.4g} bytes: the leanest ({where}) needs an "
        f"estimated {lean.total:.4g} bytes, {(lean.held if lean.order == 'tile' else lean.front_cache + lean.back_cache):.4g} "
        f"of them for {fixed}, which no tiling removes"
    )
