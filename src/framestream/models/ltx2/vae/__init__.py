"""LTX-2 video VAE: architecture config, model, checkpoint loading (diffusers and original layouts)."""

from framestream.models.ltx2.vae.checkpoint import (
    LTX2VAECheckpointError,
    detect_ltx2_checkpoint,
    load_ltx2_vae,
    save_original_checkpoint,
)
from framestream.models.ltx2.vae.config import (
    LTX2_VAE_ARCH,
    BlockPlan,
    LTX2VAEArchConfig,
    reduced_width,
    shallow_ltx2_arch,
    tiny_ltx2_arch,
)
from framestream.models.ltx2.vae.model import LOGVAR_RANGE, LTX2VAE, init_random_weights

__all__ = [
    "LTX2_VAE_ARCH",
    "BlockPlan",
    "LTX2VAEArchConfig",
    "reduced_width",
    "tiny_ltx2_arch",
    "shallow_ltx2_arch",
    "LTX2VAE",
    "LOGVAR_RANGE",
    "init_random_weights",
    "LTX2VAECheckpointError",
    "detect_ltx2_checkpoint",
    "load_ltx2_vae",
    "save_original_checkpoint",
]
