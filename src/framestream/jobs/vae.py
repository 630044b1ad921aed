"""The Wan VAE a job runs: checkpoint checked from its headers, then loaded (one half or both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from framestream.jobs.checks import vae_name

__all__ = ["check_checkpoint", "load_vae"]


def check_checkpoint(path: str | Path, version: str, *, need_encoder: bool = False, need_decoder: bool = False) -> Path:
    """Locate the checkpoint and check its Wan version and halves from headers only; returns the local path."""
    from framestream.models.wan.vae.checkpoint import detect_checkpoint, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        try:
            path = resolve_checkpoint(str(path))  # a Hugging Face repo id
        except RuntimeError as err:
            raise ValueError(str(err)) from None
    info = detect_checkpoint(path)
    if info.version != version:
        raise ValueError(
            f"--checkpoint {path} holds a Wan {info.version} VAE ({info.layout} layout) but --vae is "
            f"{vae_name(version)}; pass --vae {vae_name(info.version)} or a Wan {version} checkpoint"
        )
    if need_encoder and not info.has_encoder:
        raise ValueError(f"--checkpoint {path} has no encoder weights (a decoder-only checkpoint cannot encode)")
    if need_decoder and not info.has_decoder:
        raise ValueError(f"--checkpoint {path} has no decoder weights (an encoder-only checkpoint cannot decode)")
    return path


def load_vae(
    path: str | Path,
    version: str,
    *,
    weights_dtype: torch.dtype = torch.float32,
    device: torch.device | str = "cpu",
    include_encoder: bool = False,
    include_decoder: bool = False,
) -> Any:
    """Check (see :func:`check_checkpoint`) and load the half (or halves) needed, eval mode, no grad."""
    from framestream.models.wan.vae.checkpoint import load_wan_vae

    path = check_checkpoint(path, version, need_encoder=include_encoder, need_decoder=include_decoder)
    return load_wan_vae(
        path,
        arch=None,
        dtype=weights_dtype,
        device=device,
        include_encoder=include_encoder,
        include_decoder=include_decoder,
    )
