"""Subprocess side of the benchmark harness: run one case, print one JSON line.

A case function receives its params plus ``timer``, a :class:`SectionTimer`. It does
its set-up (weights, inputs), then wraps the measured work in ``with timer:`` and
returns the output tensor (or None). Extra numbers can go in ``timer.extra``;
``timer.elapsed()`` inside the block gives the time so far (time to first frame).

The request may set ``threads`` (``torch.set_num_threads``) and ``seed`` (global
torch seed, set before the case runs).
"""

from __future__ import annotations

import gc
import json
import resource
import sys
import time
from pathlib import Path

import torch

__all__ = ["SectionTimer", "current_rss_bytes", "main"]


def current_rss_bytes() -> int:
    """Resident set size of this process right now (Linux /proc)."""
    with open("/proc/self/statm") as handle:
        pages = int(handle.read().split()[1])
    return pages * resource.getpagesize()


def reset_peak_rss() -> bool:
    """Reset the kernel's peak-RSS mark (VmHWM) for this process; False where not allowed."""
    try:
        with open("/proc/self/clear_refs", "w") as handle:
            handle.write("5")
        return True
    except OSError:
        return False


def peak_rss_bytes() -> int:
    """Peak resident set size since the last reset (VmHWM), else since start (ru_maxrss)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


class SectionTimer:
    """Times one ``with`` block and measures the memory it adds at its peak."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.peak_bytes = 0
        self.extra: dict = {}
        self._cuda = torch.cuda.is_available()

    def begin_memory(self) -> None:
        """Start the memory measurement now (before a warm-up) instead of at ``with timer:``.

        On CPU the warm-up's freed memory stays in the allocator and the timed section
        reuses it, so a baseline taken after a warm-up under-reports (0-33 MiB measured
        for a case needing ~200 MiB). Starting before the warm-up counts the section's
        peak together with one-time library workspaces (the same for every case).
        """
        gc.collect()
        if self._cuda:
            torch.cuda.synchronize()
            torch.cuda.reset_peak_memory_stats()
            self._base = torch.cuda.memory_allocated()
        else:
            reset_peak_rss()
            self._base = current_rss_bytes()
        self._memory_started = True

    def __enter__(self) -> "SectionTimer":
        if not getattr(self, "_memory_started", False):
            self.begin_memory()
        elif self._cuda:
            torch.cuda.synchronize()
        self._start = time.perf_counter()
        return self

    def elapsed(self) -> float:
        """Seconds since the block was entered (synchronising CUDA first)."""
        if self._cuda:
            torch.cuda.synchronize()
        return time.perf_counter() - self._start

    def __exit__(self, *exc) -> None:
        if self._cuda:
            torch.cuda.synchronize()
        self.seconds = time.perf_counter() - self._start
        if self._cuda:
            self.peak_bytes = torch.cuda.max_memory_allocated() - self._base
        else:
            # VmHWM was reset on entry, so set-up peaks are not counted.
            self.peak_bytes = max(0, peak_rss_bytes() - self._base)


def _resolve(path: str):
    module_name, _, name = path.partition(":")
    module = __import__(module_name, fromlist=[name])
    return getattr(module, name)


def main(argv: list[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else argv
    request = json.loads(Path(args[0]).read_text())
    fn = _resolve(request["function"])
    if request.get("threads"):
        torch.set_num_threads(int(request["threads"]))
    torch.manual_seed(int(request.get("seed", 0)))
    timer = SectionTimer()
    with torch.inference_mode():
        output = fn(timer=timer, **request["params"])
    if request.get("output") and output is not None:
        torch.save(output.detach().cpu(), request["output"])
    if timer.seconds == 0.0:
        raise RuntimeError(f"case {request['function']} never entered its `with timer:` block")
    result = {"seconds": timer.seconds, "peak_bytes": int(timer.peak_bytes), "extra": timer.extra}
    print(json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
