"""What a job reports: elapsed time and peak memory."""

from __future__ import annotations

import resource
import time
from typing import Any

import torch

from framestream.utils.units import human_bytes

__all__ = ["PeakMemory", "human_bytes"]


class PeakMemory:
    """Peak memory of a run: ``max_memory_allocated`` on CUDA, the process's peak RSS otherwise."""

    def __init__(self, device: torch.device) -> None:
        self.device = torch.device(device)
        self.start = time.perf_counter()
        if self.device.type == "cuda":
            torch.cuda.reset_peak_memory_stats(self.device)

    @property
    def kind(self) -> str:
        return "cuda_max_allocated" if self.device.type == "cuda" else "rss"

    def peak_bytes(self) -> int:
        if self.device.type == "cuda":
            return int(torch.cuda.max_memory_allocated(self.device))
        return int(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss) * 1024  # KiB on Linux

    def summary(self, **fields: Any) -> dict[str, Any]:
        return {
            **fields,
            "seconds": round(time.perf_counter() - self.start, 4),
            "peak_memory_bytes": self.peak_bytes(),
            "peak_memory_kind": self.kind,
            "device": str(self.device),
        }
