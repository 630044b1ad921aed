"""Encoder interfaces.

- :class:`Encoder`: stateless and one-shot, ``forward(input)``; used as a transformer's
  context encoder (text, reference image).
- :class:`StreamingEncoder`: per-AR-step, ``forward(input, autoregressive_index, cache)``
  with an explicit :class:`StreamingEncoderCache`; used as the pipeline's encoder.
- :class:`StreamingVideoEncoder`: a streaming pixel -> latent encoder with compression
  ratios and AR-step-aware temporal size mappers.
- :class:`NullEncoder`: identity, to pass already-encoded tensors straight through.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import Any, Generic, TypeVar

import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass
from framestream.decoders.base import causal_decoder_input_frames, causal_decoder_output_frames

__all__ = [
    "EncoderConfig",
    "Encoder",
    "StreamingEncoder",
    "StreamingEncoderCache",
    "StreamingVideoEncoder",
    "NullEncoder",
    "NullEncoderConfig",
    "NullStreamingEncoder",
    "NullStreamingEncoderConfig",
]


class StreamingEncoderCache:
    """Per-rollout encoder state. Empty by default; subclasses add fields."""


StreamingEncoderCacheT = TypeVar("StreamingEncoderCacheT", bound=StreamingEncoderCache)


class Encoder(ABC, nn.Module):
    """Stateless one-shot encoder: ``forward(input)``."""

    def __init__(self, config: "EncoderConfig") -> None:
        super().__init__()
        self.config = config


class StreamingEncoder(ABC, nn.Module, Generic[StreamingEncoderCacheT]):
    """Per-AR-step encoder: ``forward(input, autoregressive_index=0, cache=None)``."""

    def __init__(self, config: "EncoderConfig") -> None:
        super().__init__()
        self.config = config

    @abstractmethod
    def initialize_autoregressive_cache(self, **context: Any) -> StreamingEncoderCacheT:
        """Build a fresh per-rollout cache."""


class StreamingVideoEncoder(StreamingEncoder[StreamingEncoderCacheT]):
    """Streaming pixel -> latent video encoder.

    AR 0 takes ``1 + (n-1)*r`` pixel frames for ``n`` latents (the first frame is
    encoded alone, causally); later steps take ``n*r``. Override the mappers for
    encoders with another temporal topology.
    """

    @property
    @abstractmethod
    def spatial_compression_ratio(self) -> int:
        """Pixel side / latent side."""

    @property
    @abstractmethod
    def temporal_compression_ratio(self) -> int:
        """Pixel frames / latent frames in steady state (AR >= 1)."""

    def get_output_temporal_size(self, autoregressive_index: int, input_temporal_size: int) -> int:
        """Latent frames produced from ``input_temporal_size`` pixel frames at this AR step."""
        return causal_decoder_input_frames(autoregressive_index, input_temporal_size, self.temporal_compression_ratio)

    def get_input_temporal_size(self, autoregressive_index: int, output_temporal_size: int) -> int:
        """Pixel frames needed for ``output_temporal_size`` latent frames at this AR step."""
        return causal_decoder_output_frames(autoregressive_index, output_temporal_size, self.temporal_compression_ratio)


@config_dataclass
class EncoderConfig(InstantiateConfig):
    """Category base of every encoder config."""

    _target: type = field(default_factory=lambda: Encoder)


class NullEncoder(Encoder):
    """Identity one-shot encoder: returns its input unchanged."""

    def forward(self, input: Any) -> Any:  # noqa: A002 - mirrors the documented call shape
        return input


@config_dataclass
class NullEncoderConfig(EncoderConfig):
    """Config of :class:`NullEncoder`."""

    _target: type = field(default_factory=lambda: NullEncoder)


class NullStreamingEncoder(StreamingEncoder[StreamingEncoderCache]):
    """Identity per-AR-step encoder: feeds already-encoded tensors to the diffusion model."""

    def initialize_autoregressive_cache(self, **context: Any) -> StreamingEncoderCache:
        return StreamingEncoderCache()

    def forward(self, input: Any, autoregressive_index: int = 0, cache: StreamingEncoderCache | None = None) -> Any:  # noqa: A002
        return input


@config_dataclass
class NullStreamingEncoderConfig(EncoderConfig):
    """Config of :class:`NullStreamingEncoder`."""

    _target: type = field(default_factory=lambda: NullStreamingEncoder)
