"""Per-AR-step stage timing and memory for :class:`~framestream.pipeline.StreamInferencePipeline`.

:class:`EventProfiler` times the pipeline's stages (``encode``, ``diffusion``,
``decode``, ``finalize``) of one AR step. On CUDA it records CUDA events and
synchronises once, when the step ends; elsewhere it uses ``time.perf_counter``
(CPU ops are synchronous). Memory is the CUDA caching allocator's
allocated / reserved / peak bytes on GPU and the process resident set size on CPU.

:func:`profile_table` renders a list of step records as a ``rich`` table.
"""

from __future__ import annotations

import contextlib
import os
import resource
import sys
import time
from collections.abc import Iterator, Sequence
from typing import Any

import torch

__all__ = ["STAGES", "EventProfiler", "format_record", "process_rss_bytes", "profile_table"]

STAGES: tuple[str, ...] = ("encode", "diffusion", "decode", "finalize")
"""Pipeline stages, in execution order; every record has a ``<stage>_ms`` key for each."""

_GIB = float(1 << 30)


def process_rss_bytes() -> tuple[int, int]:
    """``(current, peak)`` resident set size of this process in bytes.

    Current RSS is read from ``/proc/self/statm`` where it exists (Linux) and falls
    back to the peak elsewhere. The peak (``ru_maxrss``) is over the process lifetime.
    """
    usage = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    peak = usage if sys.platform == "darwin" else usage * 1024  # bytes on macOS, KiB on Linux
    try:
        with open("/proc/self/statm") as f:
            current = int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")
    except (OSError, ValueError, IndexError):
        current = peak
    return current, max(peak, current)


class EventProfiler:
    """Times the stages of one AR step at a time and keeps every finished step's record.

    Usage (the pipeline does this)::

        profiler.begin_step()
        with profiler.stage("diffusion"):
            ...
        record = profiler.end_step()   # {"encode_ms": ..., "total_ms": ..., "mem_alloc_gib": ...}

    ``total_ms`` is the sum of the stage times, so time the caller spends between
    ``generate`` and ``finalize`` (writing frames, say) is not counted;
    ``total_ms_wo_finalize`` leaves out the ``finalize`` stage. A stage that did not run
    in the step reports 0. On CUDA, :meth:`begin_step` resets the peak-memory counter so
    ``mem_peak_gib`` is the step's peak; on CPU it is the process-lifetime peak RSS.
    """

    def __init__(self, device: torch.device | str | None = None) -> None:
        self.device = torch.device(device) if device is not None else torch.device("cpu")
        self.records: list[dict[str, float]] = []
        """Records of all finished steps, oldest first."""
        self._spans: dict[str, list[Any]] | None = None

    @property
    def uses_cuda_events(self) -> bool:
        """Whether stages are timed with CUDA events (device is CUDA and CUDA is available)."""
        return self.device.type == "cuda" and torch.cuda.is_available()

    @property
    def in_step(self) -> bool:
        """True between :meth:`begin_step` and :meth:`end_step`."""
        return self._spans is not None

    def begin_step(self) -> None:
        """Start a new step, discarding an unfinished one (e.g. a last step never finalized)."""
        self._spans = {}
        if self.uses_cuda_events:
            torch.cuda.reset_peak_memory_stats(self.device)

    def _mark(self) -> Any:
        if self.uses_cuda_events:
            event = torch.cuda.Event(enable_timing=True)
            event.record(torch.cuda.current_stream(self.device))
            return event
        return time.perf_counter()

    @contextlib.contextmanager
    def stage(self, name: str) -> Iterator[None]:
        """Time the enclosed block as stage ``name`` of the current step."""
        if name not in STAGES:
            raise ValueError(f"unknown stage {name!r}; stages are {STAGES}")
        if self._spans is None:
            raise RuntimeError("EventProfiler.stage() called outside a step: call begin_step() first")
        start = self._mark()
        try:
            yield
        finally:
            self._spans.setdefault(name, []).append((start, self._mark()))

    def _elapsed_ms(self, start: Any, end: Any) -> float:
        if self.uses_cuda_events:
            return float(start.elapsed_time(end))
        return (end - start) * 1000.0

    def end_step(self) -> dict[str, float]:
        """Finish the step: synchronise (CUDA), compute the record, append it to :attr:`records`."""
        if self._spans is None:
            raise RuntimeError("EventProfiler.end_step() called without begin_step()")
        spans, self._spans = self._spans, None
        if self.uses_cuda_events:
            torch.cuda.synchronize(self.device)
        record: dict[str, float] = {}
        for name in STAGES:
            record[f"{name}_ms"] = float(sum((self._elapsed_ms(s, e) for s, e in spans.get(name, ())), 0.0))
        record["total_ms"] = sum(record[f"{name}_ms"] for name in STAGES)
        record["total_ms_wo_finalize"] = record["total_ms"] - record["finalize_ms"]
        record.update(self.memory_gib())
        self.records.append(record)
        return record

    def memory_gib(self) -> dict[str, float]:
        """``mem_alloc_gib``, ``mem_reserved_gib``, ``mem_peak_gib`` now (GPU allocator, or process RSS)."""
        if self.uses_cuda_events:
            return {
                "mem_alloc_gib": torch.cuda.memory_allocated(self.device) / _GIB,
                "mem_reserved_gib": torch.cuda.memory_reserved(self.device) / _GIB,
                "mem_peak_gib": torch.cuda.max_memory_allocated(self.device) / _GIB,
            }
        current, peak = process_rss_bytes()
        # CPU has no caching allocator: "allocated" and "reserved" are both the resident set.
        return {"mem_alloc_gib": current / _GIB, "mem_reserved_gib": current / _GIB, "mem_peak_gib": peak / _GIB}


def format_record(record: dict[str, float]) -> str:
    """One-line ``key=value`` rendering of a record, for logs."""
    parts = []
    for key, value in record.items():
        parts.append(f"{key}={value:.1f}" if "_ms" in key else f"{key}={value:.3f}")
    return " ".join(parts)


def _column_label(key: str) -> str:
    labels = {"total_ms_wo_finalize": "w/o fin", "mem_reserved_gib": "resv"}
    if key in labels:
        return labels[key]
    return key.removeprefix("mem_").removesuffix("_ms").removesuffix("_gib").replace("_", " ")


def profile_table(
    records: Sequence[dict[str, float]],
    *,
    title: str = "Per-stage timing",
    per_step: bool = True,
    first_index: int = 0,
) -> Any:
    """Render profiler records (as returned by ``pipeline.finalize``) as a ``rich.table.Table``.

    Rows are the AR steps (numbered from ``first_index``; only with ``per_step``)
    followed by ``mean`` and, when there are several steps, ``mean*`` (the mean without
    the first step, which usually carries warm-up costs). Columns are the time keys (ms), then the
    memory keys (GiB); ``reserved`` is left out when it equals ``alloc`` everywhere (CPU). Print it with ``rich.console.Console().print(table)``.
    """
    from rich import box
    from rich.table import Table

    if not records:
        table = Table(title=title, box=box.SIMPLE_HEAD)
        table.add_column("no profiled steps")
        return table
    keys: list[str] = []
    for record in records:
        for key in record:
            if key not in keys:
                keys.append(key)
    ms_keys = [k for k in keys if k.endswith("_ms") or "_ms_" in k]
    other_keys = [k for k in keys if k not in ms_keys]
    if all(r.get("mem_reserved_gib") == r.get("mem_alloc_gib") for r in records):
        other_keys = [k for k in other_keys if k != "mem_reserved_gib"]  # CPU: both are the RSS
    caption = "times in ms" + (", memory in GiB" if any(k.endswith("_gib") for k in other_keys) else "")
    if len(records) > 1:
        caption += "; mean* leaves out the first step"
    table = Table(title=title, caption=caption, box=box.SIMPLE_HEAD, show_edge=False, pad_edge=False, padding=(0, 0, 0, 1))
    table.add_column("step", justify="right")
    for key in ms_keys + other_keys:
        label = _column_label(key)
        table.add_column(label, justify="right", min_width=len(label))

    def row(label: str, rows: Sequence[dict[str, float]]) -> list[str]:
        cells = [label]
        for key in ms_keys + other_keys:
            values = [r[key] for r in rows if key in r]
            if not values:
                cells.append("-")
                continue
            mean = sum(values) / len(values)
            cells.append(f"{mean:.1f}" if key in ms_keys else f"{mean:.3g}")
        return cells

    if per_step:
        for i, record in enumerate(records):
            table.add_row(*row(str(first_index + i), [record]))
        table.add_section()
    table.add_row(*row("mean", records), style="bold")
    if len(records) > 1:
        table.add_row(*row("mean*", records[1:]))
    return table
