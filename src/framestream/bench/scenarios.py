"""The benchmark scenarios, their quick/full settings, and the suite runner behind
``python -m framestream.bench`` and ``framestream bench``.

Every scenario runs its cases with :func:`run_alternating` (fresh process per run,
cases alternated), writes ``<results-dir>/<scenario>.json`` (settings, machine, every
run, ratios), and ``RESULTS.md`` is rebuilt from all the JSON files in the folder.
Sizes: ``--quick`` (CPU, minutes), ``full`` on CPU (reduced width, real depth) or on
CUDA (the real Wan 2.1 width, ``base_dim`` 96).
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from framestream.bench import SCENARIO_NAMES, add_arguments
from framestream.bench.harness import Case, CaseSummary, run_alternating
from framestream.bench.report import plot_curve, ratio_table, rebuild_markdown, write_scenario_json

__all__ = ["SCENARIOS", "SETTINGS", "Context", "run_suite", "main"]

CASES = "framestream.bench.cases"

# Sizes. Latent shapes are (B, 16, T, h, w): T latents decode to 1 + 4(T-1) frames of 8h x 8w pixels.
SETTINGS: dict[str, dict[str, Any]] = {
    "quick": {
        "repeats": 2,
        "base_dim": 16,
        "decode_untiled": {"latent_shape": [1, 16, 3, 16, 16]},
        "decode_tiled": {"latent_shape": [1, 16, 3, 20, 20], "tile_px": 96, "overlap_px": 32},
        "encode_tiled": {"video_shape": [1, 3, 5, 160, 160], "tile_px": 96, "overlap_px": 32, "tile_batch_size": 4},
        "stream_memory": {
            "latent_hw": [12, 12], "lengths": [2, 4, 8], "tile_px": 64, "overlap_px": 32,
            "resolutions": [[12, 12], [24, 24]], "resolution_length": 2,
        },
        "roofline": {"latent_shape": [1, 16, 3, 16, 16], "min_seconds": 0.45, "gemm_n": 512, "max_shapes": 5},
        "distributed": {"dit_latent": [5, 16, 16], "dit_heads": 4, "dit_head_dim": 32, "dit_layers": 4, "dit_forwards": 3,
                        "vae_latent": [3, 12, 16], "vae_base_dim": 8, "tile_px": 32},
    },
    "full-cpu": {
        "repeats": 3,
        "base_dim": 32,
        "decode_untiled": {"latent_shape": [1, 16, 5, 32, 32]},
        "decode_tiled": {"latent_shape": [1, 16, 5, 48, 48], "tile_px": 256, "overlap_px": 64},
        "encode_tiled": {"video_shape": [1, 3, 9, 512, 512], "tile_px": 128, "overlap_px": 32, "tile_batch_size": 4},
        "stream_memory": {
            "latent_hw": [48, 48], "lengths": [3, 6, 12], "tile_px": 128, "overlap_px": 32,
            "resolutions": [[32, 32], [48, 48], [64, 64]], "resolution_length": 3,
        },
        "roofline": {"latent_shape": [1, 16, 5, 32, 32], "min_seconds": 2.0, "gemm_n": 1024, "max_shapes": 6},
        "distributed": {"dit_latent": [9, 32, 32], "dit_heads": 8, "dit_head_dim": 32, "dit_layers": 8, "dit_forwards": 3,
                        "vae_latent": [5, 24, 32], "vae_base_dim": 16, "tile_px": 64},
    },
    "full-cuda": {
        "repeats": 5,
        "base_dim": 96,
        "decode_untiled": {"latent_shape": [1, 16, 5, 60, 104]},
        "decode_tiled": {"latent_shape": [1, 16, 9, 90, 160], "tile_px": 256, "overlap_px": 64},
        "encode_tiled": {"video_shape": [1, 3, 33, 720, 1280], "tile_px": 256, "overlap_px": 64, "tile_batch_size": 4},
        "stream_memory": {
            "latent_hw": [60, 104], "lengths": [5, 10, 20], "tile_px": 256, "overlap_px": 64,
            "resolutions": [[60, 104], [90, 160], [135, 240]], "resolution_length": 5,
        },
        "roofline": {"latent_shape": [1, 16, 5, 60, 104], "min_seconds": 2.0, "gemm_n": 8192, "max_shapes": 6},
        "distributed": {"dit_latent": [9, 32, 32], "dit_heads": 8, "dit_head_dim": 32, "dit_layers": 8, "dit_forwards": 3,
                        "vae_latent": [5, 24, 32], "vae_base_dim": 16, "tile_px": 64},
    },
}


@dataclass
class Context:
    """What every scenario gets: mode settings, repeats, where to write, device, threads."""

    mode: str
    repeats: int
    results_dir: Path
    device: str = "auto"
    threads: int | None = None
    timeout: float = 900

    @property
    def settings(self) -> dict[str, Any]:
        return SETTINGS[self.mode]

    @property
    def base_dim(self) -> int:
        return self.settings["base_dim"]

    def run(self, cases: list[Case], reference: str | None = None) -> dict[str, CaseSummary]:
        summaries = run_alternating(cases, self.repeats, reference, threads=self.threads, timeout=self.timeout)
        return {s.name: s for s in summaries}


@dataclass
class ScenarioResult:
    summaries: list[CaseSummary]
    ratios: dict[str, float]
    settings: dict[str, Any]
    notes: list[str] = field(default_factory=list)


def _t(s: CaseSummary) -> float:
    return s.median_seconds


def _m(s: CaseSummary) -> float:
    return max(s.median_peak_bytes, 1.0)  # never divide by zero for a case that allocated nothing measurable


def _plan_info(ctx: Context, kind: str, hw: list[int], tile_px: int, overlap_px: int, batch: int = 1) -> dict[str, int]:
    """Tiles, shape groups and calls per chunk of framestream's exact plan (built on the meta device)."""
    import torch

    from framestream.bench.cases import arch_for, tiling_config
    from framestream.models.wan.vae import WanVAE
    from framestream.tiling.wan_exact import plan_exact_decode, plan_exact_encode

    with torch.device("meta"):
        vae = WanVAE(arch_for(ctx.base_dim))
    planner = plan_exact_decode if kind == "decode" else plan_exact_encode
    plan = planner(vae, tuple(hw), tiling_config(tile_px, overlap_px, batch))
    return {"tiles": len(plan), "shape_groups": plan.num_groups, "calls_per_chunk": len(plan.batches)}


def _common(ctx: Context, **params: Any) -> dict[str, Any]:
    return {"base_dim": ctx.base_dim, "device": ctx.device, **params}


# ---------------------------------------------------------------------------- scenarios
def decode_untiled(ctx: Context) -> ScenarioResult:
    cfg = ctx.settings["decode_untiled"]
    p = _common(ctx, latent_shape=cfg["latent_shape"])
    s = ctx.run(
        [Case("framestream", f"{CASES}:decode_framestream", p), Case("diffusers", f"{CASES}:decode_diffusers", p)],
        reference="diffusers",
    )
    ratios = {
        "time diffusers / framestream": _t(s["diffusers"]) / _t(s["framestream"]),
        "peak memory diffusers / framestream": _m(s["diffusers"]) / _m(s["framestream"]),
    }
    return ScenarioResult(list(s.values()), ratios, p, ["error column: against diffusers' untiled fp32 decode"])


def decode_tiled(ctx: Context) -> ScenarioResult:
    cfg = ctx.settings["decode_tiled"]
    p = _common(ctx, latent_shape=cfg["latent_shape"])
    tile = {"tile_px": cfg["tile_px"], "overlap_px": cfg["overlap_px"]}
    # The smaller tile size users pick (128 px, 32 px blend for diffusers): the memory target holds at both.
    small = {"tile_px": cfg["tile_px"] // 2, "overlap_px": cfg["overlap_px"] // 2}
    s = ctx.run(
        [
            Case("framestream_untiled", f"{CASES}:decode_framestream", p),
            Case("framestream_tiled", f"{CASES}:decode_framestream_tiled", {**p, **tile}),
            Case("framestream_tiled_tile_major", f"{CASES}:decode_framestream_tiled", {**p, **tile, "order": "tile"}),
            Case("diffusers_tiled", f"{CASES}:decode_diffusers", {**p, **tile}),
            Case("framestream_tiled_tile_major_small", f"{CASES}:decode_framestream_tiled", {**p, **small, "order": "tile"}),
            Case("diffusers_tiled_small", f"{CASES}:decode_diffusers", {**p, **small}),
        ],
        reference="framestream_untiled",
    )
    ft, dt, fu = s["framestream_tiled"], s["diffusers_tiled"], s["framestream_untiled"]
    tm = s["framestream_tiled_tile_major"]
    tms, dts = s["framestream_tiled_tile_major_small"], s["diffusers_tiled_small"]
    ratios = {
        "time diffusers_tiled / framestream_tiled": _t(dt) / _t(ft),
        "peak memory diffusers_tiled / framestream_tiled": _m(dt) / _m(ft),
        "time framestream_tiled / framestream_untiled": _t(ft) / _t(fu),
        "peak memory framestream_tiled / framestream_untiled": _m(ft) / _m(fu),
        "time diffusers_tiled / framestream_tiled_tile_major": _t(dt) / _t(tm),
        "peak memory diffusers_tiled / framestream_tiled_tile_major": _m(dt) / _m(tm),
        "peak memory framestream_tiled / framestream_tiled_tile_major": _m(ft) / _m(tm),
        "peak memory framestream_tiled_tile_major / diffusers_tiled": _m(tm) / _m(dt),
        "peak memory framestream_tiled_tile_major_small / diffusers_tiled_small": _m(tms) / _m(dts),
        "time diffusers_tiled_small / framestream_tiled_tile_major_small": _t(dts) / _t(tms),
    }
    stride = cfg["tile_px"] - cfg["overlap_px"]
    plan = _plan_info(ctx, "decode", cfg["latent_shape"][3:], cfg["tile_px"], cfg["overlap_px"])
    notes = [
        f"tiles {cfg['tile_px']} px; diffusers: tile_sample_min_height/width {cfg['tile_px']}, "
        f"tile_sample_stride_height/width {stride} (overlap {cfg['overlap_px']} px, blended); framestream: "
        f"{cfg['tile_px']} px owned per tile plus the derived halo (overlap setting ignored), plan {plan}; "
        "framestream_tiled_tile_major: decode_tiled(order='tile'), same plan, tiles in the outer loop",
        f"*_small: the same at {small['tile_px']} px tiles (diffusers: {small['overlap_px']} px blend)",
        "error column: against framestream's untiled fp32 decode",
    ]
    settings = {**p, **tile, "diffusers_stride_px": stride, "framestream_plan": plan}
    return ScenarioResult(list(s.values()), ratios, settings, notes)


def encode_tiled(ctx: Context) -> ScenarioResult:
    cfg = ctx.settings["encode_tiled"]
    p = _common(ctx, video_shape=cfg["video_shape"])
    tile = {"tile_px": cfg["tile_px"], "overlap_px": cfg["overlap_px"]}
    nb = cfg["tile_batch_size"]
    batched, single = f"framestream_tiled_b{nb}", "framestream_tiled_b1"
    s = ctx.run(
        [
            Case("framestream_untiled", f"{CASES}:encode_framestream", p),
            Case(batched, f"{CASES}:encode_framestream_tiled", {**p, **tile, "tile_batch_size": nb}),
            Case(single, f"{CASES}:encode_framestream_tiled", {**p, **tile, "tile_batch_size": 1}),
            Case(
                "framestream_tiled_tile_major",
                f"{CASES}:encode_framestream_tiled",
                {**p, **tile, "tile_batch_size": 1, "order": "tile"},
            ),
            Case(
                "framestream_tiled_tile_major_safe",
                f"{CASES}:encode_framestream_tiled",
                {**p, **tile, "tile_batch_size": 1, "order": "tile", "safe": True},
            ),
            Case("diffusers_tiled", f"{CASES}:encode_diffusers", {**p, **tile}),
        ],
        reference="framestream_untiled",
    )
    tm, safe = s["framestream_tiled_tile_major"], s["framestream_tiled_tile_major_safe"]
    ratios = {
        f"time {single} / {batched}": _t(s[single]) / _t(s[batched]),
        f"peak memory {batched} / {single}": _m(s[batched]) / _m(s[single]),
        f"time diffusers_tiled / {batched}": _t(s["diffusers_tiled"]) / _t(s[batched]),
        f"peak memory diffusers_tiled / {batched}": _m(s["diffusers_tiled"]) / _m(s[batched]),
        "time diffusers_tiled / framestream_tiled_tile_major": _t(s["diffusers_tiled"]) / _t(tm),
        "peak memory diffusers_tiled / framestream_tiled_tile_major": _m(s["diffusers_tiled"]) / _m(tm),
        "peak memory framestream_tiled_tile_major / framestream_untiled": _m(tm) / _m(s["framestream_untiled"]),
        "peak memory framestream_tiled_tile_major_safe / framestream_untiled": _m(safe) / _m(s["framestream_untiled"]),
        "time framestream_tiled_tile_major_safe / framestream_untiled": _t(safe) / _t(s["framestream_untiled"]),
    }
    hw = cfg["video_shape"][3:]
    plans = {f"b{b}": _plan_info(ctx, "encode", hw, cfg["tile_px"], cfg["overlap_px"], b) for b in (nb, 1)}
    notes = [
        "outputs: posterior mean (un-normalised); error column: against framestream's untiled fp32 encode",
        f"framestream plans: {plans} (only same-shape tiles share a call; edge tiles differ in crop)",
        f"diffusers: tile_sample_min {cfg['tile_px']} px, stride {cfg['tile_px'] - cfg['overlap_px']} px",
        "framestream_tiled_tile_major: batch 1; *_safe: the plan plan_exact_encode_safe makes of the same request "
        "(what the pipeline and the CLI run: tiles enlarged until they save memory at a bounded halo cost)",
    ]
    settings = {**p, **tile, "tile_batch_size": nb, "framestream_plans": plans}
    return ScenarioResult(list(s.values()), ratios, settings, notes)


def stream_memory(ctx: Context) -> ScenarioResult:
    cfg = ctx.settings["stream_memory"]
    tile = {"tile_px": cfg["tile_px"], "overlap_px": cfg["overlap_px"]}
    h, w = cfg["latent_hw"]

    def frames(t: int) -> int:
        return 1 + 4 * (t - 1)

    cases = []
    for t in cfg["lengths"]:
        p = _common(ctx, latent_shape=[1, 16, t, h, w])
        cases += [
            Case(f"framestream_stream_T{t}", f"{CASES}:stream_decode_framestream", {**p, **tile}),
            Case(f"diffusers_T{t}", f"{CASES}:decode_diffusers", p),
        ]
    rt = cfg["resolution_length"]
    for rh, rw in cfg["resolutions"]:
        p = _common(ctx, latent_shape=[1, 16, rt, rh, rw])
        if [rh, rw] != [h, w] or rt not in cfg["lengths"]:
            cases += [
                Case(f"framestream_stream_{8 * rh}x{8 * rw}", f"{CASES}:stream_decode_framestream", {**p, **tile}),
                Case(f"diffusers_{8 * rh}x{8 * rw}", f"{CASES}:decode_diffusers", p),
            ]
    s = ctx.run(cases)

    def by_res(prefix: str, rh: int, rw: int) -> CaseSummary:
        if [rh, rw] == [h, w] and rt in cfg["lengths"]:
            return s[f"{prefix}_T{rt}" if prefix == "diffusers" else f"{prefix}_stream_T{rt}"]
        return s[f"{prefix}_{8 * rh}x{8 * rw}" if prefix == "diffusers" else f"{prefix}_stream_{8 * rh}x{8 * rw}"]

    lengths = cfg["lengths"]
    xs = [frames(t) for t in lengths]
    fs = [s[f"framestream_stream_T{t}"] for t in lengths]
    df = [s[f"diffusers_T{t}"] for t in lengths]
    mib = lambda items: [x.median_peak_bytes / 2**20 for x in items]  # noqa: E731
    ctx.results_dir.mkdir(parents=True, exist_ok=True)
    plot_curve(
        ctx.results_dir / "stream_memory_vs_length.png",
        f"Peak memory vs video length ({8 * h}x{8 * w}, base_dim {ctx.base_dim})",
        "decoded frames",
        "peak memory growth (MiB)",
        {"framestream streaming tiled": (xs, mib(fs)), "diffusers decode": (xs, mib(df))},
    )
    res_x = [8 * rh * 8 * rw / 1e6 for rh, rw in cfg["resolutions"]]
    fr = [by_res("framestream", rh, rw) for rh, rw in cfg["resolutions"]]
    dr = [by_res("diffusers", rh, rw) for rh, rw in cfg["resolutions"]]
    plot_curve(
        ctx.results_dir / "stream_time_vs_resolution.png",
        f"Decode time vs resolution ({frames(rt)} frames, base_dim {ctx.base_dim})",
        "megapixels per frame",
        "wall time (s)",
        {"framestream streaming tiled": (res_x, [x.median_seconds for x in fr]), "diffusers decode": (res_x, [x.median_seconds for x in dr])},
    )
    ratios = {
        f"framestream peak memory T{lengths[-1]} / T{lengths[0]}": _m(fs[-1]) / _m(fs[0]),
        f"diffusers peak memory T{lengths[-1]} / T{lengths[0]}": _m(df[-1]) / _m(df[0]),
        f"peak memory diffusers / framestream at T{lengths[-1]}": _m(df[-1]) / _m(fs[-1]),
        f"time to first frame diffusers / framestream at T{lengths[-1]}": df[-1].extra["time_to_first_frame_s"]
        / fs[-1].extra["time_to_first_frame_s"],
    }
    settings = {**_common(ctx), **tile, "latent_hw": [h, w], "lengths_latent": lengths, "frames": xs,
                "resolutions_latent": cfg["resolutions"], "resolution_length_latent": rt}
    notes = [
        "framestream streams exact tiled chunks (converted to uint8 and dropped); diffusers returns the whole video",
        "plots: stream_memory_vs_length.png, stream_time_vs_resolution.png",
    ]
    return ScenarioResult(list(s.values()), ratios, settings, notes)


def roofline(ctx: Context) -> ScenarioResult:
    from framestream.bench.cases import arch_for
    from framestream.bench.roofline import conv_shapes, decoder_flop_count

    cfg = ctx.settings["roofline"]
    shape = cfg["latent_shape"]
    count = decoder_flop_count(arch_for(ctx.base_dim), tuple(shape), chunk_size=1)
    picked = conv_shapes(count, limit=cfg["max_shapes"])
    shape_params = [
        {"in_channels": c.in_channels, "out_channels": c.out_channels, "kernel": list(c.kernel), "input_thw": list(c.input_thw), "batch": c.batch}
        for c in picked
    ]
    p = _common(ctx, latent_shape=shape)
    s = ctx.run(
        [
            Case("framestream_decode", f"{CASES}:decode_framestream", p),
            Case("conv3d_throughput", f"{CASES}:conv3d_throughput", {"shapes": shape_params, "min_seconds": cfg["min_seconds"], "device": ctx.device}),
            Case("gemm_throughput", f"{CASES}:gemm_throughput", {"n": cfg["gemm_n"], "min_seconds": cfg["min_seconds"], "device": ctx.device}),
        ]
    )
    # Per shape: the median over runs of its measured rate.
    runs = [r["conv3d_flops_per_s"] for r in s["conv3d_throughput"].extra_runs]
    rates = [statistics.median(r[i] for r in runs) for i in range(len(picked))]
    weighted = sum(c.flops for c in picked) / sum(c.flops / r for c, r in zip(picked, rates))
    gemm = s["gemm_throughput"].extra["gemm_flops_per_s"]
    achieved = count.total / _t(s["framestream_decode"])
    ratios = {
        "decoder MFLOP per output pixel": count.per_output_pixel / 1e6,
        "achieved decode GFLOP/s": achieved / 1e9,
        "conv3d GFLOP/s (FLOP-weighted over the decoder's 3x3x3 shapes)": weighted / 1e9,
        "GEMM GFLOP/s": gemm / 1e9,
        "best conv3d GFLOP/s (fastest of those shapes)": max(rates) / 1e9,
        "fraction of conv3d throughput": achieved / weighted,
        "fraction of best conv3d throughput": achieved / max(rates),
        "fraction of GEMM throughput": achieved / gemm,
    }
    conv_table = [
        {**sp, "share_of_decoder_flops": c.flops / count.total, "gflops_per_s": r / 1e9}
        for sp, c, r in zip(shape_params, picked, rates)
    ]
    settings = {
        **p,
        "chunk_size": 1,
        "decoder_total_flops": count.total,
        "output_pixels": count.output_pixels,
        "flops_by_kind": dict(count.by_kind),
        "conv3d_shapes": conv_table,
        "gemm_n": cfg["gemm_n"],
    }
    covered = sum(c.flops for c in picked) / count.total
    notes = [
        f"FLOPs counted from layer shapes (see framestream/bench/roofline.py); the {len(picked)} timed conv3d "
        f"shapes carry {covered:.0%} of the decoder's FLOPs",
        "fraction of conv3d throughput = achieved / FLOP-weighted rate of those shapes (the rest of the FLOPs, "
        "mostly per-frame 2D convs and wider 3D convs, usually run faster, so this can exceed 1); "
        "fraction of best = achieved / the fastest of them",
        "conv3d shapes (C_in->C_out, padded T x H x W: GFLOP/s): "
        + ", ".join(f"{c['in_channels']}->{c['out_channels']} {'x'.join(map(str, c['input_thw']))}: {c['gflops_per_s']:.1f}" for c in conv_table),
    ]
    return ScenarioResult(list(s.values()), ratios, settings, notes)


def distributed(ctx: Context) -> ScenarioResult:
    """1 vs 2 CPU ranks (gloo): DiT step and tile-parallel decode; see :mod:`framestream.bench.distributed`."""
    from framestream.bench.distributed import run_distributed_scenario

    return ScenarioResult(*run_distributed_scenario(ctx.settings["distributed"], ctx.repeats))


SCENARIOS: dict[str, Callable[[Context], ScenarioResult]] = {
    "decode_untiled": decode_untiled,
    "decode_tiled": decode_tiled,
    "encode_tiled": encode_tiled,
    "stream_memory": stream_memory,
    "roofline": roofline,
    "distributed": distributed,
}

from framestream.bench.ltx2_scenarios import LTX2_SETTINGS, ltx2_decode_tiled, ltx2_encode_tiled  # noqa: E402

SCENARIOS.update(ltx2_decode_tiled=ltx2_decode_tiled, ltx2_encode_tiled=ltx2_encode_tiled)
for _mode_name, _extra in LTX2_SETTINGS.items():
    SETTINGS[_mode_name].update(_extra)
assert tuple(SCENARIOS) == SCENARIO_NAMES, "keep framestream.bench.SCENARIO_NAMES in step with SCENARIOS"


# ---------------------------------------------------------------------------- runner
def _mode(args: argparse.Namespace) -> str:
    if args.quick:
        return "quick"
    import torch

    cuda = args.device == "cuda" or (args.device == "auto" and torch.cuda.is_available())
    return "full-cuda" if cuda else "full-cpu"


def run_suite(args: argparse.Namespace) -> int:
    mode = _mode(args)
    repeats = args.repeats or SETTINGS[mode]["repeats"]
    if repeats < 1:
        raise ValueError(f"--repeats must be >= 1, got {repeats}")
    results_dir = args.results_dir or (Path("bench/results/quick") if args.quick else Path("bench/results"))
    ctx = Context(mode, repeats, results_dir, args.device, args.threads, args.timeout)
    names = args.scenario or list(SCENARIOS)
    start = time.perf_counter()
    done: dict[str, dict[str, float]] = {}
    failed: list[str] = []
    for name in dict.fromkeys(names):
        print(f"== {name} ({mode}, {repeats} repeats)", flush=True)
        t0 = time.perf_counter()
        try:
            result = SCENARIOS[name](ctx)
        except Exception as err:  # one broken scenario must not lose the others' results
            print(f"!! {name} failed: {err}", file=sys.stderr, flush=True)
            failed.append(name)
            continue
        settings = {"mode": mode, "repeats": repeats, "threads": args.threads, **result.settings,
                    "scenario_wall_s": round(time.perf_counter() - t0, 1)}
        write_scenario_json(results_dir, name, result.summaries, settings, result.ratios, result.notes)
        done[name] = result.ratios
    total = time.perf_counter() - start
    if done:
        rebuild_markdown(results_dir, list(SCENARIOS))
        print()
        print(ratio_table(done))
    print(f"\nsuite wall time {total:.0f} s; results in {results_dir}/ (RESULTS.md, <scenario>.json, PNGs)")
    if failed:
        print(f"failed scenarios: {', '.join(failed)}", file=sys.stderr)
        return 1
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m framestream.bench", description=__doc__,
                                     formatter_class=argparse.RawDescriptionHelpFormatter)
    add_arguments(parser)
    return run_suite(parser.parse_args(argv))
