"""Architecture description of the Wan 2.1 / 2.2 video VAE.

:class:`WanVAEArchConfig` uses the field names of diffusers' ``AutoencoderKLWan``
config (including its misspelled ``temperal_downsample``), so a diffusers
``config.json`` converts losslessly in both directions. Presets cover the two
published VAEs; the tiny variants keep the real depth and layer layout with small
widths, for tests and CPU benchmarks.
"""

from __future__ import annotations

import dataclasses
from typing import Any

from framestream.config import PrintableConfig, config_dataclass

__all__ = [
    "WanVAEArchConfig",
    "WAN21_VAE_ARCH",
    "WAN22_VAE_ARCH",
    "DIFFUSERS_IGNORED_KEYS",
    "tiny_wan21_arch",
    "tiny_wan22_arch",
    "reduced_width",
]

# Keys of a diffusers ``AutoencoderKLWan`` config.json that describe no architecture:
# bookkeeping written by ``ConfigMixin`` and ``clip_output``, an argument of early
# Wan 2.2 diffusers configs that diffusers has since removed (the decoder output is
# always clamped to [-1, 1], here as there).
DIFFUSERS_IGNORED_KEYS: frozenset[str] = frozenset(
    {
        "_class_name",
        "_diffusers_version",
        "_name_or_path",
        "_commit_hash",
        "_use_default_values",
        "clip_output",
    }
)


@config_dataclass
class WanVAEArchConfig(PrintableConfig):
    """Shape of a Wan causal video VAE; field names follow diffusers' ``AutoencoderKLWan``."""

    base_dim: int = 96
    """Channel width of the encoder's first stage."""
    decoder_base_dim: int | None = None
    """Channel width of the decoder's last stage; ``None`` means ``base_dim``."""
    z_dim: int = 16
    """Latent channels (the encoder emits twice as many: mean and log-variance)."""
    dim_mult: tuple[int, ...] = (1, 2, 4, 4)
    """Per-stage channel multipliers; one spatial 2x resampling between consecutive stages."""
    num_res_blocks: int = 2
    """Residual blocks per encoder stage (decoder stages have one more)."""
    attn_scales: tuple[float, ...] = ()
    """Encoder spatial scales (1.0, 0.5, ...) that get an attention block after each residual block."""
    temperal_downsample: tuple[bool, ...] = (False, True, True)
    """Which encoder resamplings also halve time (decoder mirrors it); diffusers' spelling kept."""
    dropout: float = 0.0
    """Dropout rate inside residual blocks (inactive at inference)."""
    is_residual: bool = False
    """Wan 2.2 layout: residual down/up blocks with parameter-free AvgDown/DupUp shortcuts."""
    in_channels: int = 3
    """Encoder input channels after patchify (3 for RGB, 12 for RGB with patch_size 2)."""
    out_channels: int = 3
    """Decoder output channels before unpatchify."""
    patch_size: int | None = None
    """Pixel-shuffle factor applied before the encoder and undone after the decoder; ``None`` = 1."""
    scale_factor_temporal: int = 4
    """Pixel frames per latent frame in steady state."""
    scale_factor_spatial: int = 8
    """Pixel side per latent side (includes the patch size)."""
    latents_mean: tuple[float, ...] = (
        -0.7571, -0.7089, -0.9113, 0.1075, -0.1745, 0.9653, -0.1517, 1.5508,
        0.4134, -0.0715, 0.5517, -0.3632, -0.1922, -0.9497, 0.2503, -0.2921,
    )  # fmt: skip
    """Per-channel latent mean used to normalise the posterior mean."""
    latents_std: tuple[float, ...] = (
        2.8184, 1.4541, 2.3275, 2.6558, 1.2196, 1.7708, 2.6052, 2.0743,
        3.2687, 2.1526, 2.8652, 1.5579, 1.6382, 1.1253, 2.8251, 1.9160,
    )  # fmt: skip
    """Per-channel latent standard deviation used to normalise the posterior mean."""

    def __post_init__(self) -> None:
        # Frozen dataclass: normalise sequences to tuples (JSON / diffusers give lists).
        for name in ("dim_mult", "attn_scales", "temperal_downsample", "latents_mean", "latents_std"):
            value = getattr(self, name)
            if not isinstance(value, tuple):
                object.__setattr__(self, name, tuple(value))
        problems = []
        if self.base_dim < 1 or (self.decoder_base_dim is not None and self.decoder_base_dim < 1):
            problems.append("base_dim and decoder_base_dim must be positive")
        if self.z_dim < 1 or self.num_res_blocks < 1 or not self.dim_mult:
            problems.append("z_dim, num_res_blocks and dim_mult must be positive / non-empty")
        if len(self.temperal_downsample) != len(self.dim_mult) - 1:
            problems.append(
                f"temperal_downsample needs {len(self.dim_mult) - 1} entries (one per resampling), "
                f"got {len(self.temperal_downsample)}"
            )
        if len(self.latents_mean) != self.z_dim or len(self.latents_std) != self.z_dim:
            problems.append(
                f"latents_mean/latents_std need z_dim={self.z_dim} values, "
                f"got {len(self.latents_mean)}/{len(self.latents_std)}"
            )
        if any(s <= 0 for s in self.latents_std):
            problems.append("latents_std values must be positive")
        patch = self.patch
        if self.in_channels % (patch * patch) or self.out_channels % (patch * patch):
            problems.append(f"in/out_channels must be divisible by patch_size**2 = {patch * patch}")
        expected_t = 2 ** sum(bool(t) for t in self.temperal_downsample)
        if self.scale_factor_temporal != expected_t:
            problems.append(f"scale_factor_temporal={self.scale_factor_temporal} but the layout gives {expected_t}")
        expected_s = 2 ** (len(self.dim_mult) - 1) * patch
        if self.scale_factor_spatial != expected_s:
            problems.append(f"scale_factor_spatial={self.scale_factor_spatial} but the layout gives {expected_s}")
        if problems:
            raise ValueError("invalid WanVAEArchConfig: " + "; ".join(problems))

    # ------------------------------------------------------------------ derived
    @property
    def patch(self) -> int:
        """Patch size as an int (1 when ``patch_size`` is ``None``)."""
        return 1 if self.patch_size is None else int(self.patch_size)

    @property
    def decoder_dim(self) -> int:
        """Decoder base width with the ``None`` default resolved."""
        return self.base_dim if self.decoder_base_dim is None else self.decoder_base_dim

    @property
    def pixel_channels(self) -> int:
        """Channels of the videos the VAE reads and writes (before patchify)."""
        return self.in_channels // (self.patch * self.patch)

    @property
    def output_pixel_channels(self) -> int:
        """Channels of decoded videos (after unpatchify)."""
        return self.out_channels // (self.patch * self.patch)

    # ------------------------------------------------------------------ diffusers
    def to_diffusers_kwargs(self) -> dict[str, Any]:
        """Keyword arguments building the equivalent ``diffusers.AutoencoderKLWan``."""
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    @classmethod
    def from_diffusers_config(cls, config: dict[str, Any]) -> "WanVAEArchConfig":
        """Build from a diffusers ``AutoencoderKLWan`` config (dict or ``FrozenDict``).

        Keys in :data:`DIFFUSERS_IGNORED_KEYS` are skipped; any other key that is not a
        field raises ``ValueError``. ``None`` scale factors fall back to the layout's.
        """
        names = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(k for k in config if k not in names and k not in DIFFUSERS_IGNORED_KEYS)
        if unknown:
            raise ValueError(f"unknown AutoencoderKLWan architecture key(s): {unknown}")
        kwargs = {k: v for k, v in config.items() if k in names}
        if kwargs.get("scale_factor_temporal", 0) is None:
            downs = kwargs.get("temperal_downsample", cls.temperal_downsample)
            kwargs["scale_factor_temporal"] = 2 ** sum(bool(t) for t in downs)
        if kwargs.get("scale_factor_spatial", 0) is None:
            mult = kwargs.get("dim_mult", (1, 2, 4, 4))
            kwargs["scale_factor_spatial"] = 2 ** (len(mult) - 1) * (kwargs.get("patch_size") or 1)
        return cls(**kwargs)


WAN21_VAE_ARCH = WanVAEArchConfig()
"""Wan 2.1 VAE (also used by Wan 2.2 A14B): 8x spatial, 4x temporal, 16 latent channels."""

WAN22_VAE_ARCH = WanVAEArchConfig(
    base_dim=160,
    decoder_base_dim=256,
    z_dim=48,
    is_residual=True,
    in_channels=12,
    out_channels=12,
    patch_size=2,
    scale_factor_spatial=16,
    latents_mean=(
        -0.2289, -0.0052, -0.1323, -0.2339, -0.2799, 0.0174, 0.1838, 0.1557,
        -0.1382, 0.0542, 0.2813, 0.0891, 0.1570, -0.0098, 0.0375, -0.1825,
        -0.2246, -0.1207, -0.0698, 0.5109, 0.2665, -0.2108, -0.2158, 0.2502,
        -0.2055, -0.0322, 0.1109, 0.1567, -0.0729, 0.0899, -0.2799, -0.1230,
        -0.0313, -0.1649, 0.0117, 0.0723, -0.2839, -0.2083, -0.0520, 0.3748,
        0.0152, 0.1957, 0.1433, -0.2944, 0.3573, -0.0548, -0.1681, -0.0667,
    ),
    latents_std=(
        0.4765, 1.0364, 0.4514, 1.1677, 0.5313, 0.4990, 0.4818, 0.5013,
        0.8158, 1.0344, 0.5894, 1.0901, 0.6885, 0.6165, 0.8454, 0.4978,
        0.5759, 0.3523, 0.7135, 0.6804, 0.5833, 1.4146, 0.8986, 0.5659,
        0.7069, 0.5338, 0.4889, 0.4917, 0.4069, 0.4999, 0.6866, 0.4093,
        0.5709, 0.6065, 0.6415, 0.4944, 0.5726, 1.2042, 0.5458, 1.6887,
        0.3971, 1.0600, 0.3943, 0.5537, 0.5444, 0.4089, 0.7468, 0.7744,
    ),
)  # fmt: skip
"""Wan 2.2 TI2V-5B VAE: patch 2, 16x spatial, 4x temporal, 48 latent channels, residual blocks."""


def reduced_width(arch: WanVAEArchConfig, base_dim: int) -> WanVAEArchConfig:
    """Same layout (depth, resamplings, z_dim, patch, latent stats) with encoder width ``base_dim``.

    A separate decoder width is scaled by the same factor (rounded, at least 1).
    """
    if base_dim < 1:
        raise ValueError(f"base_dim must be positive, got {base_dim}")
    decoder = None
    if arch.decoder_base_dim is not None:
        decoder = max(1, round(arch.decoder_base_dim * base_dim / arch.base_dim))
    return dataclasses.replace(arch, base_dim=base_dim, decoder_base_dim=decoder)


def tiny_wan21_arch(base_dim: int = 8) -> WanVAEArchConfig:
    """Wan 2.1 layout with tiny widths (for tests and CPU benchmarks)."""
    return reduced_width(WAN21_VAE_ARCH, base_dim)


def tiny_wan22_arch(base_dim: int = 8) -> WanVAEArchConfig:
    """Wan 2.2 layout with tiny widths (decoder width keeps the 256/160 ratio)."""
    return reduced_width(WAN22_VAE_ARCH, base_dim)

