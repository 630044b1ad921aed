"""Benchmark harness: every run in a fresh subprocess, implementations alternated.

A *case* is a function ``fn(timer, **params) -> torch.Tensor | None`` named by import
path (``"module:function"``). The worker (``python -m framestream.bench.worker``)
calls it; the case builds its weights and inputs, wraps the measured work in
``with timer:`` and returns its output, which the parent compares with the reference
case's output (max abs difference in fp32).

Peak memory: on CUDA ``torch.cuda.max_memory_allocated`` growth; on CPU the growth of
the process's peak RSS over its RSS when the timed section starts (the kernel's peak
mark is reset on entry), so the interpreter, torch and the weights are not counted.
"""

from __future__ import annotations

import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch

__all__ = ["Case", "RunResult", "CaseSummary", "run_case_once", "run_alternating", "machine_info"]


@dataclass(frozen=True)
class Case:
    """One implementation of a scenario: import path of its function and its parameters."""

    name: str
    function: str
    params: dict[str, Any] = field(default_factory=dict)


@dataclass
class RunResult:
    """What one subprocess run measured."""

    seconds: float
    peak_bytes: int
    extra: dict[str, Any] = field(default_factory=dict)


@dataclass
class CaseSummary:
    """All runs of one case: median/min/max time and memory, error against the reference."""

    name: str
    seconds: list[float]
    peak_bytes: list[int]
    max_abs_error: float | None = None
    extra: dict[str, Any] = field(default_factory=dict)
    """Per-key median over the runs of the numbers a case put in ``timer.extra`` (else the last value)."""
    extra_runs: list[dict[str, Any]] = field(default_factory=list)

    @property
    def median_seconds(self) -> float:
        return statistics.median(self.seconds)

    @property
    def median_peak_bytes(self) -> float:
        return statistics.median(self.peak_bytes)

    def add_run(self, result: "RunResult") -> None:
        self.seconds.append(result.seconds)
        self.peak_bytes.append(result.peak_bytes)
        self.extra_runs.append(result.extra)
        for key in result.extra:
            values = [run[key] for run in self.extra_runs if key in run]
            numeric = all(isinstance(v, (int, float)) and not isinstance(v, bool) for v in values)
            self.extra[key] = statistics.median(values) if numeric else values[-1]

    def to_json(self) -> dict[str, Any]:
        data = asdict(self)
        data.update(
            median_seconds=self.median_seconds,
            min_seconds=min(self.seconds),
            max_seconds=max(self.seconds),
            median_peak_mib=self.median_peak_bytes / 2**20,
            min_peak_mib=min(self.peak_bytes) / 2**20,
            max_peak_mib=max(self.peak_bytes) / 2**20,
        )
        return data


def machine_info() -> dict[str, Any]:
    """Where the numbers were measured (saved in every result file)."""
    info: dict[str, Any] = {
        "python": platform.python_version(),
        "torch": torch.__version__,
        "platform": platform.platform(),
        "processor": platform.processor() or platform.machine(),
        "cpu_count": os.cpu_count(),
        "torch_threads": torch.get_num_threads(),
        "device": "cuda" if torch.cuda.is_available() else "cpu",
    }
    try:
        with open("/proc/cpuinfo") as handle:
            info["cpu_model"] = next((ln.split(":", 1)[1].strip() for ln in handle if ln.startswith("model name")), None)
        info["load_average_1_5_15"] = [round(x, 2) for x in os.getloadavg()]
    except OSError:
        pass
    if torch.cuda.is_available():
        info["gpu"] = torch.cuda.get_device_name(0)
    return info


def run_case_once(
    case: Case, output_path: Path | None = None, timeout: float = 900, threads: int | None = None
) -> RunResult:
    """Run ``case`` in a fresh Python process; optionally save its output tensor to ``output_path``.

    A case that raises, crashes, prints no result or exceeds ``timeout`` seconds raises
    ``RuntimeError`` naming the case, with the end of its stderr.
    """
    request = {
        "function": case.function,
        "params": case.params,
        "output": str(output_path) if output_path else None,
        "threads": threads,
    }
    with tempfile.NamedTemporaryFile("w", suffix=".json", delete=False) as handle:
        json.dump(request, handle)
        request_path = handle.name
    try:
        proc = subprocess.run(
            [sys.executable, "-m", "framestream.bench.worker", request_path],
            capture_output=True,
            text=True,
            timeout=timeout,
        )
    except subprocess.TimeoutExpired as err:
        raise RuntimeError(f"benchmark case {case.name} ({case.function}) timed out after {timeout:.0f} s") from err
    finally:
        os.unlink(request_path)
    if proc.returncode != 0:
        last = proc.stderr.strip().splitlines()[-1:] or [f"exit status {proc.returncode}"]
        raise RuntimeError(
            f"benchmark case {case.name} ({case.function}) failed: {last[0]}\n--- stderr ---\n{proc.stderr[-4000:]}"
        )
    lines = [line for line in proc.stdout.splitlines() if line.startswith("{")]
    if not lines:
        raise RuntimeError(f"benchmark case {case.name} printed no result:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    result = json.loads(lines[-1])
    return RunResult(seconds=result["seconds"], peak_bytes=result["peak_bytes"], extra=result.get("extra", {}))


def run_alternating(
    cases: list[Case],
    repeats: int,
    reference: str | None = None,
    progress: bool = True,
    threads: int | None = None,
    timeout: float = 900,
) -> list[CaseSummary]:
    """Run every case ``repeats`` times in the order A B C A B C ..., each in its own process.

    The first run of each case also saves its output; every case's output is then
    compared with ``reference``'s (max abs difference, computed in fp32).
    """
    if repeats < 1:
        raise ValueError(f"repeats must be >= 1, got {repeats}")
    names = [c.name for c in cases]
    if len(set(names)) != len(names):
        raise ValueError(f"case names must be unique: {names}")
    if reference is not None and reference not in names:
        raise ValueError(f"reference {reference!r} is not one of {names}")
    summaries = {c.name: CaseSummary(name=c.name, seconds=[], peak_bytes=[]) for c in cases}
    with tempfile.TemporaryDirectory() as tmp:
        outputs = {c.name: Path(tmp) / f"{c.name}.pt" for c in cases}
        for repeat in range(repeats):
            for case in cases:
                save = outputs[case.name] if repeat == 0 else None
                result = run_case_once(case, save, timeout=timeout, threads=threads)
                summaries[case.name].add_run(result)
                if progress:
                    print(
                        f"  [{repeat + 1}/{repeats}] {case.name:<32s} {result.seconds:8.3f} s  {result.peak_bytes / 2**20:9.1f} MiB",
                        flush=True,
                    )
        if reference is not None and outputs[reference].exists():
            ref = torch.load(outputs[reference], weights_only=True).float()
            for case in cases:
                if outputs[case.name].exists():
                    out = torch.load(outputs[case.name], weights_only=True).float()
                    if out.shape != ref.shape:
                        raise RuntimeError(f"{case.name} output shape {tuple(out.shape)} != reference {tuple(ref.shape)}")
                    summaries[case.name].max_abs_error = float((out - ref).abs().max())
    return [summaries[c.name] for c in cases]
