"""Wan 2.2 TI2V: one DiT for text-to-video and, with a first-frame image, image-to-video.

TI2V-5B conditions on an image the way its original code and diffusers' ``expand_timesteps``
path do: the image, encoded by the Wan 2.2 VAE, *is* latent frame 0. At every denoising
step the DiT sees that clean frame in place of frame 0 of the noisy latent, and the tokens
of frame 0 get timestep 0 while all other tokens get the current timestep (per-token
timesteps; here one per latent frame, which :class:`~framestream.models.wan.transformer.model.WanDiT`
broadcasts over the frame's tokens). The scheduler's own value for frame 0 is never read
by the DiT and is replaced by the image latent in the result
(:meth:`WanTI2VTransformer.postprocess_clean_latent`), so the first latent frame of an
I2V result equals the encoded image exactly. Without an image the same model does plain
text-to-video with one timestep for every token.

In a pipeline the image reaches the transformer as the per-AR-step ``input``: the
pipeline's encoder (a Wan 2.2 :class:`~framestream.encoders.wan.WanVAEEncoder`)
turns the ``[B, 3, 1, H, W]`` image into the normalised ``[B, 48, 1, h, w]`` latent.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.models.wan.transformer.cache import WanKVCache
from framestream.models.wan.transformer.config import WAN22_TI2V_5B, WanTransformerArchConfig, WanTransformerConfig
from framestream.models.wan.transformer.model import WanTransformer

__all__ = ["WanTI2VTransformer", "WanTI2VTransformerConfig", "first_frame_timesteps"]


def first_frame_timesteps(timestep: torch.Tensor, frames: int, device: torch.device) -> torch.Tensor:
    """``[1, frames]`` timesteps: 0 for latent frame 0 (the clean image), ``timestep`` for the rest.

    Stays on the device (no host sync): the scheduler's timestep is broadcast, not read.
    """
    t = torch.as_tensor(timestep, device=device).to(torch.float32).reshape(1, 1)
    return torch.cat([torch.zeros_like(t), t.expand(1, frames - 1)], dim=1)


class WanTI2VTransformer(WanTransformer):
    """Wan DiT with first-frame image conditioning (Wan 2.2 TI2V); T2V when ``input`` is None.

    ``input`` (the pipeline encoder's output) is the normalised image latent
    ``[B or 1, in_channels, 1, height, width]``. Bidirectional only: the image is frame 0
    of the one clip the DiT denoises.
    """

    config: "WanTI2VTransformerConfig"

    def __init__(self, config: "WanTI2VTransformerConfig") -> None:
        if config.causal:
            raise ValueError("WanTI2VTransformer conditions frame 0 of one bidirectional clip: set causal=False")
        super().__init__(config)

    def _image_latent(self, image_latent: Any, like: torch.Tensor) -> torch.Tensor:
        """The checked image latent, on ``like``'s device and dtype, batch-broadcast."""
        if not torch.is_tensor(image_latent) or not image_latent.is_floating_point():
            raise ValueError("the TI2V image input must be a floating-point latent tensor [B, C, 1, h, w]")
        b, c, _, h, w = like.shape
        expected = (c, 1, h, w)
        if image_latent.ndim != 5 or tuple(image_latent.shape[1:]) != expected or image_latent.shape[0] not in (1, b):
            raise ValueError(
                f"image latent has shape {tuple(image_latent.shape)}; this transformer needs [{b}, {c}, 1, {h}, {w}] "
                f"(one Wan 2.2 VAE latent frame of the video's size)"
            )
        return image_latent.to(device=like.device, dtype=like.dtype).expand(b, -1, -1, -1, -1)

    def predict_flow(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: WanKVCache,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Flow with frame 0 replaced by the clean image latent at timestep 0 (T2V when ``input`` is None)."""
        with torch.no_grad():
            if input is None:
                return self._forward(noisy_latent, timestep, cache)
            image = self._image_latent(input, noisy_latent)
            conditioned = torch.cat([image, noisy_latent[:, :, 1:]], dim=2)
            timesteps = first_frame_timesteps(timestep, noisy_latent.shape[2], noisy_latent.device)
            return self._forward(conditioned, timesteps, cache)

    def postprocess_clean_latent(
        self,
        clean_latent: torch.Tensor,
        cache: WanKVCache,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Pin latent frame 0 to the encoded image (exactly); identity for T2V."""
        if input is None:
            return clean_latent
        image = self._image_latent(input, clean_latent)
        return torch.cat([image, clean_latent[:, :, 1:]], dim=2)


def _ti2v_class() -> type:
    return WanTI2VTransformer


@config_dataclass
class WanTI2VTransformerConfig(WanTransformerConfig):
    """Config of :class:`WanTI2VTransformer`; defaults are Wan 2.2 TI2V-5B at 1280x704, 121 frames.

    Latent units: 121 frames -> 31 latent frames, 704x1280 pixels -> 44x80 latents (16x VAE).
    """

    _target: type = field(default_factory=_ti2v_class)
    arch: WanTransformerArchConfig = WAN22_TI2V_5B
    num_frames: int = 31
    height: int = 44
    width: int = 80
    guidance_scale: float = 5.0

    def __post_init__(self) -> None:
        super().__post_init__()
        if self.arch.patch_size[0] != 1:
            raise ValueError("first-frame conditioning needs a temporal patch size of 1 (frame 0 is one token frame)")
