"""LTX-2 video VAE: architecture config, model, checkpoint loading (diffusers and original layouts)."""

from framestream.models.ltx2.vae.config import (
    LTX2_VAE_ARCH,
    BlockPlan,
    LTX2VAEArchConfig,
    reduced_width,
    tiny_ltx2_arch,
)

__all__ = [
    "LTX2_VAE_ARCH",
    "BlockPlan",
    "LTX2VAEArchConfig",
    "reduced_width",
    "tiny_ltx2_arch",
]
