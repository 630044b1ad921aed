"""LTX-2 scenarios: exact tiled decode / encode against diffusers' ``AutoencoderKLLTX2Video`` with ``enable_tiling()``.

Registered in :data:`framestream.bench.scenarios.SCENARIOS`. Widths are the published LTX-2
VAE's divided by ``divisor`` (real depth and layout); the reference is framestream's untiled
fp32 output (identical to diffusers' untiled output to ~1e-6, see tests/test_ltx2_vae.py).
"""

from __future__ import annotations

from typing import Any

from framestream.bench.harness import Case

__all__ = ["LTX2_SETTINGS", "ltx2_decode_tiled", "ltx2_encode_tiled"]

CASES = "framestream.bench.ltx2_cases"

LTX2_SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "ltx2_decode_tiled": {"divisor": 32, "latent_shape": [1, 4, 2, 16, 16], "tile_px": 256, "overlap_px": 64, "tile_batch_size": 4},
        "ltx2_encode_tiled": {"divisor": 32, "video_shape": [1, 3, 9, 512, 512], "tile_px": 256, "overlap_px": 64, "tile_batch_size": 4},
    },
    "full-cpu": {
        "ltx2_decode_tiled": {"divisor": 16, "latent_shape": [1, 8, 2, 24, 24], "tile_px": 384, "overlap_px": 64, "tile_batch_size": 4},
        "ltx2_encode_tiled": {"divisor": 16, "video_shape": [1, 3, 9, 768, 768], "tile_px": 384, "overlap_px": 64, "tile_batch_size": 4},
    },
    "full-cuda": {
        "ltx2_decode_tiled": {"divisor": 1, "latent_shape": [1, 128, 4, 68, 120], "tile_px": 512, "overlap_px": 64, "tile_batch_size": 4},
        "ltx2_encode_tiled": {"divisor": 1, "video_shape": [1, 3, 25, 1088, 1920], "tile_px": 512, "overlap_px": 128, "tile_batch_size": 8},
    },
}


def _plan(divisor: int, kind: str, shape: list[int], tile_px: int, overlap_px: int, batch: int) -> dict[str, int]:
    import torch

    from framestream.bench.ltx2_cases import ltx2_arch
    from framestream.models.ltx2.vae import LTX2VAE
    from framestream.tiling import TilingConfig, plan_ltx2_decode, plan_ltx2_encode

    with torch.device("meta"):
        vae = LTX2VAE(ltx2_arch(divisor))
    planner = plan_ltx2_decode if kind == "decode" else plan_ltx2_encode
    plan = planner(vae, tuple(shape), TilingConfig(tile_size_px=tile_px, tile_overlap_px=overlap_px, tile_batch_size=batch))
    return {"tiles": len(plan), "calls": plan.calls}


def _run(ctx, kind: str):
    from framestream.bench.scenarios import ScenarioResult, _m, _t

    cfg = ctx.settings[f"ltx2_{kind}_tiled"]
    shape_key = "latent_shape" if kind == "decode" else "video_shape"
    p = {"divisor": cfg["divisor"], shape_key: cfg[shape_key], "device": ctx.device}
    tile = {"tile_px": cfg["tile_px"], "overlap_px": cfg["overlap_px"]}
    batch = cfg["tile_batch_size"]
    s = ctx.run(
        [
            Case("framestream_untiled", f"{CASES}:ltx2_{kind}_framestream", p),
            Case("framestream_tiled", f"{CASES}:ltx2_{kind}_framestream_tiled", {**p, **tile, "tile_batch_size": batch}),
            Case("diffusers_tiled", f"{CASES}:ltx2_{kind}_diffusers", {**p, **tile}),
        ],
        reference="framestream_untiled",
    )
    ft, dt, fu = s["framestream_tiled"], s["diffusers_tiled"], s["framestream_untiled"]
    ratios = {
        "time diffusers_tiled / framestream_tiled": _t(dt) / _t(ft),
        "peak memory diffusers_tiled / framestream_tiled": _m(dt) / _m(ft),
        "time framestream_tiled / framestream_untiled": _t(ft) / _t(fu),
        "peak memory framestream_tiled / framestream_untiled": _m(ft) / _m(fu),
    }
    plan = _plan(cfg["divisor"], kind, cfg[shape_key][2:], cfg["tile_px"], cfg["overlap_px"], batch)
    notes = [
        f"LTX-2 VAE, widths / {cfg['divisor']}, real depth and layout; {kind} of {cfg[shape_key]}",
        f"diffusers: enable_tiling(tile_sample_min {cfg['tile_px']} px, stride {cfg['tile_px'] - cfg['overlap_px']} px), blended; "
        f"framestream: {cfg['tile_px']} px owned per tile plus the derived halo, tile_batch_size {batch}, plan {plan}",
        f"error column: against framestream's untiled fp32 {kind}",
    ]
    return ScenarioResult(list(s.values()), ratios, {**p, **tile, "tile_batch_size": batch, "framestream_plan": plan}, notes)


def ltx2_decode_tiled(ctx) -> Any:
    """Exact tiled decode vs diffusers' tiled decode vs untiled."""
    return _run(ctx, "decode")


def ltx2_encode_tiled(ctx) -> Any:
    """Exact tiled encode vs diffusers' tiled encode vs untiled."""
    return _run(ctx, "encode")
