"""The VAE a job runs (Wan 2.1 / 2.2 or LTX-2): checkpoint checked from its headers, then loaded (one half or both)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import torch

from framestream.jobs.checks import vae_name
from framestream.utils.load_errors import load_error_reason

__all__ = ["check_checkpoint", "checkpoint_latent_channels", "load_vae", "unreadable_checkpoint"]


def check_checkpoint(path: str | Path, version: str, *, need_encoder: bool = False, need_decoder: bool = False) -> Path:
    """Locate the checkpoint and check its Wan version and halves from headers only; returns the local path."""
    from framestream.models.wan.vae.checkpoint import detect_checkpoint, resolve_checkpoint

    if version == "ltx2":
        return _check_ltx2(Path(path))
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


def checkpoint_latent_channels(path: str | Path, version: str) -> int:
    """Latent channels the checkpoint's VAE expects: the published count for Wan; for LTX-2 its config's
    (read from the headers: reduced-width LTX-2 VAEs exist)."""
    from framestream.jobs.checks import LATENT_CHANNELS

    if version != "ltx2":
        return LATENT_CHANNELS[version]
    from framestream.models.ltx2.vae import detect_ltx2_checkpoint

    _check_ltx2(Path(path))
    arch = detect_ltx2_checkpoint(path).arch
    return LATENT_CHANNELS[version] if arch is None else arch.latent_channels


def _check_ltx2(path: Path) -> Path:
    """An LTX-2 video VAE checkpoint (diffusers folder or original file), from its headers."""
    from framestream.models.ltx2.vae import detect_ltx2_checkpoint

    try:
        detect_ltx2_checkpoint(path)
    except (ValueError, FileNotFoundError, PermissionError, IsADirectoryError, MemoryError) as err:
        raise ValueError(f"--checkpoint: {err}".split("\n")[0]) from None
    except Exception as err:
        raise unreadable_checkpoint(path, err) from None
    return path


def unreadable_checkpoint(path: Path, err: BaseException) -> ValueError:
    """One plain sentence for a checkpoint that cannot be read (cut short, corrupt, pickled code, wrong file)."""
    why = load_error_reason(err)
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
    from framestream.models.ltx2.vae import load_ltx2_vae
    from framestream.models.wan.vae.checkpoint import load_wan_vae

    path = check_checkpoint(path, version, need_encoder=include_encoder, need_decoder=include_decoder)
    loader = load_ltx2_vae if version == "ltx2" else load_wan_vae
    try:
        return loader(
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
