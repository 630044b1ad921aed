"""Wan 2.1 text-to-video DiT: network, causal KV cache, checkpoint loading, pipeline adapter."""

from framestream.models.wan.transformer.cache import KVCacheFullError, WanKVCache
from framestream.models.wan.transformer.checkpoint import (
    detect_layout,
    diffusers_to_original_key,
    load_wan_transformer,
    original_to_diffusers_key,
    save_wan_checkpoint,
)
from framestream.models.wan.transformer.config import (
    WAN21_T2V_1_3B,
    WAN21_T2V_14B,
    WAN_ARCH_PRESETS,
    WAN_TINY,
    WanTransformerArchConfig,
    WanTransformerConfig,
)
from framestream.models.wan.transformer.model import WanDiT, WanTransformer

__all__ = [
    "KVCacheFullError",
    "WanKVCache",
    "detect_layout",
    "diffusers_to_original_key",
    "load_wan_transformer",
    "original_to_diffusers_key",
    "save_wan_checkpoint",
    "WAN21_T2V_1_3B",
    "WAN21_T2V_14B",
    "WAN_ARCH_PRESETS",
    "WAN_TINY",
    "WanTransformerArchConfig",
    "WanTransformerConfig",
    "WanDiT",
    "WanTransformer",
]
