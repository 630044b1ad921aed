"""Tile settings of a job: ``--tile-size auto`` from a memory budget, and a warning when halos cost too much.

The exact tiler (:mod:`framestream.tiling.wan_exact`) recomputes a context halo around
every tile; small tiles spend most of their work on halos (a 72 px tile on a 248x256
clip decodes 4x slower than no tiling). :func:`tiling_work_ratio` measures that from
the plan, and :func:`halo_warning` words it.
"""

from __future__ import annotations

from typing import Any

import torch

from framestream.tiling.budget import TilingChoice
from framestream.tiling.planner import TilingConfig

__all__ = [
    "HALO_WARNING_RATIO",
    "auto_decode_tiling",
    "auto_encode_tiling",
    "default_memory_budget",
    "halo_warning",
    "safe_encode_tiling",
    "tiling_work_ratio",
]

HALO_WARNING_RATIO = 2.0
"""Warn when the tiled job computes at least this many times the cells of an untiled one."""
CPU_MEMORY_BUDGET = 8 * 1024**3


def default_memory_budget(device: torch.device) -> int:
    """``--memory-budget`` default: 90% of the free memory of a CUDA device, else 8 GiB."""
    if device.type == "cuda":
        free, _ = torch.cuda.mem_get_info(device)
        return int(free * 0.9)
    return CPU_MEMORY_BUDGET


def tiling_work_ratio(plan: Any, whole: Any) -> float:
    """Cells computed by ``plan``'s tiles over those of the one-tile plan ``whole``, averaged over stages.

    Each stage (the input and every block's output) counts alike: in the Wan VAE the
    channels shrink as the resolution grows, so every stage costs about the same.
    """
    ratios = []
    for k in range(len(whole.rows[0].sizes())):
        full = whole.rows[0].sizes()[k] * whole.cols[0].sizes()[k]
        tiled = sum(r.sizes()[k] for r in plan.rows) * sum(c.sizes()[k] for c in plan.cols)
        ratios.append(tiled / full)
    return sum(ratios) / len(ratios)


def halo_warning(vae: Any, kind: str, size_hw: tuple[int, int], tiling: TilingConfig | None) -> str | None:
    """A one-line warning when ``tiling`` makes a ``kind`` (``"decode"``/``"encode"``) job do much more work.

    ``size_hw``: latent cells for decode, pixels for encode. ``None`` when the halo costs
    less than :data:`HALO_WARNING_RATIO` (or without tiling).
    """
    if tiling is None:
        return None
    from framestream.models.ltx2.vae import LTX2VAE

    if isinstance(vae, LTX2VAE):
        return _ltx2_halo_warning(vae, kind, size_hw, tiling)
    from framestream.tiling import wan_exact

    plan_for = wan_exact.plan_exact_decode if kind == "decode" else wan_exact.plan_exact_encode
    s = vae.arch.scale_factor_spatial
    px = max(size_hw) * (s if kind == "decode" else 1)
    whole = plan_for(vae, size_hw, TilingConfig(tile_size_px=px, tile_overlap_px=0))
    plan = plan_for(vae, size_hw, tiling)
    if len(plan) <= 1:
        return None
    ratio = tiling_work_ratio(plan, whole)
    if ratio < HALO_WARNING_RATIO:
        return None
    halo = max(max(a.halo) for a in (*plan.rows, *plan.cols)) * (s if kind == "decode" else 1)
    return (
        f"--tile-size {tiling.tile_size_px}: every tile recomputes a halo of up to {halo} px, so this {kind} does about "
        f"{ratio:.1f}x the work of an untiled one; a larger --tile-size is faster"
        + (" (--tile-size auto picks the largest that fits --memory-budget)" if kind == "decode" else "")
    )


def _ltx2_halo_warning(vae: Any, kind: str, size_hw: tuple[int, int], tiling: TilingConfig) -> str | None:
    """:func:`halo_warning` for the LTX-2 VAE (whole encoder/decoder tiled; halos up to ~700 px at the real depth)."""
    from framestream.tiling.ltx2_exact import plan_ltx2_decode, plan_ltx2_encode

    s = vae.spatial_ratio
    shape = (2, *size_hw) if kind == "decode" else (1 + vae.temporal_ratio, *size_hw)
    planner = plan_ltx2_decode if kind == "decode" else plan_ltx2_encode
    px = max(size_hw) * (s if kind == "decode" else 1)
    whole = planner(vae, shape, TilingConfig(tile_size_px=px, tile_overlap_px=0))
    plan = planner(vae, shape, tiling)
    if len(plan.rows) * len(plan.cols) <= 1:
        return None

    def sizes(a: Any) -> tuple[int, ...]:
        return (a.window[1] - a.window[0], *(n for _, n in a.crops))

    stages = len(sizes(whole.rows[0]))
    ratio = sum(
        sum(sizes(r)[k] for r in plan.rows) * sum(sizes(c)[k] for c in plan.cols) / (sizes(whole.rows[0])[k] * sizes(whole.cols[0])[k])
        for k in range(stages)
    ) / stages
    if ratio < HALO_WARNING_RATIO:
        return None
    return (
        f"--tile-size {tiling.tile_size_px}: every LTX-2 tile recomputes its halo (the receptive field reaches hundreds "
        f"of px at the real depth), so this {kind} does about {ratio:.1f}x the work of an untiled one; a larger --tile-size is faster"
    )


def _tiling_for(choice: TilingChoice, frame_side_px: int) -> TilingConfig | None:
    """The config of a budget search's ``TilingChoice``; None when one tile covers the frame (no tiling needed)."""
    if choice.tile_size_px >= frame_side_px and choice.tile_batch_size == 1:
        return None
    return TilingConfig(tile_size_px=choice.tile_size_px, tile_overlap_px=0, tile_batch_size=choice.tile_batch_size)


def auto_decode_tiling(
    vae: Any,
    latent_shape: tuple[int, ...],
    budget_bytes: int,
    *,
    dtype: torch.dtype,
    chunk_size: int,
    order: str = "frame",
    offload_caches: bool = False,
) -> TilingConfig | None:
    """The largest exact tile (then tile batch) whose estimated peak fits ``budget_bytes``; ``None``: untiled fits.

    Uses :func:`framestream.tiling.wan_budget.choose_exact_tiling`; a budget that no tiling
    fits raises ``ValueError`` with the leanest estimate.
    """
    from framestream.tiling.wan_budget import choose_exact_tiling

    h, w = latent_shape[3], latent_shape[4]
    try:
        choice = choose_exact_tiling(
            vae,
            (h, w),
            budget_bytes,
            dtype,
            chunk_size=chunk_size,
            order=order,
            latent_frames=latent_shape[2] if order == "tile" else None,
            out_dtype=torch.uint8 if order == "tile" else None,
            offload_caches=offload_caches,
        )
    except ValueError as err:
        raise ValueError(f"--memory-budget: {err}; raise the budget or lower --chunk") from None
    return _tiling_for(choice, max(h, w) * vae.arch.scale_factor_spatial)


def auto_encode_tiling(
    vae: Any,
    size_hw: tuple[int, int],
    frames: int,
    budget_bytes: int,
    *,
    dtype: torch.dtype,
    chunk_size: int,
    order: str = "frame",
) -> TilingConfig | None:
    """The largest exact encode tile (then tile batch) whose estimated peak fits ``budget_bytes``; ``None``: untiled fits.

    ``size_hw``: the pixels given to the VAE; ``frames``: how many (the tile-major order holds
    them all). Uses :func:`framestream.tiling.wan_encode_budget.choose_exact_encode_tiling`; a
    budget that no tiling fits raises ``ValueError`` with the leanest estimate.
    """
    from framestream.tiling.wan_encode_budget import choose_exact_encode_tiling

    try:
        choice = choose_exact_encode_tiling(
            vae, size_hw, budget_bytes, dtype, chunk_size=chunk_size, order=order, frames=frames if order == "tile" else None
        )
    except ValueError as err:
        hint = " or use --tile-order tile" if order == "frame" else ""
        raise ValueError(f"--memory-budget: {err}; raise the budget{hint} or lower --chunk") from None
    return _tiling_for(choice, max(size_hw))


def safe_encode_tiling(
    vae: Any,
    size_hw: tuple[int, int],
    frames: int,
    tiling: TilingConfig | None,
    *,
    dtype: torch.dtype,
    chunk_size: int,
    order: str = "frame",
) -> tuple[TilingConfig | None, str | None]:
    """Wan encode tiles that are never a loss: ``(tiling to run, warning line or None)``.

    :func:`framestream.tiling.wan_encode_budget.plan_exact_encode_safe` (default caps) enlarges
    tiles that recompute too much or whose estimated peak is not clearly below the untiled
    encode's; ``None`` when no tiling qualifies (encode untiled). LTX-2 tiling and
    ``tiling=None`` pass through.
    """
    if tiling is None:
        return None, None
    from framestream.models.ltx2.vae import LTX2VAE

    if isinstance(vae, LTX2VAE):
        return tiling, None
    from framestream.tiling.wan_encode_budget import plan_exact_encode_safe

    safe = plan_exact_encode_safe(
        vae, size_hw, tiling, order="tile" if order == "tile" else "frame", frames=frames, chunk_size=chunk_size, dtype=dtype
    )
    return safe.tiling, safe.message
