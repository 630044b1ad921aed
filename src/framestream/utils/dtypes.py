"""Dtype names accepted everywhere a user types one (configs, CLI, JSON)."""

from __future__ import annotations

import torch

__all__ = ["DTYPE_NAMES", "parse_dtype", "dtype_name"]

DTYPE_NAMES: dict[str, torch.dtype] = {
    "fp32": torch.float32,
    "float32": torch.float32,
    "float": torch.float32,
    "bf16": torch.bfloat16,
    "bfloat16": torch.bfloat16,
    "fp16": torch.float16,
    "float16": torch.float16,
    "half": torch.float16,
    "fp64": torch.float64,
    "float64": torch.float64,
    "int64": torch.int64,
    "int32": torch.int32,
    "uint8": torch.uint8,
}


def parse_dtype(name: str | torch.dtype, where: str = "dtype") -> torch.dtype:
    """``"bf16"``, ``"bfloat16"`` or ``"torch.bfloat16"`` -> ``torch.bfloat16``; clear error otherwise."""
    if isinstance(name, torch.dtype):
        return name
    if not isinstance(name, str):
        raise ValueError(f"{where}: expected a dtype name, got {name!r}")
    key = name.strip().lower().removeprefix("torch.")
    if key not in DTYPE_NAMES:
        choices = ", ".join(sorted(DTYPE_NAMES))
        raise ValueError(f"{where}: unknown dtype {name!r}; choose one of: {choices}")
    return DTYPE_NAMES[key]


def dtype_name(dtype: torch.dtype) -> str:
    """Short canonical name: ``torch.bfloat16`` -> ``"bfloat16"``."""
    return str(dtype).removeprefix("torch.")
