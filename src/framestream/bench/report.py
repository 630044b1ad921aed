"""Writing benchmark results: JSON per scenario, one markdown table, PNG curves."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from framestream.bench.harness import CaseSummary, machine_info
from framestream.io.atomic import atomic_path

__all__ = ["write_scenario_json", "markdown_table", "write_markdown", "plot_curve"]


def write_scenario_json(
    results_dir: Path, scenario: str, summaries: list[CaseSummary], settings: dict[str, Any], ratios: dict[str, float]
) -> Path:
    """``<results_dir>/<scenario>.json``: settings, machine, every run, and the headline ratios."""
    payload = {
        "scenario": scenario,
        "settings": settings,
        "machine": machine_info(),
        "cases": [s.to_json() for s in summaries],
        "ratios": ratios,
    }
    path = results_dir / f"{scenario}.json"
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(payload, indent=2) + "\n")
    return path


def _fmt_error(value: float | None) -> str:
    return "-" if value is None else f"{value:.2e}"


def markdown_table(scenario: str, summaries: list[CaseSummary], ratios: dict[str, float]) -> str:
    """Readable table of one scenario: median (min-max) time and memory, error, ratios."""
    lines = [
        f"### {scenario}",
        "",
        "| case | time s, median (min-max) | peak MiB, median (min-max) | max abs err vs ref |",
        "|---|---|---|---|",
    ]
    for s in summaries:
        lines.append(
            f"| {s.name} | {s.median_seconds:.3f} ({min(s.seconds):.3f}-{max(s.seconds):.3f}) "
            f"| {s.median_peak_bytes / 2**20:.1f} ({min(s.peak_bytes) / 2**20:.1f}-{max(s.peak_bytes) / 2**20:.1f}) "
            f"| {_fmt_error(s.max_abs_error)} |"
        )
    if ratios:
        lines.append("")
        lines.extend(f"- {name}: **{value:.2f}**" for name, value in ratios.items())
    return "\n".join(lines) + "\n"


def write_markdown(results_dir: Path, sections: list[str], header: str) -> Path:
    path = results_dir / "RESULTS.md"
    with atomic_path(path) as tmp:
        tmp.write_text(header + "\n\n" + "\n".join(sections))
    return path


def plot_curve(path: Path, title: str, xlabel: str, ylabel: str, series: dict[str, tuple[list[float], list[float]]]) -> Path | None:
    """Line plot of ``{label: (xs, ys)}`` to PNG; skipped (None) when matplotlib is missing."""
    try:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt
    except ImportError:
        return None
    fig, ax = plt.subplots(figsize=(6, 4), dpi=120)
    for label, (xs, ys) in series.items():
        ax.plot(xs, ys, marker="o", label=label)
    ax.set_title(title)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png")
    plt.close(fig)
    return path
