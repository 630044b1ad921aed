"""Wan 2.2 I2V-A14B conditioning: the image enters as extra input channels (mask + condition latents).

Unlike TI2V-5B (:mod:`~framestream.models.wan.transformer.ti2v`), the I2V-A14B experts take
``in_channels = 36``: the 16-channel noisy latent, a 4-channel first-frame mask and the
16-channel latent of the *video* ``[image, 0, 0, ...]`` encoded by the Wan 2.1 VAE,
concatenated on the channel axis at every step; every token sees the same timestep and
the output has 16 channels. This is the original Wan 2.2 ``image2video`` path and
diffusers' ``WanImageToVideoPipeline`` without ``expand_timesteps``.

The mask has one channel per pixel frame folded into a latent frame (the VAE's temporal
factor 4): latent frame 0 covers the image (its first pixel frame repeated), so its 4 mask
channels are 1; every later latent frame is 0.

:class:`~framestream.encoders.wan_i2v.WanI2VConditionEncoder` is the pipeline
encoder that builds the ``[B, 20, F, h, w]`` condition from the ``[B, 3, 1, H, W]`` image;
:class:`WanI2VTransformer` concatenates it.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.models.wan.transformer.cache import WanKVCache
from framestream.models.wan.transformer.config import WAN22_I2V_A14B, WanTransformerArchConfig, WanTransformerConfig
from framestream.models.wan.transformer.model import WanTransformer

__all__ = ["WanI2VTransformer", "WanI2VTransformerConfig"]


class WanI2VTransformer(WanTransformer):
    """Wan DiT whose input is ``cat([noisy latent, condition])`` on channels (Wan 2.2 I2V-A14B experts).

    ``input`` is the :class:`WanI2VConditionEncoder` output; the noise, and the flow, have
    ``out_channels`` channels.
    """

    config: "WanI2VTransformerConfig"

    @property
    def latent_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.batch_size, c.arch.out_channels, c.num_frames, c.height, c.width)

    def predict_flow(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: WanKVCache,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Flow of the noisy latent with the condition channels appended."""
        if input is None:
            raise ValueError("WanI2VTransformer needs the image condition (WanI2VConditionEncoder's output) at every step")
        b, _, f, h, w = noisy_latent.shape
        extra = self.config.arch.in_channels - noisy_latent.shape[1]
        if not torch.is_tensor(input) or input.ndim != 5 or tuple(input.shape[1:]) != (extra, f, h, w):
            raise ValueError(
                f"I2V condition has shape {tuple(getattr(input, 'shape', ()))}; expected [B, {extra}, {f}, {h}, {w}]"
            )
        condition = input.to(device=noisy_latent.device, dtype=noisy_latent.dtype).expand(b, -1, -1, -1, -1)
        with torch.no_grad():
            return self._forward(torch.cat([noisy_latent, condition], dim=1), timestep, cache)


def _i2v_class() -> type:
    return WanI2VTransformer


@config_dataclass
class WanI2VTransformerConfig(WanTransformerConfig):
    """Config of :class:`WanI2VTransformer` (default: a Wan 2.2 I2V-A14B expert at 1280x720, 81 frames)."""

    _target: type = field(default_factory=_i2v_class)
    arch: WanTransformerArchConfig = WAN22_I2V_A14B
    num_frames: int = 21
    height: int = 90
    width: int = 160

    def __post_init__(self) -> None:
        super().__post_init__()
        a = self.arch
        if a.in_channels != 2 * a.out_channels + 4:
            raise ValueError(
                f"an I2V DiT takes noise + 4 mask channels + condition latents: in_channels must be "
                f"2 * out_channels + 4 = {2 * a.out_channels + 4}, got {a.in_channels}"
            )
        if self.causal:
            raise ValueError("WanI2VTransformer conditions one bidirectional clip: set causal=False")
