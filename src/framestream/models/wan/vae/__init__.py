"""Wan 2.1 / 2.2 causal video VAE: architecture configs, model, explicit caches, builder.

The pipeline adapters live above the tiler: :mod:`framestream.decoders.wan` and
:mod:`framestream.encoders.wan`.
"""

from framestream.models.wan.vae.build import build_wan_vae
from framestream.models.wan.vae.cache import (
    CACHE_T,
    WanCausalCache,
    stack_caches,
    unstack_cache,
)
from framestream.models.wan.vae.checkpoint import (
    WanVAECheckpointError,
    detect_checkpoint,
    load_wan_vae,
)
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
    "build_wan_vae",
    "WanVAECheckpointError",
    "detect_checkpoint",
    "load_wan_vae",
]


_MOVED = {
    "WanVAEDecoder": "framestream.decoders.wan",
    "WanVAEDecoderConfig": "framestream.decoders.wan",
    "WanVAEEncoder": "framestream.encoders.wan",
    "WanVAEEncoderConfig": "framestream.encoders.wan",
}


def __getattr__(name: str):  # noqa: ANN202 - module attribute hook
    """The streaming adapters moved above the tiler (models/ must not import tiling/); this
    lazy lookup keeps ``from framestream.models.wan.vae import WanVAEDecoderConfig`` working
    for code written before the move. New code imports from framestream.decoders.wan /
    framestream.encoders.wan."""
    if name in _MOVED:
        import importlib

        return getattr(importlib.import_module(_MOVED[name]), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
