"""Per-rollout cache threaded through :class:`~framestream.pipeline.StreamInferencePipeline`."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, TypeVar

from framestream.decoders.base import StreamingDecoderCache
from framestream.diffusion.model import FinalState
from framestream.diffusion.transformer import TransformerAutoregressiveCache
from framestream.encoders.base import StreamingEncoderCache
from framestream.pipeline.profiling import EventProfiler

__all__ = ["StreamInferencePipelineCache"]

StreamingEncoderCacheT = TypeVar("StreamingEncoderCacheT", bound=StreamingEncoderCache)
TransformerCacheT = TypeVar("TransformerCacheT", bound=TransformerAutoregressiveCache)
StreamingDecoderCacheT = TypeVar("StreamingDecoderCacheT", bound=StreamingDecoderCache)


@dataclass(kw_only=True)
class StreamInferencePipelineCache(Generic[StreamingEncoderCacheT, TransformerCacheT, StreamingDecoderCacheT]):
    """Everything one rollout carries between AR steps; build it with ``pipeline.initialize_cache()``.

    Holding all per-rollout state here (never on the modules) lets several rollouts
    share one pipeline.
    """

    transformer_cache: TransformerCacheT
    """Long-lived transformer AR cache (always present)."""
    encoder_cache: StreamingEncoderCacheT | None = None
    """Encoder AR cache; None iff the pipeline has no encoder."""
    decoder_cache: StreamingDecoderCacheT | None = None
    """Decoder AR cache; None iff the pipeline has no decoder."""
    final_state: FinalState[TransformerCacheT] | None = None
    """Diffusion-model state of the most recent ``generate``, consumed by ``finalize``; None once finalized."""
    autoregressive_index: int | None = None
    """AR step index of the most recent ``generate``; None right after ``initialize_cache``."""
    event_profiler: EventProfiler | None = None
    """Per-step profiler, present only when ``enable_sync_and_profile`` is on."""

    @property
    def next_autoregressive_index(self) -> int:
        """Index the next ``generate`` call must use."""
        return 0 if self.autoregressive_index is None else self.autoregressive_index + 1

    @property
    def pending_finalize(self) -> bool:
        """True when the most recent ``generate`` has not been finalized yet."""
        return self.final_state is not None
