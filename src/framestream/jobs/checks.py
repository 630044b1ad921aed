"""Checks of what a user typed, run before any model is built.

Every function raises ``ValueError`` / ``FileNotFoundError`` / ``PermissionError`` with
one plain sentence that names the option or file at fault and what to do; the CLI
turns those into one line on stderr and exit code 2.
"""

from __future__ import annotations

import importlib
import importlib.util
import os
from pathlib import Path
from typing import Any

import torch

from framestream.io.atomic import check_writable
from framestream.io.latents import LatentMetadata
from framestream.tiling.planner import TilingConfig
from framestream.utils.dtypes import parse_dtype

__all__ = [
    "FORMATS",
    "LATENT_CHANNELS",
    "SPATIAL_FACTOR",
    "TEMPORAL_FACTOR",
    "VAE_NAMES",
    "VIDEO_SUFFIXES",
    "check_chunk",
    "check_latents",
    "check_output",
    "decoded_frames",
    "make_tiling",
    "output_format",
    "parse_float_dtype",
    "parse_size",
    "resolve_device",
    "vae_name",
    "vae_version",
    "wan_exact_module",
]

VAE_NAMES = {"wan2.1": "2.1", "wan2.2": "2.2"}
"""CLI name -> Wan VAE version."""
LATENT_CHANNELS = {"2.1": 16, "2.2": 48}
SPATIAL_FACTOR = {"2.1": 8, "2.2": 16}
TEMPORAL_FACTOR = 4
VIDEO_SUFFIXES = (".mp4", ".m4v", ".mov", ".mkv", ".webm", ".avi")
FORMATS = ("mp4", "png", "npy", "safetensors")
FLOAT_DTYPES = ("fp32", "bf16", "fp16")


def vae_version(name: str) -> str:
    """``"wan2.1"`` -> ``"2.1"`` (also accepts ``"2.1"``)."""
    key = str(name).strip().lower()
    if key in VAE_NAMES:
        return VAE_NAMES[key]
    if key in VAE_NAMES.values():
        return key
    raise ValueError(f"unknown VAE {name!r}; choose wan2.1 or wan2.2")


def vae_name(version: str) -> str:
    """``"2.1"`` -> ``"wan2.1"``."""
    return f"wan{version}"


def parse_float_dtype(name: str, option: str) -> torch.dtype:
    """A floating dtype name (fp32/bf16/fp16 and aliases) or a clear ``ValueError`` naming ``option``."""
    try:
        dtype = parse_dtype(name, option)
    except ValueError:
        dtype = None
    if dtype not in (torch.float32, torch.bfloat16, torch.float16):
        raise ValueError(f"{option}: {name!r} is not a dtype the VAE runs in; choose {', '.join(FLOAT_DTYPES)}")
    return dtype


def parse_size(text: str, option: str) -> tuple[int, int]:
    """``"832x480"`` -> ``(width, height)``."""
    parts = str(text).lower().replace("*", "x").split("x")
    try:
        width, height = (int(p) for p in parts)
    except ValueError:
        raise ValueError(f"{option} takes WIDTHxHEIGHT (e.g. 832x480), got {text!r}") from None
    if width < 1 or height < 1:
        raise ValueError(f"{option}: width and height must be positive, got {text!r}")
    return width, height


def resolve_device(name: str | None, local_rank: int = 0) -> torch.device:
    """``None``: ``cuda:{local_rank}`` when CUDA is available, else CPU. Unknown or unavailable devices raise."""
    if name is None:
        return torch.device(f"cuda:{local_rank}") if torch.cuda.is_available() else torch.device("cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ValueError(f"--device: unknown device {name!r} (e.g. cpu, cuda, cuda:1)") from None
    if device.type == "cuda":
        if not torch.cuda.is_available():
            raise ValueError(f"--device {name}: CUDA is not available on this machine; pass --device cpu")
        if device.index is not None and device.index >= torch.cuda.device_count():
            raise ValueError(f"--device {name}: only {torch.cuda.device_count()} CUDA device(s) present")
    elif device.type == "mps":
        if not torch.backends.mps.is_available():
            raise ValueError(f"--device {name}: MPS is not available on this machine; pass --device cpu")
    elif device.type != "cpu":
        raise ValueError(f"--device {name}: unsupported device type {device.type!r}")
    return device


def wan_exact_module() -> Any:
    """The exact Wan tiler module, or a clear ``NotImplementedError`` while it is not available."""
    if importlib.util.find_spec("framestream.tiling.wan_exact") is None:
        raise NotImplementedError(
            "tiled Wan VAE decode/encode needs framestream.tiling.wan_exact, which this install does not have; "
            "run without --tile-size"
        )
    return importlib.import_module("framestream.tiling.wan_exact")


def make_tiling(
    tile_size: int | None,
    tile_overlap: int | None,
    tile_batch_size: int | None,
    spatial_factor: int,
) -> TilingConfig | None:
    """A :class:`TilingConfig` from the CLI's pixel sizes, or ``None`` (untiled) without ``--tile-size``.

    The exact tiler derives each tile's halo from the model and ignores the overlap; it is
    still validated (multiple of the factor, below the tile) and defaults to a quarter of
    the tile. Sizes that are not multiples of ``spatial_factor`` raise ``ValueError``.
    """
    if tile_size is None:
        extra = [n for n, v in (("--tile-overlap", tile_overlap), ("--tile-batch-size", tile_batch_size)) if v is not None]
        if extra:
            raise ValueError(f"{' and '.join(extra)} need --tile-size (tiling is off without it)")
        return None
    if tile_size < spatial_factor or tile_size % spatial_factor:
        raise ValueError(
            f"--tile-size {tile_size} must be a positive multiple of the VAE's spatial factor {spatial_factor} "
            f"(e.g. {max(spatial_factor, tile_size // spatial_factor * spatial_factor)})"
        )
    if tile_overlap is None:
        tile_overlap = tile_size // 4 // spatial_factor * spatial_factor
    if tile_overlap < 0 or tile_overlap % spatial_factor:
        raise ValueError(f"--tile-overlap {tile_overlap} must be a non-negative multiple of the VAE's spatial factor {spatial_factor}")
    if tile_overlap >= tile_size:
        raise ValueError(f"--tile-overlap {tile_overlap} must be smaller than --tile-size {tile_size}")
    batch = 1 if tile_batch_size is None else tile_batch_size
    if batch < 1:
        raise ValueError(f"--tile-batch-size must be >= 1, got {batch}")
    config = TilingConfig(tile_size_px=tile_size, tile_overlap_px=tile_overlap, tile_batch_size=batch)
    config.in_latents(spatial_factor)  # the planner's own check
    wan_exact_module()  # fail now, not after the model is loaded
    return config


def check_chunk(chunk: int) -> int:
    """``--chunk`` is at least one latent frame."""
    if chunk < 1:
        raise ValueError(f"--chunk must be >= 1 latent frame, got {chunk}")
    return chunk


def check_latents(z: torch.Tensor, metadata: LatentMetadata, version: str, source: str | Path) -> None:
    """Latents fit the chosen VAE: channel count, batch of one, and the VAE the file names."""
    expected = LATENT_CHANNELS[version]
    if metadata.vae is not None and metadata.vae.lower() in VAE_NAMES and VAE_NAMES[metadata.vae.lower()] != version:
        raise ValueError(f"{source} holds {metadata.vae} latents but --vae is {vae_name(version)}; pass --vae {metadata.vae}")
    if z.shape[1] != expected:
        hint = next((vae_name(v) for v, c in LATENT_CHANNELS.items() if c == z.shape[1]), None)
        raise ValueError(
            f"{source} has {z.shape[1]}-channel latents but {vae_name(version)} expects {expected}"
            + (f"; pass --vae {hint}" if hint else "")
        )
    if z.shape[0] != 1:
        raise ValueError(f"{source} holds a batch of {z.shape[0]} latent videos; decode takes one (batch size 1)")
    if not z.is_floating_point():
        raise ValueError(f"{source}: latents must be floating point, got {z.dtype}")
    if min(z.shape[2:]) < 1:
        raise ValueError(f"{source} holds empty latents of shape {tuple(z.shape)}")


def decoded_frames(latent_frames: int) -> int:
    """Pixel frames the Wan VAE decodes ``latent_frames`` to (``1 + 4(T-1)``)."""
    return 1 + (latent_frames - 1) * TEMPORAL_FACTOR


def output_format(output: str | Path, fmt: str | None = None) -> str:
    """``mp4`` (any video container suffix), ``png`` (a folder), ``npy`` or ``safetensors``."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ValueError(f"--format must be one of {', '.join(FORMATS)}, got {fmt!r}")
        return fmt
    text = str(output)
    path = Path(text)
    suffix = path.suffix.lower()
    if text.endswith(("/", os.sep)) or path.is_dir() or not suffix:
        return "png"
    if suffix in VIDEO_SUFFIXES:
        return "mp4"
    if suffix in (".npy", ".safetensors"):
        return suffix[1:]
    raise ValueError(
        f"cannot tell the output format from {text!r}: use a .mp4 (.mkv, .mov) video, a folder for PNG frames "
        "(e.g. frames/), .npy or .safetensors, or pass --format"
    )


def check_output(output: Path, fmt: str) -> None:
    """``PermissionError`` now if the output cannot be written."""
    check_writable(output, directory=fmt == "png")
