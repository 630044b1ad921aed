"""Latent files: safetensors (preferred) or ``.pt``, with the metadata needed to decode them.

A latent file holds one tensor ``latents`` of shape (B, C, T, h, w) and string metadata:
the VAE (``wan2.1``/``wan2.2``), pixel frame count, fps, pixel size, and whether the
latents are normalised with the VAE's published per-channel mean/std.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass
from pathlib import Path

import torch

from framestream.io.atomic import atomic_path

__all__ = ["LatentMetadata", "latent_file_bytes", "load_latents", "save_latents", "verify_latent_file"]

LATENT_KEY = "latents"


@dataclass(frozen=True, kw_only=True)
class LatentMetadata:
    """What a decoder needs to know about stored latents."""

    vae: str | None = None
    """VAE name, ``wan2.1`` or ``wan2.2``."""
    frames: int | None = None
    """Pixel frames the latents decode to."""
    fps: float | None = None
    """Frame rate of the source video."""
    height: int | None = None
    """Pixel height."""
    width: int | None = None
    """Pixel width."""
    normalized: bool = True
    """Latents are ``(mu - mean) / std`` with the VAE's published statistics."""
    source: str | None = None
    """Path of the encoded video, for provenance."""

    def to_strings(self) -> dict[str, str]:
        return {k: json.dumps(v) for k, v in asdict(self).items() if v is not None}

    @classmethod
    def from_strings(cls, data: dict[str, str]) -> "LatentMetadata":
        known = {f for f in cls.__dataclass_fields__}
        return cls(**{k: json.loads(v) for k, v in data.items() if k in known})


def save_latents(path: str | Path, latents: torch.Tensor, metadata: LatentMetadata) -> Path:
    """Write latents atomically to ``.safetensors`` (with metadata) or ``.pt``."""
    path = Path(path)
    if latents.ndim != 5:
        raise ValueError(f"latents must be (B, C, T, h, w), got shape {tuple(latents.shape)}")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"latent file must end in .safetensors or .pt, got {path.name!r}")
    tensor = latents.detach().to("cpu").contiguous()
    # Written through a Python file object, so a full disk raises OSError (ENOSPC/EFBIG) that
    # atomic_path turns into one plain error naming the file.
    with atomic_path(path) as tmp, open(tmp, "wb") as handle:
        if path.suffix == ".safetensors":
            from safetensors.torch import save

            handle.write(save({LATENT_KEY: tensor}, metadata=metadata.to_strings()))
        else:
            torch.save({LATENT_KEY: tensor, "metadata": metadata.to_strings()}, handle)
    return path


def _unreadable(path: Path, err: BaseException) -> ValueError:
    """One plain sentence for a latent file that cannot be read (corrupt, cut short, pickled code)."""
    import pickle

    if isinstance(err, pickle.UnpicklingError):
        why = "it holds pickled objects other than tensors, which are never loaded (weights_only)"
    else:
        why = " ".join(str(err).split())[:200] or type(err).__name__
    return ValueError(f"{path} is not a readable latent file ({why}); write it again with framestream encode or save_latents")


def _read(path: Path) -> tuple[torch.Tensor, dict[str, str]]:
    if path.suffix == ".safetensors":
        from safetensors import safe_open

        with safe_open(str(path), framework="pt") as handle:
            raw_meta = handle.metadata() or {}
            keys = list(handle.keys())
            key = LATENT_KEY if LATENT_KEY in keys else (keys[0] if len(keys) == 1 else None)
            if key is None:
                raise ValueError(f"{path}: expected a tensor named {LATENT_KEY!r} (found {keys})")
            return handle.get_tensor(key), raw_meta
    data = torch.load(str(path), map_location="cpu", weights_only=True)
    if isinstance(data, torch.Tensor):
        return data, {}
    if isinstance(data, dict) and isinstance(data.get(LATENT_KEY), torch.Tensor):
        raw_meta = data.get("metadata") or {}
        if not isinstance(raw_meta, dict) or not all(isinstance(v, str) for v in raw_meta.values()):
            raise ValueError(f"{path}: the 'metadata' entry must map names to strings")
        return data[LATENT_KEY], raw_meta
    raise ValueError(f"{path}: expected a tensor or a dict with a {LATENT_KEY!r} tensor")


def load_latents(path: str | Path) -> tuple[torch.Tensor, LatentMetadata]:
    """Read latents written by :func:`save_latents` (or any file with one 5-D tensor).

    ``.pt`` files load with ``weights_only=True``: no pickled code runs. A file that
    cannot be read (corrupt, cut short, not a latent file) raises ``ValueError`` naming it.
    """
    path = Path(path)
    if not path.is_file():
        raise FileNotFoundError(f"latent file not found: {path}")
    if path.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"latent file must end in .safetensors or .pt, got {path.name!r}")
    try:
        tensor, raw_meta = _read(path)
        metadata = LatentMetadata.from_strings(raw_meta)
    except ValueError as err:
        if str(err).startswith(str(path)):
            raise
        raise _unreadable(path, err) from None
    except (OSError, MemoryError):
        raise
    except Exception as err:  # safetensors, zip and unpickling errors of damaged files
        raise _unreadable(path, err) from None
    if tensor.ndim == 4:
        tensor = tensor.unsqueeze(0)
    if tensor.ndim != 5:
        raise ValueError(f"{path}: latents must be (B, C, T, h, w) or (C, T, h, w), got shape {tuple(tensor.shape)}")
    return tensor, metadata


def latent_file_bytes(latents: torch.Tensor) -> int:
    """About the size of :func:`save_latents`' file for ``latents`` (data plus a header bound)."""
    return latents.numel() * latents.element_size() + 4096


def verify_latent_file(path: str | Path) -> str | None:
    """``None`` if ``path`` is a complete, readable latent file; else why not (e.g. 0 bytes, cut short)."""
    try:
        load_latents(path)
    except (ValueError, OSError) as err:
        return str(err)
    return None
