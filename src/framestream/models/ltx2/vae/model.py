"""The LTX-2 video VAE: :class:`LTX2VAE`, with the state-dict keys of diffusers' ``AutoencoderKLLTX2Video``.

``encode(x)`` returns the posterior mean (un-normalised), ``decode(z)`` the frames, as
:class:`~framestream.models.wan.vae.WanVAE` does. The whole clip goes through each
half in one call (every layer is local, so a memory-bounded run is a tiled one:
:func:`framestream.tiling.decode_tiled` / :func:`framestream.tiling.encode_tiled`).

Frames: ``1 + r*k`` frames encode to ``1 + k`` latents (``r`` = 8 for LTX-2) and ``T``
latents decode to ``1 + r*(T-1)`` frames; height and width are multiples of the spatial
ratio (32).
"""

from __future__ import annotations

import zlib

import torch
import torch.nn as nn

from framestream.models.ltx2.vae.config import LTX2VAEArchConfig
from framestream.models.ltx2.vae.modules import Decoder, Encoder, StepHook

__all__ = ["LTX2VAE", "LOGVAR_RANGE", "init_random_weights"]

LOGVAR_RANGE = (-30.0, 20.0)
"""Clamp applied to the posterior log-variance (as diffusers' DiagonalGaussianDistribution)."""


class LTX2VAE(nn.Module):
    """LTX-2 video VAE; ``LTX2VAE(arch, include_encoder=True, include_decoder=True)``.

    Builds on the meta device (``with torch.device("meta"): LTX2VAE(arch)``). The compute
    dtype is the dtype of the input; weights stored in another dtype are cast on use.
    Holds no state between calls.
    """

    def __init__(self, arch: LTX2VAEArchConfig, include_encoder: bool = True, include_decoder: bool = True) -> None:
        super().__init__()
        if not isinstance(arch, LTX2VAEArchConfig):
            raise TypeError(f"arch must be an LTX2VAEArchConfig, got {type(arch).__name__}")
        if not (include_encoder or include_decoder):
            raise ValueError("LTX2VAE needs the encoder, the decoder or both")
        self.arch = arch
        self.has_encoder, self.has_decoder = include_encoder, include_decoder
        if include_encoder:
            self.encoder = Encoder(arch)
        if include_decoder:
            self.decoder = Decoder(arch)
        c = arch.latent_channels
        self.register_buffer("latents_mean", torch.zeros(c), persistent=True)
        self.register_buffer("latents_std", torch.ones(c), persistent=True)

    # ------------------------------------------------------------------ sizes
    @property
    def spatial_ratio(self) -> int:
        return self.arch.spatial_ratio

    @property
    def temporal_ratio(self) -> int:
        return self.arch.temporal_ratio

    @property
    def latent_channels(self) -> int:
        return self.arch.latent_channels

    def decoded_frames(self, latent_frames: int) -> int:
        """Frames decoded from ``latent_frames`` latents: ``1 + r*(T-1)``."""
        return 1 + (latent_frames - 1) * self.temporal_ratio

    def encoded_frames(self, frames: int) -> int:
        """Latent frames encoded from ``frames`` (``1 + r*k``) frames."""
        return 1 + (frames - 1) // self.temporal_ratio

    # ------------------------------------------------------------------ latent normalisation
    def normalize_latents(self, mu: torch.Tensor) -> torch.Tensor:
        """``(mu - latents_mean) * scaling_factor / latents_std`` per channel (the DiT's latent space)."""
        mean, std = self._stats(mu)
        return ((mu.float() - mean) * self.arch.scaling_factor / std).to(mu.dtype)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`."""
        mean, std = self._stats(z)
        return (z.float() * std / self.arch.scaling_factor + mean).to(z.dtype)

    def _stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        if like.dim() != 5 or like.shape[1] != self.latent_channels:
            raise ValueError(f"expected latents (B, {self.latent_channels}, T, h, w), got {tuple(like.shape)}")
        shape = (1, -1, 1, 1, 1)
        return (
            self.latents_mean.float().view(shape).to(like.device),
            self.latents_std.float().view(shape).to(like.device),
        )

    # ------------------------------------------------------------------ checks
    def check_video(self, x: torch.Tensor) -> None:
        """``ValueError`` unless ``x`` is a (B, C, 1 + r*k, H, W) float video with H, W multiples of the ratio."""
        if not self.has_encoder:
            raise RuntimeError("this LTX2VAE was built without the encoder (include_encoder=False)")
        s, r = self.spatial_ratio, self.temporal_ratio
        if not torch.is_tensor(x) or not x.is_floating_point() or x.dim() != 5:
            raise ValueError(f"video must be a floating-point (B, C, T, H, W) tensor, got {getattr(x, 'shape', type(x).__name__)}")
        if x.shape[1] != self.arch.in_channels:
            raise ValueError(f"video must have {self.arch.in_channels} channels, got {x.shape[1]}")
        if x.shape[0] < 1 or x.shape[2] < 1 or (x.shape[2] - 1) % r:
            raise ValueError(f"LTX-2 encodes 1 + {r}k frames, got {x.shape[2]}")
        if x.shape[3] < s or x.shape[4] < s or x.shape[3] % s or x.shape[4] % s:
            raise ValueError(f"video height and width must be positive multiples of {s}, got {tuple(x.shape[3:])}")

    def check_latents(self, z: torch.Tensor, temb: torch.Tensor | None = None) -> None:
        """``ValueError`` unless ``z`` is a (B, latent_channels, T, h, w) float tensor (and ``temb`` fits)."""
        if not self.has_decoder:
            raise RuntimeError("this LTX2VAE was built without the decoder (include_decoder=False)")
        if not torch.is_tensor(z) or not z.is_floating_point() or z.dim() != 5:
            raise ValueError(f"latents must be a floating-point (B, C, T, h, w) tensor, got {getattr(z, 'shape', type(z).__name__)}")
        if z.shape[1] != self.latent_channels:
            raise ValueError(f"latents must have {self.latent_channels} channels, got {z.shape[1]}")
        if min(z.shape[0], z.shape[2], z.shape[3], z.shape[4]) < 1:
            raise ValueError(f"latents need a batch, a frame and a pixel, got shape {tuple(z.shape)}")
        if self.arch.timestep_conditioning:
            if temb is None:
                raise ValueError("this LTX-2 decoder is timestep-conditioned (timestep_conditioning=True): pass temb")
            if temb.numel() != z.shape[0]:
                raise ValueError(f"temb needs one timestep per sample ({z.shape[0]}), got shape {tuple(temb.shape)}")
        elif temb is not None:
            raise ValueError("this LTX-2 decoder is not timestep-conditioned: temb must be None")

    # ------------------------------------------------------------------ encode
    def encode_moments(self, x: torch.Tensor, after_step: StepHook | None = None) -> torch.Tensor:
        """The encoder's raw output: ``latent_channels`` means, then one log-variance channel."""
        return self.encoder(x, after_step=after_step)

    @torch.no_grad()
    def encode(self, x: torch.Tensor, *, return_logvar: bool = False) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode a video in [-1, 1] to the posterior mean (un-normalised); ``return_logvar`` adds the
        clamped log-variance (one channel shared by all latent channels, broadcast)."""
        self.check_video(x)
        moments = self.encode_moments(x)
        return split_moments(moments, self.latent_channels, return_logvar)

    # ------------------------------------------------------------------ decode
    @torch.no_grad()
    def decode(self, z: torch.Tensor, temb: torch.Tensor | None = None) -> torch.Tensor:
        """Latents ``(B, C, T, h, w)`` -> frames ``(B, 3, 1 + r*(T-1), 32h, 32w)`` (not clamped, as diffusers)."""
        self.check_latents(z, temb)
        return self.decoder(z, temb)

    def decode_raw(self, z: torch.Tensor, temb: torch.Tensor | None = None, after_step: StepHook | None = None) -> torch.Tensor:
        """The decoder forward without checks (the tiler's per-tile call)."""
        return self.decoder(z, temb, after_step=after_step)


def split_moments(
    moments: torch.Tensor, latent_channels: int, return_logvar: bool
) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
    """Mean (and clamped, broadcast log-variance) from the encoder's ``latent + 1`` channels."""
    mean = moments[:, :latent_channels].contiguous()
    if not return_logvar:
        return mean
    logvar = moments[:, latent_channels:].clamp(*LOGVAR_RANGE).expand_as(mean).contiguous()
    return mean, logvar


def init_random_weights(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic random init for tests and benchmarks: uniform(+-1/sqrt(fan_in)) weights and biases,
    small uniform scale/shift tables, a timestep multiplier of 1000, unit LayerNorm weights.

    Each parameter draws from its own generator seeded by ``seed`` and its name, so an
    encoder-only or decoder-only model gets the same weights as the full one.
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_meta:
                raise ValueError(f"parameter {name!r} is on the meta device; call to_empty() first")
            if name.endswith("timestep_scale_multiplier"):
                p.fill_(1000.0)
                continue
            if ".norm3." in name or name.startswith("norm3."):
                p.fill_(1.0 if name.endswith("weight") else 0.0)
                continue
            g = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63))
            if name.endswith("scale_shift_table"):
                bound = 0.5 / p.shape[-1] ** 0.5
            else:
                weight_name = name[: -len("bias")] + "weight" if name.endswith("bias") else name
                weight = module.get_parameter(weight_name) if weight_name != name else p
                bound = (weight[0].numel() if weight.dim() > 1 else max(1, weight.numel())) ** -0.5
            p.copy_(torch.empty(p.shape, dtype=torch.float32).uniform_(-bound, bound, generator=g))
    return module
