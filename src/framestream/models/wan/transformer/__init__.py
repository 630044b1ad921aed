"""Wan 2.1 / 2.2 DiT: network, causal KV cache, checkpoint loading, pipeline adapters (T2V, Wan 2.2 TI2V)."""

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
    WAN22_A14B,
    WAN22_I2V_A14B,
    WAN22_I2V_TINY,
    WAN22_TI2V_5B,
    WAN22_TINY,
    WAN_ARCH_PRESETS,
    WAN_TINY,
    WanTransformerArchConfig,
    WanTransformerConfig,
)
from framestream.models.wan.transformer.model import WanDiT, WanTransformer
from framestream.models.wan.transformer.i2v import WanI2VTransformer, WanI2VTransformerConfig
from framestream.models.wan.transformer.ti2v import WanTI2VTransformer, WanTI2VTransformerConfig

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
    "WAN22_A14B",
    "WAN22_I2V_A14B",
    "WAN22_I2V_TINY",
    "WAN22_TI2V_5B",
    "WAN22_TINY",
    "WAN_ARCH_PRESETS",
    "WAN_TINY",
    "WanTransformerArchConfig",
    "WanTransformerConfig",
    "WanDiT",
    "WanTransformer",
    "WanI2VTransformer",
    "WanI2VTransformerConfig",
    "WanTI2VTransformer",
    "WanTI2VTransformerConfig",
]
