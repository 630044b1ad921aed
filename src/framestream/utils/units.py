"""Byte counts as people write them: ``"8GiB"`` <-> ``8589934592``."""

from __future__ import annotations

import math
import re

__all__ = ["human_bytes", "parse_bytes"]

_UNITS = {"": 1, "b": 1, "k": 1000, "kb": 1000, "m": 1000**2, "mb": 1000**2, "g": 1000**3, "gb": 1000**3, "t": 1000**4, "tb": 1000**4,
          "kib": 1024, "mib": 1024**2, "gib": 1024**3, "tib": 1024**4}


def human_bytes(n: int) -> str:
    """``1536`` -> ``"1.5 KiB"``."""
    if n <= 0:
        return "0 B"
    unit = min(int(math.log(n, 1024)), 4)
    return f"{n / 1024**unit:.1f} {['B', 'KiB', 'MiB', 'GiB', 'TiB'][unit]}"


def parse_bytes(text: str, option: str) -> int:
    """``"8GiB"``, ``"512MiB"``, ``"2GB"``, ``"1e9"`` -> bytes; a clear ``ValueError`` naming ``option`` otherwise."""
    match = re.fullmatch(r"\s*([0-9]*\.?[0-9]+(?:e[0-9]+)?)\s*([a-z]*)\s*", str(text).lower())
    if not match or match.group(2) not in _UNITS:
        raise ValueError(f"{option} takes a size such as 8GiB, 512MiB or 2GB, got {text!r}")
    value = float(match.group(1)) * _UNITS[match.group(2)]
    if value < 1:
        raise ValueError(f"{option} must be positive, got {text!r}")
    return int(value)
