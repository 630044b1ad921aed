"""Blend weights: 1D trapezoid ramps that sum to exactly one across a seam.

A seam of length ``r`` gives the tile on the left ``(r - j - 0.5) / r`` and the tile on
the right ``(j + 0.5) / r`` at position ``j``: neither end of a ramp is 0 or 1, so every
tile always contributes inside its ramp, and the two weights sum to 1 up to one float
rounding. Multi-dimensional masks are separable products of the 1D ones, and since each
axis sums to one, so does the product: tiled outputs are accumulated with no weight
buffer and no division.

Temporal masks use the same 1D ramps; the causal (``T -> 1+(T-1)s``) and non-causal
(``T -> T*s``) time mappings only change where the ramps sit, which the planner computes
(see :mod:`framestream.tiling.planner`).
"""

from __future__ import annotations

import torch

from framestream.tiling.planner import AxisTile, Tile2D

__all__ = ["ramp", "trapezoid", "axis_weights", "MaskCache"]


def ramp(length: int, *, rising: bool = True, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """``(j + 0.5) / length`` for ``j`` in ``range(length)`` (reversed when ``rising`` is False)."""
    if length < 0:
        raise ValueError(f"ramp length must be >= 0, got {length}")
    j = torch.arange(length, dtype=torch.float64, device=device)
    values = (j + 0.5) / length if rising else (length - j - 0.5) / length
    return values.to(dtype)


def trapezoid(
    size: int,
    lead: int = 0,
    ramp_in: int = 0,
    ramp_out: int = 0,
    tail: int = 0,
    *,
    dtype: torch.dtype = torch.float32,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """1D weights: ``lead`` zeros, rising ramp, ones, falling ramp, ``tail`` zeros (``size`` in all)."""
    plateau = size - lead - ramp_in - ramp_out - tail
    if min(lead, ramp_in, ramp_out, tail) < 0 or plateau < 0:
        raise ValueError(f"trapezoid parts (lead={lead}, ramps={ramp_in}/{ramp_out}, tail={tail}) do not fit in size {size}")
    return torch.cat(
        [
            torch.zeros(lead, dtype=dtype, device=device),
            ramp(ramp_in, rising=True, dtype=dtype, device=device),
            torch.ones(plateau, dtype=dtype, device=device),
            ramp(ramp_out, rising=False, dtype=dtype, device=device),
            torch.zeros(tail, dtype=dtype, device=device),
        ]
    )


def axis_weights(tile: AxisTile, *, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> torch.Tensor:
    """The full 1D blend weights of an axis tile over its output (length ``tile.out_size``)."""
    return trapezoid(*tile.blend_spec, dtype=dtype, device=device)


class MaskCache:
    """Builds 1D and 2D masks lazily, once per distinct blend spec, for one tiled call.

    Masks are cropped to the tile's non-zero region (``weight_start:weight_end`` on each
    axis), which is all the accumulation ever touches. Create one per call: it holds
    tensors on ``device`` and is not shared between calls or threads.
    """

    def __init__(self, dtype: torch.dtype = torch.float32, device: torch.device | str | None = None) -> None:
        self.dtype = dtype
        self.device = device
        self._1d: dict[tuple[int, ...], torch.Tensor] = {}
        self._2d: dict[tuple[tuple[int, ...], ...], torch.Tensor] = {}

    def axis(self, tile: AxisTile) -> torch.Tensor:
        """Non-zero part of the 1D weights of ``tile`` (length ``weight_end - weight_start``)."""
        key = tile.blend_spec
        mask = self._1d.get(key)
        if mask is None:
            mask = axis_weights(tile, dtype=self.dtype, device=self.device)[tile.lead : tile.out_size - tile.tail]
            self._1d[key] = mask
        return mask

    def spatial(self, tile: Tile2D) -> torch.Tensor:
        """2D (height, width) mask of a spatial tile, cropped to its non-zero region."""
        key = (tile.h.blend_spec, tile.w.blend_spec)
        mask = self._2d.get(key)
        if mask is None:
            mask = self.axis(tile.h)[:, None] * self.axis(tile.w)[None, :]
            self._2d[key] = mask
        return mask

    def video(self, t_tile: AxisTile, tile: Tile2D) -> torch.Tensor:
        """3D (time, height, width) mask of one temporal x spatial tile, cropped to its non-zero region.

        Built on each call from the cached 1D/2D factors, not cached itself: a 3D mask is
        as large as a tile's output, and a plan has several distinct ones.
        """
        return self.axis(t_tile)[:, None, None] * self.spatial(tile)[None]
