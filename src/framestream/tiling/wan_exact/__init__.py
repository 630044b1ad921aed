"""Exact spatial tiling of the Wan VAE decoder and encoder (streaming, tile-batched, cache per tile).

Tiled output equals untiled output up to float rounding: only the stages without global
coupling are tiled, each tile reads its owned cells plus a halo derived from the model
(:mod:`framestream.tiling.receptive_field`) and keeps its own causal cache. Why that is
exact, staged cropping, batching, streaming, the tile-major order and the cache memory:
``docs/exact_tiling.md``.

Files: ``plan.py`` (tile plans), ``state.py`` (stream states), ``tile_calls.py`` (one
chunk's batched tile calls), ``decode.py`` and ``encode.py`` (the two directions).
"""

from framestream.tiling.wan_exact.decode import decode_tiled, iter_decode_tiled
from framestream.tiling.wan_exact.encode import encode_tiled, iter_encode_tiled
from framestream.tiling.wan_exact.plan import AxisCrop, ExactTile, ExactTilePlan, plan_exact_decode, plan_exact_encode
from framestream.tiling.wan_exact.state import WanTiledDecodeState, WanTiledEncodeState

__all__ = [
    "AxisCrop",
    "ExactTile",
    "ExactTilePlan",
    "WanTiledDecodeState",
    "WanTiledEncodeState",
    "plan_exact_decode",
    "plan_exact_encode",
    "iter_decode_tiled",
    "decode_tiled",
    "iter_encode_tiled",
    "encode_tiled",
]
