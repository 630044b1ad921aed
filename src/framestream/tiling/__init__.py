"""Generic tiling engine: planning, blend masks, batched tile calls, blended tiled decode/encode, memory budgets."""

from framestream.tiling.batching import batch_schedule, call_key, iter_batched, map_batched, map_batched_with_state
from framestream.tiling.blend import MaskCache, axis_weights, ramp, trapezoid
from framestream.tiling.budget import TilingChoice, blend_buffer_bytes, choose_tiling, linear_activation_estimate
from framestream.tiling.generic import as_decode_fn, as_encode_fn, infer_scales, iter_tiled_decode, tiled_decode, tiled_encode
from framestream.tiling.planner import (
    AxisTile,
    LatentTiling,
    Tile2D,
    TilePlan,
    TilingConfig,
    VideoTilePlan,
    plan_axis,
    plan_latent_grid,
    plan_pixel_grid,
    plan_temporal,
    plan_tiles_2d,
    plan_video_decode,
)

__all__ = [
    "AxisTile",
    "LatentTiling",
    "MaskCache",
    "Tile2D",
    "TilePlan",
    "TilingChoice",
    "TilingConfig",
    "VideoTilePlan",
    "as_decode_fn",
    "as_encode_fn",
    "axis_weights",
    "batch_schedule",
    "blend_buffer_bytes",
    "call_key",
    "choose_tiling",
    "infer_scales",
    "iter_batched",
    "iter_tiled_decode",
    "linear_activation_estimate",
    "map_batched",
    "map_batched_with_state",
    "plan_axis",
    "plan_latent_grid",
    "plan_pixel_grid",
    "plan_temporal",
    "plan_tiles_2d",
    "plan_video_decode",
    "ramp",
    "tiled_decode",
    "tiled_encode",
    "trapezoid",
]
