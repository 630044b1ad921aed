"""Wan 2.1 / 2.2 causal video VAE: architecture configs, model, explicit caches, streaming adapters."""

from framestream.models.wan.vae.cache import CACHE_T, WanCausalCache, stack_caches, unstack_cache
from framestream.models.wan.vae.checkpoint import WanVAECheckpointError, detect_checkpoint, load_wan_vae
from framestream.models.wan.vae.config import (
    DIFFUSERS_IGNORED_KEYS,
    WAN21_VAE_ARCH,
    WAN22_VAE_ARCH,
    WanVAEArchConfig,
    reduced_width,
    tiny_wan21_arch,
    tiny_wan22_arch,
)
from framestream.models.wan.vae.model import (
    DECODER_HEAD_PREFIXES,
    DECODER_TAIL_PREFIXES,
    ENCODER_BACK_PREFIXES,
    ENCODER_FRONT_PREFIXES,
    WanVAE,
    init_random_weights,
)
from framestream.models.wan.vae.streaming import (
    WanVAEDecoder,
    WanVAEDecoderConfig,
    WanVAEEncoder,
    WanVAEEncoderConfig,
    build_wan_vae,
)

__all__ = [
    "CACHE_T",
    "WanCausalCache",
    "stack_caches",
    "unstack_cache",
    "DIFFUSERS_IGNORED_KEYS",
    "WAN21_VAE_ARCH",
    "WAN22_VAE_ARCH",
    "WanVAEArchConfig",
    "reduced_width",
    "tiny_wan21_arch",
    "tiny_wan22_arch",
    "DECODER_HEAD_PREFIXES",
    "DECODER_TAIL_PREFIXES",
    "ENCODER_BACK_PREFIXES",
    "ENCODER_FRONT_PREFIXES",
    "WanVAE",
    "init_random_weights",
    "WanVAEDecoder",
    "WanVAEDecoderConfig",
    "WanVAEEncoder",
    "WanVAEEncoderConfig",
    "build_wan_vae",
    "WanVAECheckpointError",
    "detect_checkpoint",
    "load_wan_vae",
]
