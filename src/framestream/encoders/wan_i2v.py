"""The Wan I2V condition encoder: image -> ``[mask, latents of (image, 0, 0, ...)]`` for I2V-A14B experts.

The I2V-A14B experts (:mod:`framestream.models.wan.transformer.i2v`) take the 16-channel
latent of the video ``[image, 0, 0, ...]`` (the image followed by black frames, encoded
by the Wan 2.1 VAE) and a first-frame mask with one channel per pixel frame folded into a
latent frame (the VAE's temporal factor 4): latent frame 0 holds the image, so its 4 mask
channels are 1; all later latent frames are 0. As the original Wan 2.2 ``image2video``
code and diffusers' ``WanImageToVideoPipeline`` (without ``expand_timesteps``) build it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.encoders.base import EncoderConfig, StreamingEncoder, StreamingEncoderCache
from framestream.encoders.wan import WanVAEEncoderConfig

__all__ = ["WanI2VConditionEncoder", "WanI2VConditionEncoderConfig", "first_frame_mask"]


def first_frame_mask(like: torch.Tensor, temporal_factor: int = 4) -> torch.Tensor:
    """``[B, temporal_factor, F, h, w]`` mask: 1 on latent frame 0 (the image), 0 elsewhere; dtype of ``like``."""
    b, _, f, h, w = like.shape
    mask = torch.zeros(b, temporal_factor, f, h, w, dtype=like.dtype, device=like.device)
    mask[:, :, 0] = 1
    return mask


class WanI2VConditionEncoder(StreamingEncoder[StreamingEncoderCache]):
    """Image ``[B, 3, 1, H, W]`` in [-1, 1] -> condition ``[B, 4 + z_dim, F, h, w]`` (mask, then latents).

    The image is followed by ``num_frames - 1`` black (zero) frames and the whole clip is
    encoded (normalised posterior mean), as the original code and diffusers do.
    """

    config: "WanI2VConditionEncoderConfig"

    def __init__(self, config: "WanI2VConditionEncoderConfig") -> None:
        super().__init__(config)
        self.video_encoder = config.vae.setup()

    def initialize_autoregressive_cache(self, **context: Any) -> StreamingEncoderCache:
        return StreamingEncoderCache()

    @torch.no_grad()
    def forward(self, input: torch.Tensor, autoregressive_index: int = 0, cache: Any = None) -> torch.Tensor:  # noqa: A002
        if autoregressive_index != 0:
            raise ValueError("the I2V condition covers one whole clip: only autoregressive_index 0 exists")
        if not torch.is_tensor(input) or input.ndim != 5 or input.shape[1:3] != (3, 1):
            raise ValueError(f"expected an image [B, 3, 1, H, W] in [-1, 1], got {getattr(input, 'shape', type(input))}")
        rest = input.new_zeros(input.shape[0], 3, self.config.num_frames - 1, *input.shape[3:])
        latents = self.video_encoder(torch.cat([input, rest], dim=2), 0, self.video_encoder.initialize_autoregressive_cache())
        mask = first_frame_mask(latents, self.video_encoder.temporal_compression_ratio)
        return torch.cat([mask, latents], dim=1)


def _condition_encoder_class() -> type:
    return WanI2VConditionEncoder


@config_dataclass
class WanI2VConditionEncoderConfig(EncoderConfig):
    """Config of :class:`WanI2VConditionEncoder`."""

    _target: type = field(default_factory=_condition_encoder_class)
    vae: WanVAEEncoderConfig = field(default_factory=WanVAEEncoderConfig)
    """The Wan VAE encoder (Wan 2.1 VAE for I2V-A14B)."""
    num_frames: int = 81
    """Pixel frames of the clip (``1 + 4k``): the image plus ``num_frames - 1`` zero frames."""

    def __post_init__(self) -> None:
        if self.num_frames < 1 or (self.num_frames - 1) % 4:
            raise ValueError(f"num_frames must be 1 + 4k, got {self.num_frames}")
