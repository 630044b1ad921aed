"""Streaming decoders (latent -> pixels)."""

from framestream.decoders.base import (
    DecoderConfig,
    StreamingDecoder,
    StreamingDecoderCache,
    StreamingVideoDecoder,
    causal_decoder_input_frames,
    causal_decoder_output_frames,
)

__all__ = [
    "DecoderConfig",
    "StreamingDecoder",
    "StreamingDecoderCache",
    "StreamingVideoDecoder",
    "causal_decoder_input_frames",
    "causal_decoder_output_frames",
]
