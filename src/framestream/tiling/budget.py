"""Pick the largest tile (then the largest tile batch) whose estimated peak memory fits a budget.

The estimate is a pluggable function ``estimate_fn(tile_latent_hw, batch_size) -> bytes``:
the peak memory of one decode call on ``batch_size`` stacked tiles of ``tile_latent_hw``
latents. The default, :func:`linear_activation_estimate`, is

    fixed_bytes + batch_size * (h * s) * (w * s) * frames * bytes_per_output_pixel

i.e. activations proportional to the output pixels of the call, ``bytes_per_output_pixel``
being the peak activation bytes per output pixel per frame (all channels and
intermediate layers folded in). It is a model, to be calibrated against measured peaks
of the real decoder; ``fixed_bytes`` carries what does not depend on the tile (weights,
the blend buffer: see :func:`blend_buffer_bytes`).
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from framestream.tiling.planner import plan_tiles_2d

__all__ = ["EstimateFn", "TilingChoice", "blend_buffer_bytes", "choose_tiling", "linear_activation_estimate"]

EstimateFn = Callable[[tuple[int, int], int], float]


class TilingChoice(NamedTuple):
    """Result of :func:`choose_tiling`."""

    tile_size_px: int
    tile_batch_size: int


def linear_activation_estimate(
    bytes_per_output_pixel: float, *, spatial_scale: int, frames: int = 1, fixed_bytes: float = 0
) -> EstimateFn:
    """Estimate ``fixed + batch * (h*s) * (w*s) * frames * bytes_per_output_pixel`` (see module doc)."""
    if bytes_per_output_pixel <= 0 or spatial_scale < 1 or frames < 1 or fixed_bytes < 0:
        raise ValueError("need bytes_per_output_pixel > 0, spatial_scale >= 1, frames >= 1, fixed_bytes >= 0")

    def estimate(tile_latent_hw: tuple[int, int], batch_size: int) -> float:
        h, w = tile_latent_hw
        return fixed_bytes + batch_size * (h * spatial_scale) * (w * spatial_scale) * frames * bytes_per_output_pixel

    return estimate


def blend_buffer_bytes(out_hw: tuple[int, int], frames: int, *, channels: int = 3, batch: int = 1, bytes_per_value: int = 4) -> int:
    """Bytes of the streaming decoder's float32 blend buffer for ``frames`` output frames of full size ``out_hw``."""
    return batch * channels * frames * out_hw[0] * out_hw[1] * bytes_per_value


def choose_tiling(
    budget_bytes: float,
    latent_hw: tuple[int, int],
    *,
    spatial_scale: int,
    estimate_fn: EstimateFn | None = None,
    bytes_per_output_pixel: float | None = None,
    frames: int = 1,
    fixed_bytes: float = 0,
    overlap_px: int = 0,
    min_tile_px: int | None = None,
    max_tile_px: int | None = None,
    max_batch_size: int | None = None,
) -> TilingChoice:
    """Largest square tile size (px), then the largest tile batch, whose estimate fits ``budget_bytes``.

    Give either ``estimate_fn`` or ``bytes_per_output_pixel`` (with ``frames`` and
    ``fixed_bytes``: see :func:`linear_activation_estimate`). Candidate tiles go from the
    whole latent grid down to ``min_tile_px`` (default: overlap + one latent) in steps of
    one latent; each is planned as the decoder would plan it, and the estimate is taken on
    the planned tile shapes. The batch never exceeds the largest shape group (more would
    not cut calls) nor ``max_batch_size``. Raises ``ValueError`` if even the smallest
    tile alone does not fit.
    """
    if (estimate_fn is None) == (bytes_per_output_pixel is None):
        raise ValueError("give exactly one of estimate_fn and bytes_per_output_pixel")
    if estimate_fn is None:
        estimate_fn = linear_activation_estimate(bytes_per_output_pixel, spatial_scale=spatial_scale, frames=frames, fixed_bytes=fixed_bytes)
    h, w = latent_hw
    if h < 1 or w < 1:
        raise ValueError(f"latent_hw must be positive, got {latent_hw}")
    for name, value in (("overlap_px", overlap_px), ("min_tile_px", min_tile_px), ("max_tile_px", max_tile_px)):
        if value is not None and (value < 0 or value % spatial_scale):
            raise ValueError(f"{name}={value} must be a non-negative multiple of the spatial scale {spatial_scale}")
    if max_batch_size is not None and max_batch_size < 1:
        raise ValueError(f"max_batch_size must be >= 1, got {max_batch_size}")
    overlap = overlap_px // spatial_scale
    smallest = max(overlap + 1, (min_tile_px or 0) // spatial_scale)
    largest = max(h, w) if max_tile_px is None else min(max(h, w), max_tile_px // spatial_scale)
    if largest < smallest:
        raise ValueError(f"no tile size between min {smallest * spatial_scale} px and max {largest * spatial_scale} px")
    for tile in range(largest, smallest - 1, -1):
        plan = plan_tiles_2d(h, w, tile, overlap, min(tile, smallest))
        groups = [(shape, len(tiles)) for shape, tiles in plan.shape_groups().items()]
        top = max(n for _, n in groups)
        if max_batch_size is not None:
            top = min(top, max_batch_size)
        for batch in range(top, 0, -1):
            if max(estimate_fn(shape, min(batch, n)) for shape, n in groups) <= budget_bytes:
                return TilingChoice(tile_size_px=tile * spatial_scale, tile_batch_size=batch)
    need = max(estimate_fn(shape, 1) for shape in plan.shape_groups())
    raise ValueError(
        f"even the smallest tile ({smallest * spatial_scale} px, overlap {overlap_px} px, batch 1) needs an estimated "
        f"{need:.4g} bytes, over the budget of {budget_bytes:.4g} bytes"
    )
