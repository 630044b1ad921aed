"""Handing freed host memory back to the operating system between tile calls.

glibc keeps freed blocks below its (self-raising) mmap threshold in the heap, so a CPU
process that decodes tile after tile grows its resident size well past its live tensors
(measured: 342 MiB resident for 147 MiB of live tensors in a 128 px tile-major decode).
``malloc_trim`` returns the free pages; it changes no allocator setting.
"""

from __future__ import annotations

import ctypes
import sys
from functools import cache

import torch

__all__ = ["release_freed_host_memory"]


@cache
def _malloc_trim():  # noqa: ANN202 - a ctypes function or None
    """glibc's ``malloc_trim``; None on other C libraries and systems (looked up once: a constant)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL("libc.so.6").malloc_trim
    except (OSError, AttributeError):
        return None


def release_freed_host_memory(like: torch.Tensor) -> None:
    """Return the host heap's free pages to the OS when ``like`` lives in host memory (a no-op elsewhere)."""
    if like.device.type != "cpu":
        return
    trim = _malloc_trim()
    if trim is not None:
        trim(0)
