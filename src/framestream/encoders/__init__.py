"""Encoders: one-shot context encoders and streaming per-AR-step encoders."""

from framestream.encoders.base import (
    Encoder,
    EncoderConfig,
    NullEncoder,
    NullEncoderConfig,
    NullStreamingEncoder,
    NullStreamingEncoderConfig,
    StreamingEncoder,
    StreamingEncoderCache,
    StreamingVideoEncoder,
)

__all__ = [
    "Encoder",
    "EncoderConfig",
    "NullEncoder",
    "NullEncoderConfig",
    "NullStreamingEncoder",
    "NullStreamingEncoderConfig",
    "StreamingEncoder",
    "StreamingEncoderCache",
    "StreamingVideoEncoder",
]
