"""Exact tiled Wan encode is never a loss: memory estimate, safe planner, budget mode, CLI ``--tile-size auto``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from framestream.bench.memory_breakdown import LiveBytes
from framestream.cli.main import main
from framestream.encoders.wan import WanVAEEncoderConfig
from framestream.io.latents import load_latents
from framestream.io.video import StreamingVideoWriter
from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch, tiny_wan22_arch
from framestream.models.wan.vae.config import WAN21_VAE_ARCH
from framestream.tiling import TilingConfig
from framestream.tiling.wan_encode_budget import (
    MAX_ENCODE_MEMORY_RATIO,
    choose_exact_encode_tiling,
    estimate_exact_encode_memory,
    plan_exact_encode_safe,
)
from framestream.tiling.wan_exact import encode_tiled, iter_encode_tiled, plan_exact_encode
from framestream.tiling.wan_exact.plan import MAX_ENCODE_HALO_OVERHEAD, encode_halo_overhead

ARCHS = {"wan21": tiny_wan21_arch(), "wan22": tiny_wan22_arch()}
STRIP = (32, 320)  # 4x40 Wan 2.1 latents: wide enough for tile-major tiles to save memory


pytestmark = pytest.mark.usefixtures("one_thread")


def encoder(arch, seed: int = 0) -> WanVAE:
    return init_random_weights(WanVAE(arch, include_decoder=False), seed).eval().requires_grad_(False)


def meta_encoder(arch) -> WanVAE:
    """Estimates and plans need the layer shapes only."""
    with torch.device("meta"):
        return WanVAE(arch, include_decoder=False)


def cfg(px: int | tuple[int, int], batch: int = 1) -> TilingConfig:
    return TilingConfig(tile_size_px=px, tile_overlap_px=0, tile_batch_size=batch)


def untiled_estimate(vae: WanVAE, hw: tuple[int, int], **kw) -> int:
    return estimate_exact_encode_memory(vae, plan_exact_encode(vae, hw, cfg(hw)), **kw).total


def video(batch: int, frames: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    return torch.rand(batch, 3, frames, *hw, generator=torch.Generator().manual_seed(seed)) * 2 - 1


# ---------------------------------------------------------------------------- estimate
@pytest.mark.parametrize("name", list(ARCHS))
def test_estimate_matches_live_tensor_bytes_untiled_frame_and_tile_major(name):
    vae = encoder(ARCHS[name])
    s = vae.spatial_ratio
    hw, frames = (6 * s, 10 * s), 5
    plan = plan_exact_encode(vae, hw, cfg(3 * s, 2))
    assert len(plan) > 1
    peaks = {}
    for mode in ("untiled", "frame", "tile"):
        meter = LiveBytes()
        with meter:  # the video is counted: the jobs hold a chunk of it (frame-major) or all of it (tile-major)
            x = video(1, frames, hw)
            if mode == "untiled":
                with torch.no_grad():
                    vae.encode(x)
            elif mode == "frame":
                for moments, _ in iter_encode_tiled(vae, x, plan):
                    del moments
            else:
                encode_tiled(vae, x, plan, order="tile")
            del x
        peaks[mode] = meter.peak
    est = {
        "untiled": estimate_exact_encode_memory(vae, plan_exact_encode(vae, hw, cfg(hw))),
        "frame": estimate_exact_encode_memory(vae, plan),
        "tile": estimate_exact_encode_memory(vae, plan, order="tile", frames=frames),
    }
    for mode, peak in peaks.items():
        assert 0.8 * peak <= est[mode].total <= 1.5 * peak, (mode, est[mode], peaks)
    # Frame-major keeps every tile's cache, halo included: far more than untiled at this size.
    assert est["frame"].front_cache > 2 * est["untiled"].front_cache and peaks["frame"] > 2 * peaks["untiled"]
    assert est["tile"].order == "tile" and est["tile"].front_cache <= est["untiled"].front_cache  # one call's cache
    with pytest.raises(ValueError, match="frames"):
        estimate_exact_encode_memory(vae, plan, order="tile")


# ---------------------------------------------------------------------------- never a loss
def test_halo_cap_enlarges_small_tiles_up_to_untiled():
    vae = meta_encoder(tiny_wan21_arch(4))
    hw = (480, 832)
    asked = plan_exact_encode(vae, hw, cfg(128))
    assert encode_halo_overhead(asked.rows, asked.cols, hw) > 3  # 128 px tiles read >3x the frame
    capped = plan_exact_encode(vae, hw, cfg(128), max_halo_overhead=1.5)
    assert encode_halo_overhead(capped.rows, capped.cols, hw) <= 1.5
    assert 1 < len(capped.tiles) < len(asked.tiles)
    whole = plan_exact_encode(vae, (64, 64), cfg(16), max_halo_overhead=1.0)
    assert len(whole.tiles) == 1  # nothing smaller pays off: one tile, the untiled encode


@pytest.mark.parametrize("name", list(ARCHS))
def test_safe_planner_never_plans_more_memory_than_untiled(name):
    vae = meta_encoder(ARCHS[name])
    s = vae.spatial_ratio
    for hw in ((4 * s, 40 * s), (16 * s, 16 * s), (12 * s, 20 * s)):
        for px in (s, 2 * s, 6 * s):
            for order in ("frame", "tile"):
                for cap in (MAX_ENCODE_HALO_OVERHEAD, float("inf")):
                    safe = plan_exact_encode_safe(vae, hw, cfg(px, 2), order=order, frames=9, max_halo_overhead=cap)
                    untiled = untiled_estimate(vae, hw)
                    assert safe.untiled_memory.total == untiled
                    if safe.untiled:
                        assert safe.tiling is None and safe.message and "encoded untiled" in safe.message
                        continue
                    assert encode_halo_overhead(safe.plan.rows, safe.plan.cols, hw) <= cap
                    est = estimate_exact_encode_memory(vae, safe.plan, order=order, frames=9)
                    assert est == safe.memory and est.total <= MAX_ENCODE_MEMORY_RATIO * untiled, (hw, px, order, cap)
                    assert plan_exact_encode(vae, hw, safe.tiling) == safe.plan  # the config plans it again
    # Frame-major, every tile's cache (halo included) is alive: never below untiled at these sizes.
    assert plan_exact_encode_safe(vae, (16 * s, 16 * s), cfg(4 * s), max_halo_overhead=float("inf")).untiled


def test_safe_planner_enlarges_or_drops_and_says_so():
    vae = meta_encoder(ARCHS["wan21"])
    small = plan_exact_encode_safe(vae, (64, 64), cfg(16))
    assert len(small.plan) == 1 and small.tiling is None
    assert small.message.startswith("exact tiled encode: 16 px tiles would recompute 16.0x the frame's pixels")
    assert small.message.endswith("no larger tiling of the 64x64 px frame does better, so it is encoded untiled")
    # Tile-major: one call's cache at a time, so tiles save memory; the cap enlarges them.
    strip = plan_exact_encode_safe(vae, STRIP, cfg(16), order="tile", frames=5)
    assert not strip.untiled and strip.tiling.tile_size_px == (32, 160)
    assert "enlarged to 32x160 px" in strip.message and "recompute 16.8x" in strip.message
    kept = plan_exact_encode_safe(vae, STRIP, cfg(80), order="tile", frames=5, max_halo_overhead=float("inf"))
    assert kept.message is None and kept.plan == plan_exact_encode(vae, STRIP, cfg(80))
    one = plan_exact_encode_safe(vae, STRIP, cfg(320))
    assert one.untiled and one.message is None  # asked for one tile: nothing to say
    with pytest.raises(ValueError, match="max_halo_overhead"):
        plan_exact_encode_safe(vae, STRIP, cfg(16), max_halo_overhead=0.5)
    with pytest.raises(ValueError, match="max_memory_ratio"):
        plan_exact_encode_safe(vae, STRIP, cfg(16), max_memory_ratio=1.5)


def test_safe_planner_at_720p_with_the_real_wan21_layout():
    vae = meta_encoder(WAN21_VAE_ARCH)
    hw, bf16 = (720, 1280), torch.bfloat16
    # Frame-major: every tile's cache is alive, so no tiling saves enough: untiled.
    frame = plan_exact_encode_safe(vae, hw, cfg(256), dtype=bf16)
    assert frame.untiled and "need more memory than untiled" in frame.message
    # Tiles within the halo cap whose memory is about the untiled encode's: a loss of time for nothing.
    even = plan_exact_encode_safe(vae, hw, cfg((360, 432)), dtype=bf16)
    assert even.untiled and "save under 10% of the untiled memory" in even.message
    # Tile-major: one call's cache at a time; 256 px tiles are enlarged to fit the halo cap.
    tile = plan_exact_encode_safe(vae, hw, cfg(256), order="tile", frames=81, dtype=bf16)
    assert not tile.untiled and "enlarged to 360x432 px" in tile.message
    assert tile.memory.total < 0.5 * tile.untiled_memory.total
    # Frame-major with idle tile caches in host memory: one call's cache on the device, so tiles pay.
    offload = plan_exact_encode_safe(vae, hw, cfg(256), dtype=bf16, offload_caches=True)
    assert offload.plan == tile.plan and offload.memory.front_cache < frame.untiled_memory.front_cache / 2


def test_pipeline_encoder_drops_a_losing_tiling_and_stays_exact():
    arch = tiny_wan21_arch(4)
    x = video(1, 5, (64, 64))
    plain = WanVAEEncoderConfig(arch=arch).setup()
    tiled = WanVAEEncoderConfig(arch=arch, tiling=cfg(16)).setup()
    cache = tiled.initialize_autoregressive_cache()
    with pytest.warns(UserWarning, match="16 px tiles would recompute .* so it is encoded untiled"):
        out = tiled(x, 0, cache)
    assert len(cache.plan) == 1
    torch.testing.assert_close(out, plain(x, 0, plain.initialize_autoregressive_cache()), atol=1e-5, rtol=0)


# ---------------------------------------------------------------------------- budget
def test_choose_encode_tiling_fits_a_budget_and_the_choice_is_exact():
    vae = encoder(ARCHS["wan21"])
    s, frames = vae.spatial_ratio, 5

    def total(px: int) -> int:
        plan = plan_exact_encode(vae, STRIP, cfg(px))
        return estimate_exact_encode_memory(vae, plan, order="tile", frames=frames).total

    untiled = untiled_estimate(vae, STRIP)
    sizes = range(s, STRIP[1], s)
    totals = sorted({total(px) for px in sizes})
    leanest, budget = totals[0], totals[len(totals) // 2]  # some tilings fit, larger ones not
    choice = choose_exact_encode_tiling(vae, STRIP, budget, order="tile", frames=frames)
    assert total(choice.tile_size_px) <= budget < untiled
    owned = {px: tuple(c.own for c in plan_exact_encode(vae, STRIP, cfg(px)).cols) for px in sizes}
    larger = [px for px in sizes if px > choice.tile_size_px and owned[px] != owned[choice.tile_size_px]]
    assert larger and all(total(px) > budget for px in larger)  # the largest tiling that fits
    plan = plan_exact_encode(vae, STRIP, cfg(choice.tile_size_px, choice.tile_batch_size))
    assert len(plan) > 1
    x = video(1, frames, STRIP, seed=3)
    with torch.no_grad():
        want = vae.encode(x)
    assert (encode_tiled(vae, x, plan, order="tile") - want).abs().max().item() <= 1e-5
    # Untiled fits: the one-tile choice. Below the leanest: one clear error.
    whole = choose_exact_encode_tiling(vae, STRIP, untiled, order="tile", frames=frames)
    assert whole.tile_size_px == STRIP[1] and whole.tile_batch_size == 1
    with pytest.raises(ValueError, match="no exact tiling of the 32x320 px encode fits"):
        choose_exact_encode_tiling(vae, STRIP, leanest - 1, order="tile", frames=frames)
    with pytest.raises(ValueError, match="the caches, which no tiling removes"):
        choose_exact_encode_tiling(vae, STRIP, untiled - 1)  # frame-major: every tiling holds more
    with pytest.raises(ValueError, match="budget_bytes must be positive"):
        choose_exact_encode_tiling(vae, STRIP, 0)


# ---------------------------------------------------------------------------- CLI
def strip_video(path: Path, frames: int = 5) -> Path:
    y, x = torch.meshgrid(torch.linspace(-1, 1, STRIP[0]), torch.linspace(-1, 1, STRIP[1]), indexing="ij")
    clip = torch.stack([torch.stack([x, y, torch.sin(3 * (x + y) + 0.4 * t)]) for t in range(frames)], dim=1)
    with StreamingVideoWriter(path, fps=12, crf=0, preset="ultrafast", threads=1) as writer:
        writer.write(clip * 0.9)
    return path


def test_cli_encode_tile_size_auto(tmp_path, capsys):
    model = init_random_weights(WanVAE(tiny_wan21_arch()), seed=0)
    ckpt = tmp_path / "vae21.safetensors"
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, ckpt)
    clip = strip_video(tmp_path / "strip.mp4")
    base = ["--vae", "wan2.1", "--checkpoint", str(ckpt), "--device", "cpu", "--json"]

    def run(name: str, *extra: str) -> dict:
        capsys.readouterr()
        assert main(["encode", str(clip), "-o", str(tmp_path / name), *base, *extra]) == 0
        out = capsys.readouterr()
        return {**json.loads(out.out.strip().splitlines()[-1]), "stderr": out.err}

    vae = meta_encoder(tiny_wan21_arch())
    untiled = untiled_estimate(vae, STRIP)
    want = choose_exact_encode_tiling(vae, STRIP, int(0.8 * untiled), order="tile", frames=5)
    summary = run("a.safetensors", "--tile-size", "auto", "--tile-order", "tile", "--memory-budget", f"{int(0.8 * untiled)}B")
    assert summary["tiled"] and summary["tile_size"] == want.tile_size_px < STRIP[1], summary
    assert not run("u.safetensors", "--tile-size", "auto", "--memory-budget", "1GiB")["tiled"]  # untiled fits
    torch.testing.assert_close(load_latents(tmp_path / "a.safetensors")[0], load_latents(tmp_path / "u.safetensors")[0], atol=1e-4, rtol=0)
    # Asked-for tiles that lose are dropped, with one warning line naming the size.
    dropped = run("d.safetensors", "--tile-size", "16")
    assert not dropped["tiled"] and dropped["stderr"].count("\n") == 1, dropped
    assert dropped["stderr"].startswith("framestream encode: warning: exact tiled encode: 16 px tiles would")
    for extra, match in (
        (["--tile-size", "auto", "--memory-budget", "1KiB"], "--memory-budget: no exact tiling of the 32x320 px encode fits"),
        (["--tile-size", "auto", "--memory-budget", "lots"], "--memory-budget"),
        (["--tile-size", "64", "--memory-budget", "1GiB"], "--memory-budget needs --tile-size auto"),
        (["--tile-size", "auto", "--tile-batch-size", "2"], "drop --tile-batch-size"),
    ):
        capsys.readouterr()
        assert main(["encode", str(clip), "-o", str(tmp_path / "x.safetensors"), *base, *extra]) == 2
        lines = capsys.readouterr().err.strip().splitlines()
        assert len(lines) == 1 and lines[0].startswith("framestream encode: error: ") and match in lines[0], lines
    assert not (tmp_path / "x.safetensors").exists()
