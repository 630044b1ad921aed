"""3D convolution that reaches oneDNN on the CPU for every chunk shape.

PyTorch sends a float32 CPU ``conv3d`` to its native kernel (vol2col + GEMM) instead of
oneDNN whenever ``batch * channels * frames * height <= 20480``, a rule tuned for 2D
images. A streaming decoder's chunks (a few frames of a tile) fall under it at most
widths. Measured here: the native kernel is 2.5-7x slower at those shapes, and its column
buffer (``C_in * k^3`` values per output voxel: 29 MiB for one 64 -> 128 channel conv of a
128 px tile) inflates the peak. See docs/exact_tiling.md (CPU kernels).
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

__all__ = ["conv3d", "uses_onednn"]

_ONES = (1, 1, 1)


def _triple(v: int | tuple[int, ...]) -> tuple[int, int, int]:
    return (v, v, v) if isinstance(v, int) else (v[0], v[1], v[2])


def uses_onednn(x: torch.Tensor) -> bool:
    """Whether :func:`conv3d` runs ``x`` through oneDNN: eager float32 CPU tensors, with
    oneDNN built in and not switched off (``torch.backends.mkldnn.flags(enabled=False)``).

    Tracing (``torch.compile``, meta and fake tensors) keeps ``F.conv3d``, which compilers
    and shape propagation understand.
    """
    return (
        x.device.type == "cpu"
        and x.dtype == torch.float32
        and x.dim() == 5
        and torch.backends.mkldnn.enabled
        and torch.backends.mkldnn.is_available()
        and not torch.compiler.is_compiling()
    )


def conv3d(
    x: torch.Tensor,
    weight: torch.Tensor,
    bias: torch.Tensor | None = None,
    stride: int | tuple[int, int, int] = 1,
    padding: int | tuple[int, int, int] = 0,
) -> torch.Tensor:
    """``F.conv3d(x, weight, bias, stride, padding)`` (one group, no dilation), through
    oneDNN where :func:`uses_onednn` says so. Same values up to float rounding; autograd works."""
    if uses_onednn(x):
        return torch.mkldnn_convolution(x, weight, bias, _triple(padding), _triple(stride), _ONES, 1)
    return F.conv3d(x, weight, bias, stride, padding)
