"""Building a Wan VAE: loaded from a checkpoint or with seeded random weights, eval mode, no gradients."""

from __future__ import annotations

import torch

from framestream.models.wan.vae.config import WanVAEArchConfig
from framestream.models.wan.vae.model import WanVAE, init_random_weights
from framestream.utils.dtypes import parse_dtype

__all__ = ["build_wan_vae"]


def build_wan_vae(
    arch: WanVAEArchConfig,
    *,
    checkpoint_path: str | None = None,
    weights_dtype: torch.dtype | str = torch.float32,
    device: torch.device | str | None = None,
    include_encoder: bool = True,
    include_decoder: bool = True,
    seed: int = 0,
) -> WanVAE:
    """A :class:`WanVAE` in eval mode without gradients: loaded from ``checkpoint_path``
    (via :func:`framestream.models.wan.vae.checkpoint.load_wan_vae`) or seeded random."""
    dtype = parse_dtype(weights_dtype)
    device = torch.device("cpu") if device is None else torch.device(device)
    if checkpoint_path is not None:
        from framestream.models.wan.vae.checkpoint import load_wan_vae

        model = load_wan_vae(
            checkpoint_path,
            arch=arch,
            dtype=dtype,
            device=device,
            include_encoder=include_encoder,
            include_decoder=include_decoder,
        )
    else:
        with torch.device("meta"):
            model = WanVAE(arch, include_encoder=include_encoder, include_decoder=include_decoder)
        model.to_empty(device=device)
        init_random_weights(model, seed)
        model.to(dtype)
    return model.eval().requires_grad_(False)
