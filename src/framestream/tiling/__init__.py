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
from framestream.tiling.receptive_field import (
    ReceptiveField,
    derive_decoder_receptive_field,
    derive_encoder_receptive_field,
    measure_decoder_receptive_field,
    measure_encoder_receptive_field,
)
from framestream.tiling.dispatch import decode_tiled, encode_tiled, iter_decode_tiled  # Wan or LTX-2, by model
from framestream.tiling.ltx2_exact import LTX2TilePlan, plan_ltx2_decode, plan_ltx2_encode
from framestream.tiling.wan_budget import ExactDecodeMemory, choose_exact_tiling, estimate_exact_decode_memory
from framestream.tiling.wan_encode_budget import (
    ExactEncodeMemory,
    SafeEncodePlan,
    choose_exact_encode_tiling,
    estimate_exact_encode_memory,
    plan_exact_encode_safe,
)
from framestream.tiling.wan_exact import (
    AxisCrop,
    ExactTile,
    ExactTilePlan,
    WanTiledDecodeState,
    WanTiledEncodeState,
    iter_encode_tiled,
    plan_exact_decode,
    plan_exact_encode,
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
    # exact Wan tiling
    "ReceptiveField",
    "derive_decoder_receptive_field",
    "derive_encoder_receptive_field",
    "measure_decoder_receptive_field",
    "measure_encoder_receptive_field",
    "AxisCrop",
    "ExactDecodeMemory",
    "ExactEncodeMemory",
    "ExactTile",
    "ExactTilePlan",
    "WanTiledDecodeState",
    "WanTiledEncodeState",
    "SafeEncodePlan",
    "choose_exact_encode_tiling",
    "choose_exact_tiling",
    "decode_tiled",
    "encode_tiled",
    "estimate_exact_decode_memory",
    "estimate_exact_encode_memory",
    "iter_decode_tiled",
    "iter_encode_tiled",
    "plan_exact_decode",
    "plan_exact_encode",
    "plan_exact_encode_safe",
    # exact LTX-2 tiling (decode_tiled / encode_tiled dispatch on the model)
    "LTX2TilePlan",
    "plan_ltx2_decode",
    "plan_ltx2_encode",
]
