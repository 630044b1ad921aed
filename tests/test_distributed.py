"""Multi-process inference on local CPU process groups (gloo, 127.0.0.1): context-parallel Wan DiT,
tile-parallel exact VAE, torchrun decode / generate, failure propagation, plus one-process unit checks.

Spawned groups are reused for several checks (the worker functions live in
``distributed_workers.py``); every spawn and subprocess has a timeout.
"""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import distributed_workers as workers
from framestream.cli.main import main
from framestream.distributed.config import ParallelConfig
from framestream.distributed.local import free_port, run_local_group
from framestream.distributed.wan_dit import split_rows

TOL = 1e-5


pytestmark = pytest.mark.usefixtures("one_thread")


# ------------------------------------------------------------------ one process
def test_parallel_config_degrees_and_errors():
    assert ParallelConfig().degrees(1) == (1, 1, 1)
    assert ParallelConfig(mode="ulysses").degrees(4) == (1, 4, 1)
    assert ParallelConfig(mode="ring").degrees(3) == (1, 1, 3)
    assert ParallelConfig(mode="hybrid", ulysses_degree=2).degrees(8) == (1, 2, 4)
    assert ParallelConfig(mode="ring", cfg_parallel=True).degrees(4) == (2, 1, 2)
    with pytest.raises(ValueError, match="even number"):
        ParallelConfig(cfg_parallel=True).degrees(3)
    with pytest.raises(ValueError, match="torchrun started 4"):
        ParallelConfig(context_parallel_degree=3).degrees(4)
    with pytest.raises(ValueError, match="needs ulysses_degree"):
        ParallelConfig(mode="hybrid").degrees(4)
    with pytest.raises(ValueError, match="mode"):
        ParallelConfig(mode="tree")


def test_split_rows_partitions_unevenly():
    assert split_rows(5, 2) == [(0, 3), (3, 2)]
    assert split_rows(5, 3) == [(0, 2), (2, 2), (4, 1)]
    assert sum(n for _, n in split_rows(60 // 2, 8)) == 30


def test_ring_block_attention_in_query_slices(monkeypatch):
    """One ring step's block attention (sliced over queries to bound memory) equals softmax attention."""
    from framestream.distributed import wan_dit
    from framestream.models.wan.transformer.attention import attention

    gen = torch.Generator().manual_seed(0)
    q, k, v = (torch.randn(2, n, 3, 8, generator=gen) for n in (10, 7, 7))
    monkeypatch.setattr(wan_dit, "_SCORE_BYTES", 4 * 2 * 3 * 7 * 3)  # 3 query rows per slice
    out, lse = wan_dit._attend_block(q.float().transpose(1, 2), k, v, 8**-0.5)
    assert torch.allclose(out.transpose(1, 2), attention(q, k, v), atol=1e-6)
    scores = torch.einsum("bqhd,bkhd->bhqk", q, k) * 8**-0.5
    assert torch.allclose(lse[..., 0], scores.logsumexp(-1), atol=1e-6)


def test_one_process_is_unchanged():
    """The default layout builds no group and leaves the model on its one-process path."""
    from framestream.distributed.wan_dit import attach_wan_parallel

    runtime = ParallelConfig().setup()
    assert not runtime.distributed and runtime.cp_degree == 1
    model = workers._transformer(False)
    attach_wan_parallel(model, runtime)
    assert model.parallel is None
    assert "1 process(es)" in runtime.layout()


def test_split_tiles_balances_cost():
    from framestream.distributed.vae import split_tiles
    from framestream.tiling.planner import TilingConfig
    from framestream.tiling.wan_exact import plan_exact_decode

    vae = workers._vae()
    plan = plan_exact_decode(vae, (5, 5), TilingConfig(tile_size_px=16, tile_overlap_px=0, tile_batch_size=2))
    shares = split_tiles(plan, 2)
    assert sorted(i for t in shares.tiles for i in t) == list(range(len(plan)))
    assert len(shares.tiles[0]) != len(shares.tiles[1])  # 9 tiles: unequal counts
    costs = [shares.cost(r) for r in range(2)]
    biggest = max(c[1] - c[0] for c in (t.row.crop for t in plan.tiles)) * max(c[1] - c[0] for c in (t.col.crop for t in plan.tiles))
    assert abs(costs[0] - costs[1]) <= biggest  # greedy LPT: within one tile's cost
    assert "rank 1" in shares.describe()


# ---------------------------------------------------------------- process groups
@pytest.fixture(scope="module")
def one_process_frames():
    from framestream.recipes.wan import iter_video_blocks, prepare_recipe, wan21_self_forcing_1_3b_tiny

    config, n = prepare_recipe(wan21_self_forcing_1_3b_tiny(), 3)
    pipeline = config.setup().eval()
    with torch.no_grad():
        return torch.cat(list(iter_video_blocks(pipeline, "a fox", n)), dim=2)


def _check_dit(results: dict, names: list[str]) -> None:
    for name in names:
        assert 0 <= results[name] <= TOL, (name, results[name])


def test_two_ranks(one_process_frames):
    checks = [
        ("ulysses", "bidirectional", "ulysses", None, 1.0, False),
        ("ring", "bidirectional", "ring", None, 1.0, False),
        ("causal_ulysses", "causal", "ulysses", None),
        ("causal_ring", "causal", "ring", None),
        ("cfg_parallel", "bidirectional", "ring", None, 5.0, True),
        ("vae", "vae", (5, 5), 2),  # 9 tiles on 2 ranks
        ("generate", "generate", "ulysses"),
    ]
    results = run_local_group(workers.run_checks, 2, (checks,), timeout_s=150)
    main, other = results[0], results[1]
    _check_dit(main, ["ulysses", "ring", "causal_ulysses", "causal_ring", "cfg_parallel"])
    assert main["ring"] == other["ring"]
    vae = main["vae"]
    assert len(set(vae["tiles_per_rank"])) > 1, vae
    for key in ("decode_every_rank", "decode_rank0", "encode_rank0", "encode_every_rank"):
        assert vae[key] <= 1e-10, (key, vae)  # float64 VAE: exact up to rounding
    assert other["vae"]["encode_every_rank"] <= 1e-10
    assert other["vae"]["bytes"]["gather"] > 0  # rank 1 sent its owned pixels / features to rank 0
    # Float rounding of the DiT (<= 1e-6 per forward) compounds over 3 blocks x 4 steps and the VAE.
    assert (main["generate"] - one_process_frames).abs().max() <= 1e-4
    assert other["generate"] is None


def test_three_ranks():
    checks = [
        ("ulysses", "bidirectional", "ulysses", None, 1.0, False),
        ("ring", "bidirectional", "ring", None, 1.0, False),
        ("causal_ulysses", "causal", "ulysses", None),
        ("causal_ring", "causal", "ring", None),
        ("ulysses_error", "ulysses_error"),
        ("vae", "vae", (3, 7), 2),  # 8 tiles on 3 ranks
    ]
    results = run_local_group(workers.run_checks, 3, (checks,), timeout_s=150)[0]
    _check_dit(results, ["ulysses", "ring", "causal_ulysses", "causal_ring"])
    assert "Ulysses degree 3 does not divide the 2 attention heads" in results["ulysses_error"]
    vae = results["vae"]
    assert len(set(vae["tiles_per_rank"])) > 1, vae
    for key in ("decode_every_rank", "decode_rank0", "encode_rank0", "encode_every_rank"):
        assert vae[key] <= 1e-10, (key, vae)  # float64 VAE: exact up to rounding


@pytest.mark.parametrize("how", ["forward", "stuck"])
def test_failing_rank_ends_every_rank(how):
    """An exception in one rank's forward reaches the other rank at once; a stuck rank is cut by the timeout (4 s)."""
    results = run_local_group(workers.failing_rank, 2, (how,), timeout_s=60, allow_errors=True, grace_s=5)
    if how == "forward":
        assert "own error" in results[1] and "exploded in rank 1's forward" in results[1]
        assert "peer failed" in results[0] and "rank 1: RuntimeError: exploded" in results[0]
    else:
        assert "own error" in results[0] and "Timed out" in results[0]
        assert "killed" in results[1]  # as torchrun does once a rank has failed
    seconds = float(results[0].split(" after ")[1].split(" s")[0])
    assert seconds < 30, results


# ------------------------------------------------------------------------ torchrun
def _torchrun(args: list[str], cwd: Path, nproc: int = 2) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "FRAMESTREAM_COLLECTIVE_TIMEOUT_S": "60"}
    command = [
        sys.executable, "-m", "torch.distributed.run", f"--nproc-per-node={nproc}",
        "--master-addr=127.0.0.1", f"--master-port={free_port()}", "-m", "framestream", *args,
    ]
    done = subprocess.run(command, cwd=cwd, env=env, capture_output=True, text=True, timeout=150)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    return done


@pytest.fixture(scope="module")
def vae_files(tmp_path_factory) -> dict[str, Path]:
    from safetensors.torch import save_file

    from framestream.io.latents import LatentMetadata, save_latents

    root = tmp_path_factory.mktemp("distributed_vae")
    vae = workers._vae()
    save_file({k: v.contiguous() for k, v in vae.state_dict().items()}, root / "vae.safetensors")
    z = torch.randn(1, vae.arch.z_dim, 3, 5, 7, generator=torch.Generator().manual_seed(7)) * 0.5
    save_latents(root / "z.safetensors", z, LatentMetadata(vae="wan2.1", fps=8.0, normalized=False))
    return {"root": root, "ckpt": root / "vae.safetensors", "latents": root / "z.safetensors"}


def test_torchrun_decode_writes_the_same_frames(vae_files):
    root = vae_files["root"]
    common = [str(vae_files["latents"]), "--vae", "wan2.1", "--checkpoint", str(vae_files["ckpt"])]
    assert main(["decode", *common, "-o", str(root / "one.npy")]) == 0  # one process, untiled
    done = _torchrun(["decode", *common, "-o", str(root / "two.npy"), "--tile-size", "16", "--chunk", "2"], root)
    assert "framestream parallel layout: 2 process(es)" in done.stderr and "tile-parallel" in done.stderr
    one, two = np.load(root / "one.npy"), np.load(root / "two.npy")
    assert one.shape == two.shape == (9, 40, 56, 3)
    diff = np.abs(one.astype(int) - two.astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # float rounding (<= 1e-5) may flip a rare uint8 step


def test_torchrun_generate_writes_the_same_video(tmp_path):
    from framestream.io.video import read_video

    args = ["generate", "wan2.1-self-forcing-1.3b-tiny", "--prompt", "a fox", "--num-blocks", "3", "--crf", "0"]
    assert main([*args, "-o", str(tmp_path / "one.mp4")]) == 0
    done = _torchrun([*args, "-o", str(tmp_path / "two.mp4"), "--parallel.mode", "ring"], tmp_path)
    assert done.stdout.count("wrote 33 frames") == 1  # rank 0 alone reports and writes
    one, _ = read_video(tmp_path / "one.mp4")
    two, _ = read_video(tmp_path / "two.mp4")
    assert one.shape == two.shape
    diff = (one.int() - two.int()).abs()
    assert diff.max() <= 1 and (diff > 0).float().mean() < 1e-3  # lossless mp4; float rounding may flip a rare step


def test_four_ranks_hybrid():
    """Ulysses 2 x ring 2 on 4 ranks: bidirectional and causal with the sharded KV cache."""
    checks = [("hybrid", "bidirectional", "hybrid", 2, 1.0, False), ("causal_hybrid", "causal", "hybrid", 2)]
    results = run_local_group(workers.run_checks, 4, (checks,), timeout_s=150)[0]
    _check_dit(results, ["hybrid", "causal_hybrid"])


def test_readme_table_is_computed_from_the_formulas():
    from framestream.distributed.costs import readme_tables

    readme = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    assert readme_tables() in readme
