"""``framestream bench --scenario distributed``: 1 vs 2 CPU ranks (gloo) for the DiT and the tile-parallel VAE.

Every repeat spawns a 1-rank and a 2-rank local group (alternated) that run the same
work: DiT forwards (one process; two ranks under Ulysses and under ring) and a
tile-parallel exact decode (head on every rank, and on rank 0 + broadcast). Each rank
reports its wall time, its bytes sent (the counters of :mod:`framestream.distributed.comm`)
and its share of the tile cost; the scenario checks the bytes against the formulas of
:mod:`framestream.distributed.costs` (the README's table).

Honest caveat, printed with the results: here both ranks share one 2-core CPU (and the
1-rank run may use both cores), so wall times say nothing about GPU scaling; the byte
counts and the work split are what carry over.
"""

from __future__ import annotations

import statistics
import time
from typing import Any

import torch

__all__ = ["run_distributed_scenario", "bench_worker"]

def _arch(s: dict[str, Any]):
    from framestream.models.wan.transformer.config import WanTransformerArchConfig

    return WanTransformerArchConfig(
        num_attention_heads=s["dit_heads"], attention_head_dim=s["dit_head_dim"], text_dim=32, freq_dim=32,
        ffn_dim=4 * s["dit_heads"] * s["dit_head_dim"], num_layers=s["dit_layers"],
    )


def _dit(world, s: dict[str, Any], mode: str | None) -> dict[str, Any]:
    from framestream.distributed.config import ParallelConfig
    from framestream.distributed.wan_dit import attach_wan_parallel
    from framestream.models.wan.transformer.config import WanTransformerConfig

    f, h, w = s["dit_latent"]
    model = WanTransformerConfig(
        arch=_arch(s), allow_random_init=True, dtype=torch.float32, num_frames=f, height=h, width=w
    ).setup().eval()
    runtime = ParallelConfig(mode=mode or "ulysses").setup(world=world)
    attach_wan_parallel(model, runtime)
    cache = model.initialize_autoregressive_cache(text_embeddings=torch.randn(1, 16, 32, generator=torch.Generator().manual_seed(0)))
    latent = torch.randn(model.latent_shape, generator=torch.Generator().manual_seed(1))
    t = torch.tensor(500.0)
    model.predict_flow(latent, t, cache)  # warm-up
    runtime.stats.reset()
    world.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in range(s["dit_forwards"]):
        model.predict_flow(latent, t, cache)
    seconds = (time.perf_counter() - start) / s["dit_forwards"]
    cpu = (time.process_time() - cpu) / s["dit_forwards"]
    sent = {k: v / s["dit_forwards"] for k, v in runtime.stats.sent.items()}
    return {"seconds_per_step": seconds, "cpu_seconds_per_step": cpu, "bytes_per_step": sum(sent.values()), "bytes_by_op": sent}


def _vae(world, s: dict[str, Any], head: str) -> dict[str, Any]:
    from framestream.distributed.config import ParallelConfig
    from framestream.distributed.vae import iter_decode_parallel, split_tiles
    from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch
    from framestream.tiling.planner import TilingConfig
    from framestream.tiling.wan_exact import plan_exact_decode

    vae = init_random_weights(WanVAE(tiny_wan21_arch(s["vae_base_dim"])), 0).eval()
    t, h, w = s["vae_latent"]
    z = torch.randn(1, vae.arch.z_dim, t, h, w, generator=torch.Generator().manual_seed(2))
    plan = plan_exact_decode(vae, (h, w), TilingConfig(tile_size_px=s["tile_px"], tile_overlap_px=0))
    runtime = ParallelConfig(vae_head=head).setup(world=world)
    shares = split_tiles(plan, runtime.world_size)
    world.barrier()
    start, cpu = time.perf_counter(), time.process_time()
    for _ in iter_decode_parallel(vae, z, plan, runtime, chunk_size=1, head=head):
        pass
    seconds, cpu = time.perf_counter() - start, time.process_time() - cpu
    total_cost = sum(shares.cost(r) for r in range(runtime.world_size))
    own_px = sum((plan.tiles[i].row.own[1] - plan.tiles[i].row.own[0]) * (plan.tiles[i].col.own[1] - plan.tiles[i].col.own[0])
                 for i in shares.tiles[runtime.rank]) * 64
    return {
        "seconds": seconds,
        "cpu_seconds": cpu,
        "chunks": t,
        "bytes_per_chunk": runtime.stats.total / t,
        "bytes_by_op": dict(runtime.stats.sent),
        "cost_share": shares.cost(runtime.rank) / total_cost,
        "tiles": len(shares.tiles[runtime.rank]),
        "owned_px": own_px,
        "frame_px": h * w * 64,
        "tiles_total": len(plan),
    }


def bench_worker(rank: int, settings: dict[str, Any]) -> dict[str, Any]:
    """One rank of a bench group: DiT step(s) and tile-parallel decodes; what it measured."""
    from framestream.distributed.runtime import ProcessWorld

    world = ProcessWorld(timeout_s=300)
    out: dict[str, Any] = {}
    with world.guard():
        modes = ["ulysses", "ring"] if world.world_size > 1 else [None]
        for mode in modes:
            out[f"dit_{mode or 'local'}"] = _dit(world, settings, mode)
        heads = ["every_rank", "rank0"] if world.world_size > 1 else ["every_rank"]
        for head in heads:
            out[f"vae_{head}"] = _vae(world, settings, head)
    return out


def run_distributed_scenario(s: dict[str, Any], repeats: int) -> tuple[list, dict[str, float], dict[str, Any], list[str]]:
    """Alternate 1-rank and 2-rank groups ``repeats`` times with settings ``s``; (summaries, ratios, settings, notes)."""
    from framestream.bench.harness import CaseSummary
    from framestream.distributed.costs import cp_bytes_per_step, dit_tokens, gather_bytes_per_step
    from framestream.distributed.local import run_local_group

    runs: dict[int, list[dict[int, dict]]] = {1: [], 2: []}
    for _ in range(repeats):
        for world in (1, 2):
            runs[world].append(run_local_group(bench_worker, world, (s,), timeout_s=900))
    cases: dict[str, CaseSummary] = {}

    def case(name: str, seconds: list[float], extra: dict[str, Any]) -> None:
        cases[name] = CaseSummary(name, seconds, [0] * len(seconds), None, extra, [extra])

    # DiT: the slowest rank's time per step is the step time.
    arch = _arch(s)
    tokens = dit_tokens(arch, tuple(s["dit_latent"]))
    case(
        "dit 1 rank",
        [r[0]["dit_local"]["seconds_per_step"] for r in runs[1]],
        {"bytes_per_step": 0, "cpu_seconds_per_step": [r[0]["dit_local"]["cpu_seconds_per_step"] for r in runs[1]]},
    )
    formulas = {"ulysses": (2, 1), "ring": (1, 2)}
    ratios: dict[str, float] = {}
    for m, (u, r) in formulas.items():
        measured = runs[2][-1][0][f"dit_{m}"]["bytes_per_step"]
        formula = cp_bytes_per_step(arch, tokens, 1, u, r, 4) + gather_bytes_per_step(arch, tokens, 1, 2, 4)
        case(
            f"dit 2 ranks {m}",
            [max(g[k][f"dit_{m}"]["seconds_per_step"] for k in g) for g in runs[2]],
            {
                "bytes_per_step_rank0": measured,
                "formula_bytes_per_step": formula,
                "bytes_by_op": runs[2][-1][0][f"dit_{m}"]["bytes_by_op"],
                "cpu_seconds_per_step_by_rank": [[g[k][f"dit_{m}"]["cpu_seconds_per_step"] for k in sorted(g)] for g in runs[2]],
            },
        )
        cpu_one = statistics.median(r[0]["dit_local"]["cpu_seconds_per_step"] for r in runs[1])
        cpu_two = statistics.median(sum(g[k][f"dit_{m}"]["cpu_seconds_per_step"] for k in g) for g in runs[2])
        ratios[f"dit {m}: 2-rank / 1-rank total CPU time"] = cpu_two / cpu_one
        ratios[f"dit {m}: measured / formula bytes"] = measured / formula
        ratios[f"dit {m}: 2-rank / 1-rank step time"] = cases[f"dit 2 ranks {m}"].median_seconds / cases["dit 1 rank"].median_seconds
    # VAE: bytes per chunk = the owned pixels of rank 1 gathered to rank 0 (+ head features when broadcast).
    case("vae decode 1 rank", [r[0]["vae_every_rank"]["seconds"] for r in runs[1]], {})
    for head in ("every_rank", "rank0"):
        last = runs[2][-1]
        sent_by_rank1 = last[1][f"vae_{head}"]["bytes_by_op"].get("gather", 0) / last[1][f"vae_{head}"]["chunks"]
        owned_formula = 3 * 4 * 4 * last[1][f"vae_{head}"]["owned_px"]  # 3 channels, 4 frames, fp32
        case(
            f"vae decode 2 ranks head={head}",
            [max(g[k][f"vae_{head}"]["seconds"] for k in g) for g in runs[2]],
            {
                "bytes_per_chunk_all_ranks": sum(last[k][f"vae_{head}"]["bytes_per_chunk"] for k in last),
                "frames_bytes_per_chunk_rank1": sent_by_rank1,
                "formula_frames_bytes_per_chunk_rank1": owned_formula,
                "cost_share": [last[k][f"vae_{head}"]["cost_share"] for k in sorted(last)],
                "cpu_seconds_by_rank": [last[k][f"vae_{head}"]["cpu_seconds"] for k in sorted(last)],
                "tiles": [last[k][f"vae_{head}"]["tiles"] for k in sorted(last)],
            },
        )
        cpu_one = statistics.median(r[0]["vae_every_rank"]["cpu_seconds"] for r in runs[1])
        cpu_two = statistics.median(sum(g[k][f"vae_{head}"]["cpu_seconds"] for k in g) for g in runs[2])
        ratios[f"vae head={head}: 2-rank / 1-rank total CPU time"] = cpu_two / cpu_one
        ratios[f"vae head={head}: 2-rank / 1-rank time"] = (
            cases[f"vae decode 2 ranks head={head}"].median_seconds / cases["vae decode 1 rank"].median_seconds
        )
    # Steady-state chunks decode 4 frames; the first chunk 1, so compare the per-chunk average with the exact count.
    vae_case = cases["vae decode 2 ranks head=every_rank"].extra
    chunks = s["vae_latent"][0]
    vae_case["formula_frames_bytes_per_chunk_rank1"] *= (1 + 4 * (chunks - 1)) / (4 * chunks)
    cases["vae decode 2 ranks head=rank0"].extra["formula_frames_bytes_per_chunk_rank1"] = vae_case["formula_frames_bytes_per_chunk_rank1"]
    ratios["vae: measured / formula frame bytes (rank 1)"] = (
        vae_case["frames_bytes_per_chunk_rank1"] / vae_case["formula_frames_bytes_per_chunk_rank1"]
    )
    notes = [
        "Two ranks share ONE 2-core CPU here (gloo over loopback), on a machine other jobs load too: wall-time "
        "ratios measure contention, not GPU scaling. Total CPU time (both ranks) over one rank's shows the work "
        "added by splitting (duplicated head, halos, messaging); the byte counts (matching the README formulas) "
        "and the per-rank work split carry over.",
        f"DiT: {tokens} tokens, width {arch.inner_dim}, {arch.num_layers} layers, fp32, batch 1; "
        f"VAE: tiny Wan 2.1 decoder (base_dim {s['vae_base_dim']}), latent {s['vae_latent']}, tiles {s['tile_px']} px.",
    ]
    settings = {"dit_tokens": tokens, **s}
    return list(cases.values()), ratios, settings, notes
