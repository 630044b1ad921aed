"""The Wan VAE a job runs: checkpoint checked from its headers, then loaded (one half or both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from framestream.jobs.checks import vae_name

__all__ = ["check_checkpoint", "load_vae", "unreadable_checkpoint"]


def check_checkpoint(path: str | Path, version: str, *, need_encoder: bool = False, need_decoder: bool = False) -> Path:
    """Locate the checkpoint and check its Wan version and halves from headers only; returns the local path."""
    from framestream.models.wan.vae.checkpoint import detect_checkpoint, resolve_checkpoint

    path = Path(path)
    if not path.exists():
        try:
            path = resolve_checkpoint(str(path))  # a Hugging Face repo id
        except RuntimeError as err:
            raise ValueError(str(err)) from None
    try:
        info = detect_checkpoint(path)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, MemoryError):
        raise  # already one plain sentence
    except Exception as err:  # a damaged file, or not a checkpoint: say so in one sentence
        raise unreadable_checkpoint(path, err) from None
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


def unreadable_checkpoint(path: Path, err: BaseException) -> ValueError:
    """One plain sentence for a checkpoint that cannot be read (cut short, corrupt, pickled code, wrong file)."""
    import pickle

    if isinstance(err, pickle.UnpicklingError):
        why = "it holds pickled objects other than tensors, which are never loaded (weights_only)"
    else:
        why = " ".join(str(err).split())[:200] or type(err).__name__
    return ValueError(f"--checkpoint {path} is not a readable Wan VAE checkpoint ({why}); download it again or pass another file")


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
    try:
        return load_wan_vae(
            path,
            arch=None,
            dtype=weights_dtype,
            device=device,
            include_encoder=include_encoder,
            include_decoder=include_decoder,
        )
    except (ValueError, FileNotFoundError, MemoryError):
        raise
    except Exception as err:  # headers were fine but the data is damaged (cut short)
        if "out of memory" in str(err).lower():
            raise
        raise unreadable_checkpoint(path, err) from None
