"""A tiny random-weight streaming video decoder for the demo recipe and for tests.

Latent ``(B, C, T, h, w)`` -> RGB ``(B, 3, T', 8h, 8w)`` in ``[-1, 1]`` with 4x temporal
upsampling under the causal rule of :class:`~framestream.decoders.StreamingVideoDecoder`:
AR step 0 emits ``1 + (T - 1) * 4`` frames (the very first latent frame yields one
frame), later steps ``T * 4``. The two causal temporal convolutions keep their last
input frames in :class:`DemoDecoderCache`, so decoding chunk by chunk gives the same
frames as decoding everything at once. Weights are random (seeded by ``init_seed``).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.config import config_dataclass
from framestream.decoders.base import DecoderConfig, StreamingDecoderCache, StreamingVideoDecoder

__all__ = ["CausalConv3d", "DemoDecoderCache", "DemoStreamingDecoder", "DemoStreamingDecoderConfig"]


class CausalConv3d(nn.Conv3d):
    """3-D convolution padded in time on the past side only, continuing from a carried state.

    ``forward(x, state)`` returns ``(y, new_state)``: ``state`` holds the last
    ``kernel_t - 1`` input frames of the previous call (None at the start, meaning zeros).
    Spatial padding is symmetric ("same").
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: tuple[int, int, int] = (3, 3, 3)) -> None:
        kt, kh, kw = kernel_size
        super().__init__(in_channels, out_channels, kernel_size, padding=(0, kh // 2, kw // 2))
        self.time_padding = kt - 1

    def forward(self, x: torch.Tensor, state: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor | None]:  # type: ignore[override]
        if self.time_padding == 0:
            return super().forward(x), None
        if state is None:
            b, c, _, h, w = x.shape
            state = x.new_zeros(b, c, self.time_padding, h, w)
        padded = torch.cat([state, x], dim=2)
        return super().forward(padded), padded[:, :, -self.time_padding :].clone()


class DemoDecoderCache(StreamingDecoderCache):
    """Per-rollout state of :class:`DemoStreamingDecoder`: causal conv states and the AR position."""

    def __init__(self) -> None:
        self.conv_in_state: torch.Tensor | None = None
        """Last latent-rate input frames of ``conv_in``."""
        self.time_mix_state: torch.Tensor | None = None
        """Last pixel-rate input frames of ``time_mix``."""
        self.next_index = 0
        """AR index the next call must use."""


@config_dataclass
class DemoStreamingDecoderConfig(DecoderConfig):
    """Config of :class:`DemoStreamingDecoder`."""

    _target: type = field(default_factory=lambda: DemoStreamingDecoder)
    latent_channels: int = 4
    """Channels of the latent video."""
    hidden_channels: int = 32
    """Channels after ``conv_in``; halved by each spatial upsampling stage (min 8)."""
    temporal_upsample: int = 4
    """Pixel frames per latent frame in steady state."""
    spatial_upsample: int = 8
    """Pixel side / latent side; a power of two."""
    init_seed: int = 1
    """Seed of the random weights."""

    def __post_init__(self) -> None:
        s = self.spatial_upsample
        if s < 1 or s & (s - 1):
            raise ValueError(f"spatial_upsample must be a power of two, got {s}")
        for name in ("latent_channels", "hidden_channels", "temporal_upsample"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class DemoStreamingDecoder(StreamingVideoDecoder[DemoDecoderCache]):
    """Tiny causal latent -> RGB decoder; see the module doc."""

    config: DemoStreamingDecoderConfig

    def __init__(self, config: DemoStreamingDecoderConfig) -> None:
        super().__init__(config)
        c = config
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.init_seed)
            hidden = c.hidden_channels
            self.conv_in = CausalConv3d(c.latent_channels, hidden)
            self.time_up = nn.Conv3d(hidden, hidden * c.temporal_upsample, kernel_size=1)
            self.time_mix = CausalConv3d(hidden, hidden)
            stages = []
            channels = hidden
            # Spatial stages work frame by frame: 2-D convs over (B*T) images.
            for _ in range(c.spatial_upsample.bit_length() - 1):
                out = max(channels // 2, 8)
                stages.append(nn.Conv2d(channels, out, kernel_size=3, padding=1))
                channels = out
            self.up_convs = nn.ModuleList(stages)
            self.conv_out = nn.Conv2d(channels, 3, kernel_size=3, padding=1)
            # Variance-preserving init so the random decoder's output spans the RGB range visibly.
            for module in self.modules():
                if isinstance(module, (nn.Conv2d, nn.Conv3d)):
                    nn.init.kaiming_normal_(module.weight, nonlinearity="relu")
                    nn.init.zeros_(module.bias)

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.spatial_upsample

    @property
    def temporal_compression_ratio(self) -> int:
        return self.config.temporal_upsample

    def initialize_autoregressive_cache(self, **context: Any) -> DemoDecoderCache:
        if context:
            raise TypeError(f"DemoStreamingDecoder takes no per-rollout context, got {sorted(context)}")
        return DemoDecoderCache()

    def forward(self, input: torch.Tensor, autoregressive_index: int = 0, cache: DemoDecoderCache | None = None) -> torch.Tensor:  # noqa: A002
        """Decode one chunk of latents; without a cache, decode a whole clip from AR step 0."""
        if cache is None:
            cache = self.initialize_autoregressive_cache()
        if autoregressive_index != cache.next_index:
            raise ValueError(f"DemoStreamingDecoder: expected AR step {cache.next_index}, got {autoregressive_index}")
        if input.ndim != 5 or input.shape[1] != self.config.latent_channels or input.shape[2] < 1:
            raise ValueError(
                f"expected latents (B, {self.config.latent_channels}, T>=1, h, w), got shape {tuple(input.shape)}"
            )
        weight = self.conv_in.weight
        x = input.to(device=weight.device, dtype=weight.dtype)
        x, conv_in_state = self.conv_in(x, cache.conv_in_state)
        x = F.silu(x)
        b, c, t, h, w = x.shape
        r = self.config.temporal_upsample
        x = self.time_up(x).view(b, c, r, t, h, w).permute(0, 1, 3, 2, 4, 5).reshape(b, c, t * r, h, w)
        if autoregressive_index == 0:
            x = x[:, :, r - 1 :]  # the first latent frame of the stream stands for a single frame
        x, time_mix_state = self.time_mix(F.silu(x), cache.time_mix_state)
        b, c, t, h, w = x.shape
        x = x.transpose(1, 2).reshape(b * t, c, h, w)
        for conv in self.up_convs:
            x = conv(F.interpolate(F.silu(x), scale_factor=2, mode="nearest"))
        x = torch.tanh(self.conv_out(F.silu(x)))
        out = x.reshape(b, t, 3, x.shape[-2], x.shape[-1]).transpose(1, 2)
        # Commit the carried state only once the whole chunk decoded.
        cache.conv_in_state, cache.time_mix_state = conv_in_state, time_mix_state
        cache.next_index = autoregressive_index + 1
        return out
