"""Built-in demo model: a tiny random-weight causal DiT and streaming decoder, and their recipe.

Random weights: this exists to exercise the streaming pipeline end to end (``framestream
demo``, tests), not to produce meaningful video.
"""

from framestream.models.demo.decoder import (
    CausalConv3d,
    DemoDecoderCache,
    DemoStreamingDecoder,
    DemoStreamingDecoderConfig,
)
from framestream.models.demo.recipe import DEMO_CONFIGS, demo_pipeline_config
from framestream.models.demo.transformer import DemoKVCache, DemoTransformer, DemoTransformerConfig

__all__ = [
    "DEMO_CONFIGS",
    "CausalConv3d",
    "DemoDecoderCache",
    "DemoKVCache",
    "DemoStreamingDecoder",
    "DemoStreamingDecoderConfig",
    "DemoTransformer",
    "DemoTransformerConfig",
    "demo_pipeline_config",
]
