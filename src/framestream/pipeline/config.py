"""Config of the streaming inference pipeline."""

from __future__ import annotations

from dataclasses import field

from framestream.config import InstantiateConfig, config_dataclass
from framestream.decoders.base import DecoderConfig
from framestream.diffusion.model import DiffusionModelConfig
from framestream.distributed.config import ParallelConfig
from framestream.encoders.base import EncoderConfig

__all__ = ["StreamInferencePipelineConfig"]


def _pipeline_class() -> type:
    # Imported lazily: pipeline.py imports this module.
    from framestream.pipeline.pipeline import StreamInferencePipeline

    return StreamInferencePipeline


@config_dataclass
class StreamInferencePipelineConfig(InstantiateConfig):
    """Config of :class:`~framestream.pipeline.StreamInferencePipeline`.

    Use ``encoder=None`` when there is no per-AR-step control input (pure T2V), and
    ``decoder=None`` to get the clean latent back (latent-space evaluation, or callers
    that decode themselves).
    """

    _target: type = field(default_factory=_pipeline_class)
    name: str
    """Stable slug naming this pipeline variant (the key of its recipe registry)."""
    diffusion_model: DiffusionModelConfig
    """Transformer + scheduler config."""
    decoder: DecoderConfig | None = None
    """Optional streaming decoder, called as ``decoder(latent, autoregressive_index, cache)``; None returns the latent."""
    encoder: EncoderConfig | None = None
    """Optional per-AR-step input encoder; must build a StreamingEncoder (one-shot encoders go on transformer.context_encoder)."""
    parallel: ParallelConfig = field(default_factory=ParallelConfig)
    """Multi-process layout under torchrun (context / CFG parallelism); one process ignores it."""
    enable_sync_and_profile: bool = False
    """Time every stage and log it per AR step; on CUDA this synchronises once per step, which costs throughput."""
