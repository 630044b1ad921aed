"""Decoder interfaces: streaming latent -> pixel decoders with a per-rollout cache.

- :class:`StreamingDecoder` is called as ``decoder(latent, autoregressive_index, cache)``
  and keeps everything it must remember between calls in the cache object it is given,
  never on itself, so two rollouts can interleave and two threads can decode at once.
- :class:`StreamingVideoDecoder` adds the compression ratios and the AR-step-aware
  temporal size mappers a pipeline needs to size its buffers.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import Any, Generic, TypeVar

import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass

__all__ = [
    "DecoderConfig",
    "StreamingDecoder",
    "StreamingDecoderCache",
    "StreamingVideoDecoder",
    "causal_decoder_output_frames",
    "causal_decoder_input_frames",
]


class StreamingDecoderCache:
    """Per-rollout decoder state. Empty by default; subclasses add fields."""


StreamingDecoderCacheT = TypeVar("StreamingDecoderCacheT", bound=StreamingDecoderCache)


class StreamingDecoder(ABC, nn.Module, Generic[StreamingDecoderCacheT]):
    """Streaming decoder, generic over its per-rollout cache type.

    Subclasses implement ``forward(input, autoregressive_index=0, cache=None)``.
    A stateless decoder returns a plain :class:`StreamingDecoderCache` and ignores both.
    """

    def __init__(self, config: "DecoderConfig") -> None:
        super().__init__()
        self.config = config

    @abstractmethod
    def initialize_autoregressive_cache(self, **context: Any) -> StreamingDecoderCacheT:
        """Build a fresh per-rollout cache."""


def causal_decoder_output_frames(autoregressive_index: int, latent_frames: int, ratio: int) -> int:
    """Pixel frames a causal video decoder emits: AR 0 gives ``1 + (n-1)*r``, later steps ``n*r``."""
    if autoregressive_index < 0:
        raise ValueError(f"autoregressive_index must be >= 0, got {autoregressive_index}")
    if latent_frames < 1:
        raise ValueError(f"need at least one latent frame, got {latent_frames}")
    return 1 + (latent_frames - 1) * ratio if autoregressive_index == 0 else latent_frames * ratio


def causal_decoder_input_frames(autoregressive_index: int, pixel_frames: int, ratio: int) -> int:
    """Inverse of :func:`causal_decoder_output_frames`; raises ``ValueError`` if not reachable."""
    if autoregressive_index < 0:
        raise ValueError(f"autoregressive_index must be >= 0, got {autoregressive_index}")
    if autoregressive_index == 0:
        if pixel_frames < 1 or (pixel_frames - 1) % ratio:
            raise ValueError(f"AR step 0 needs 1 + {ratio}k pixel frames, got {pixel_frames}")
        return 1 + (pixel_frames - 1) // ratio
    if pixel_frames < ratio or pixel_frames % ratio:
        raise ValueError(f"AR step {autoregressive_index} needs a positive multiple of {ratio} pixel frames, got {pixel_frames}")
    return pixel_frames // ratio


class StreamingVideoDecoder(StreamingDecoder[StreamingDecoderCacheT]):
    """Streaming latent -> pixel video decoder.

    Spatial size scales by ``spatial_compression_ratio`` both ways; the temporal size
    depends on the AR step because causal decoders emit one un-grouped first frame.
    The default mappers implement that causal rule; override them for other topologies.
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
        """Pixel frames produced by ``input_temporal_size`` latent frames at this AR step."""
        return causal_decoder_output_frames(autoregressive_index, input_temporal_size, self.temporal_compression_ratio)

    def get_input_temporal_size(self, autoregressive_index: int, output_temporal_size: int) -> int:
        """Latent frames needed for ``output_temporal_size`` pixel frames at this AR step."""
        return causal_decoder_input_frames(autoregressive_index, output_temporal_size, self.temporal_compression_ratio)


@config_dataclass
class DecoderConfig(InstantiateConfig):
    """Category base of every decoder config."""

    _target: type = field(default_factory=lambda: StreamingDecoder)
