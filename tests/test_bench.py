"""Benchmark harness, FLOP counter and report writers (no real benchmarks run here)."""

from __future__ import annotations

import json
import os
from pathlib import Path

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from framestream.bench.harness import Case, CaseSummary, run_alternating, run_case_once
from framestream.bench.report import (
    markdown_table,
    plot_curve,
    ratio_table,
    rebuild_markdown,
    summary_from_json,
    write_scenario_json,
)
from framestream.bench.worker import main as worker_main
from framestream.bench.roofline import conv_shapes, count_flops, decoder_flop_count
from framestream.models.wan.vae import WanVAE, tiny_wan21_arch
from framestream.models.wan.vae.modules import AttentionBlock, CausalConv3d, Resample

HERE = Path(__file__).resolve().parent
MODULE = Path(__file__).stem


# ---------------------------------------------------------------------------- case functions (run in the worker)
def constant_case(timer, value: float, log: str, name: str, shape: tuple[int, ...] = (2, 3)):
    """Logs its name (to check the run order), returns ``full(shape, value)``."""
    with open(log, "a") as handle:
        handle.write(name + "\n")
    with timer:
        out = torch.full(tuple(shape), float(value))
        timer.extra["value"] = value
    return out


def failing_case(timer):
    with timer:
        raise ValueError("deliberate failure in the case")


def untimed_case(timer):
    return torch.zeros(1)


@pytest.fixture(autouse=True)
def _importable_from_worker(monkeypatch):
    """The worker is a fresh process: let it import this test module by name."""
    monkeypatch.setenv("PYTHONPATH", os.pathsep.join(filter(None, [str(HERE), os.environ.get("PYTHONPATH")])))


def _case(name: str, value: float, log: Path, **extra) -> Case:
    return Case(name, f"{MODULE}:constant_case", {"value": value, "log": str(log), "name": name, **extra})


# ---------------------------------------------------------------------------- harness
def test_run_case_once_reports_time_memory_and_extra(tmp_path):
    out = tmp_path / "out.pt"
    result = run_case_once(_case("a", 1.5, tmp_path / "log"), out)
    assert result.seconds > 0 and result.peak_bytes >= 0
    assert result.extra == {"value": 1.5}
    assert torch.equal(torch.load(out), torch.full((2, 3), 1.5))


def test_run_alternating_order_summaries_and_errors(tmp_path):
    log = tmp_path / "log"
    cases = [_case("ref", 1.0, log), _case("other", 1.25, log)]
    summaries = run_alternating(cases, repeats=2, reference="ref", progress=False)
    assert log.read_text().split() == ["ref", "other", "ref", "other"]  # A B A B, one process each
    ref, other = summaries
    assert [s.name for s in summaries] == ["ref", "other"]
    assert len(ref.seconds) == len(ref.peak_bytes) == 2 and len(other.extra_runs) == 2
    assert ref.max_abs_error == 0.0
    assert other.max_abs_error == pytest.approx(0.25)
    assert other.extra["value"] == 1.25
    data = other.to_json()
    assert data["min_seconds"] <= data["median_seconds"] <= data["max_seconds"]


def test_failing_case_raises_a_clear_error(tmp_path):
    with pytest.raises(RuntimeError, match=r"benchmark case boom .*failed: ValueError: deliberate failure"):
        run_case_once(Case("boom", f"{MODULE}:failing_case"))
    # A case that never times anything is an error too (checked in-process: same worker code).
    request = tmp_path / "request.json"
    request.write_text(json.dumps({"function": f"{__name__}:untimed_case", "params": {}}))
    with torch.random.fork_rng(), pytest.raises(RuntimeError, match="never entered its `with timer:` block"):
        worker_main([str(request)])


def test_run_alternating_rejects_bad_arguments_and_shape_mismatch(tmp_path):
    log = tmp_path / "log"
    with pytest.raises(ValueError, match="repeats"):
        run_alternating([_case("a", 0, log)], repeats=0)
    with pytest.raises(ValueError, match="unique"):
        run_alternating([_case("a", 0, log), _case("a", 1, log)], repeats=1)
    with pytest.raises(ValueError, match="reference"):
        run_alternating([_case("a", 0, log)], repeats=1, reference="nope")
    with pytest.raises(RuntimeError, match="output shape"):
        run_alternating([_case("a", 0, log), _case("b", 0, log, shape=(3, 3))], repeats=1, reference="a", progress=False)


# ---------------------------------------------------------------------------- FLOP counter
class _Tiny(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.conv = CausalConv3d(2, 4, 3, padding=1)
        self.attn = AttentionBlock(4)
        self.up = Resample(4, "upsample2d", upsample_out_dim=2)
        for p in self.parameters():
            torch.nn.init.normal_(p, std=0.1)

    def forward(self, x):
        return self.up(self.attn(self.conv(x)), None)


def test_flop_counter_matches_a_hand_count():
    model, x = _Tiny(), torch.randn(1, 2, 2, 4, 5)  # B=1, C=2, T=2, H=4, W=5
    count, out = count_flops(model, lambda: model(x))
    conv = 2 * (1 * 4 * 2 * 4 * 5) * 2 * 27  # 2 * output elements * C_in * k^3 (causal context inside k_t)
    n, c, frames = 4 * 5, 4, 2
    attn = frames * 2 * (4 * n * c * c + 2 * n * n * c)  # qkv + proj, then QK^T and AV, per frame
    up = 2 * (1 * 2 * 2 * 8 * 10) * 4 * 9  # per-frame 3x3 conv after nearest 2x
    assert dict(count.by_kind) == {"conv3d": conv, "attention_proj": frames * 8 * n * c * c,
                                   "attention_qk_av": frames * 4 * n * n * c, "conv2d": up}
    assert count.total == conv + attn + up == 58240
    assert count.output_pixels == 2 * 8 * 10 and out.shape == (1, 2, 2, 8, 10)
    # torch's counter, on meta (on CPU it misses the fused attention kernel, so QK/AV would be uncounted)
    meta = model.to("meta")
    with FlopCounterMode(display=False) as fc:
        meta(x.to("meta"))
    assert fc.get_total_flops() == count.total


def test_decoder_flop_count_agrees_with_torch_flop_counter():
    arch, shape = tiny_wan21_arch(8), (1, 16, 3, 4, 6)
    count = decoder_flop_count(arch, shape)
    with torch.device("meta"):
        vae = WanVAE(arch, include_encoder=False).eval()
        z = torch.empty(*shape)
    with torch.inference_mode(), FlopCounterMode(display=False) as fc:
        vae.decode(z)
    assert count.total == fc.get_total_flops()
    assert count.output_pixels == 9 * 32 * 48
    shapes = conv_shapes(count, coverage=0.9, limit=3)
    assert 1 <= len(shapes) <= 3 and all(s.kernel == (3, 3, 3) for s in shapes)
    assert [s.flops for s in shapes] == sorted((s.flops for s in shapes), reverse=True)


# ---------------------------------------------------------------------------- reports
def _summaries() -> list[CaseSummary]:
    a = CaseSummary("ours", [1.0, 3.0, 2.0], [2**20, 3 * 2**20, 2 * 2**20], max_abs_error=1e-6,
                    extra={"time_to_first_frame_s": 0.25})
    b = CaseSummary("theirs", [4.0, 4.0], [8 * 2**20, 8 * 2**20], max_abs_error=0.7)
    return [a, b]


def test_report_json_markdown_and_plot(tmp_path):
    ratios = {"time theirs / ours": 2.0}
    path = write_scenario_json(tmp_path, "demo", _summaries(), {"size": [1, 2]}, ratios, ["a note"])
    data = json.loads(path.read_text())
    assert set(data) == {"scenario", "settings", "machine", "cases", "ratios", "notes"}
    assert {"python", "torch", "device", "cpu_count"} <= set(data["machine"])
    case = data["cases"][0]
    assert case["median_seconds"] == 2.0 and case["min_seconds"] == 1.0 and case["max_seconds"] == 3.0
    assert case["median_peak_mib"] == 2.0 and case["max_abs_error"] == 1e-6
    assert summary_from_json(case).median_seconds == 2.0

    table = markdown_table("demo", _summaries(), ratios, ["a note"])
    assert "| ours | 2.000 (1.000-3.000) | 2.0 (1.0-3.0) | 1.00e-06 | 0.250 |" in table
    assert "| theirs | 4.000 (4.000-4.000) | 8.0 (8.0-8.0) | 7.00e-01 | - |" in table
    assert "time theirs / ours: **2**" in table and "- a note" in table
    assert "| demo | time theirs / ours | 2 |" in ratio_table({"demo": ratios})

    md = rebuild_markdown(tmp_path, ["demo"]).read_text()
    assert "## Headline ratios" in md and "### demo" in md and "machine:" in md

    pytest.importorskip("matplotlib")
    png = plot_curve(tmp_path / "curve.png", "t", "x", "y", {"a": ([1, 2], [3, 4]), "b": ([1, 2], [4, 5])})
    assert png is not None and png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_and_suite_settings():
    from framestream.bench import SCENARIO_NAMES
    from framestream.bench.scenarios import SCENARIOS, SETTINGS
    from framestream.cli.main import build_parser

    args = build_parser().parse_args(["bench", "--quick", "--scenario", "roofline", "--repeats", "2"])
    assert args.quick and args.scenario == ["roofline"] and args.repeats == 2 and callable(args.func)
    assert tuple(SCENARIOS) == SCENARIO_NAMES
    for mode in SETTINGS.values():
        assert set(SCENARIO_NAMES) <= set(mode) and mode["repeats"] >= 2
        tiled = mode["decode_tiled"]
        assert tiled["overlap_px"] < tiled["tile_px"] and tiled["tile_px"] % 8 == 0
