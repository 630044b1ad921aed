"""The streaming inference loop: encoder -> diffusion model -> decoder, one AR chunk at a time.

Example::

    pipeline = config.setup().to("cuda")
    cache = pipeline.initialize_cache(transformer_context={...})
    video = pipeline.generate(0, cache, input=...)
    pipeline.finalize(0, cache)
    video = pipeline.generate(1, cache, input=...)
    pipeline.finalize(1, cache)          # optional after the last step

or, when only the stream matters::

    for video in pipeline.rollout(num_steps=8):
        writer.write(video)
"""

from __future__ import annotations

import contextlib
import logging
import operator
from collections.abc import Iterable, Iterator
from typing import Any, Generic

import torch
import torch.nn as nn

from framestream.decoders.base import StreamingDecoder
from framestream.diffusion.model import DiffusionModel
from framestream.encoders.base import StreamingEncoder
from framestream.pipeline.cache import (
    StreamingDecoderCacheT,
    StreamingEncoderCacheT,
    StreamInferencePipelineCache,
    TransformerCacheT,
)
from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.pipeline.profiling import EventProfiler, format_record

__all__ = ["StreamInferencePipeline"]

logger = logging.getLogger(__name__)

PipelineCache = StreamInferencePipelineCache[StreamingEncoderCacheT, TransformerCacheT, StreamingDecoderCacheT]


class StreamInferencePipeline(nn.Module, Generic[StreamingEncoderCacheT, TransformerCacheT, StreamingDecoderCacheT]):
    """End-to-end streaming inference pipeline, generic over the three cache types.

    All per-rollout state lives in the :class:`StreamInferencePipelineCache` returned by
    :meth:`initialize_cache`, so one pipeline can serve several rollouts. ``generate``
    and ``finalize`` run under ``torch.no_grad()``.
    """

    def __init__(self, config: StreamInferencePipelineConfig) -> None:
        super().__init__()
        self.config = config
        self.diffusion_model: DiffusionModel[TransformerCacheT] = config.diffusion_model.setup()
        self.encoder: StreamingEncoder[StreamingEncoderCacheT] | None = None
        self.decoder: StreamingDecoder[StreamingDecoderCacheT] | None = None
        if config.encoder is not None:
            encoder = config.encoder.setup()
            if not isinstance(encoder, StreamingEncoder):
                raise TypeError(
                    f"pipeline encoder must be a StreamingEncoder, but {type(config.encoder).__name__} builds "
                    f"{type(encoder).__name__}; one-shot encoders (text, reference image) belong on "
                    "transformer.context_encoder, and NullStreamingEncoderConfig passes encoded tensors through"
                )
            self.encoder = encoder
        if config.decoder is not None:
            decoder = config.decoder.setup()
            if not isinstance(decoder, StreamingDecoder):
                raise TypeError(
                    f"pipeline decoder must be a StreamingDecoder, but {type(config.decoder).__name__} builds "
                    f"{type(decoder).__name__}"
                )
            self.decoder = decoder

    @property
    def device(self) -> torch.device:
        """Device of the diffusion model (where noise is drawn)."""
        return self.diffusion_model.device

    # ------------------------------------------------------------------ rollout state
    def initialize_cache(
        self,
        transformer_context: dict[str, Any] | None = None,
        encoder_context: dict[str, Any] | None = None,
        decoder_context: dict[str, Any] | None = None,
    ) -> PipelineCache:
        """Build a fresh per-rollout cache.

        Each ``*_context`` dict is passed as keyword arguments to that component's
        ``initialize_autoregressive_cache``. Encoder / decoder contexts are ignored (with a
        warning) when the pipeline has no such component.
        """
        with torch.no_grad():
            transformer_cache = self.diffusion_model.transformer.initialize_autoregressive_cache(**(transformer_context or {}))
            encoder_cache = None
            if self.encoder is not None:
                encoder_cache = self.encoder.initialize_autoregressive_cache(**(encoder_context or {}))
            elif encoder_context:
                logger.warning("encoder_context %s ignored: this pipeline has no encoder", sorted(encoder_context))
            decoder_cache = None
            if self.decoder is not None:
                decoder_cache = self.decoder.initialize_autoregressive_cache(**(decoder_context or {}))
            elif decoder_context:
                logger.warning("decoder_context %s ignored: this pipeline has no decoder", sorted(decoder_context))
        profiler = EventProfiler(self.device) if self.config.enable_sync_and_profile else None
        return StreamInferencePipelineCache(
            transformer_cache=transformer_cache,
            encoder_cache=encoder_cache,
            decoder_cache=decoder_cache,
            event_profiler=profiler,
        )

    # ------------------------------------------------------------------ one AR step
    def _check_generate(self, autoregressive_index: int, cache: PipelineCache, input: Any) -> None:  # noqa: A002
        if not isinstance(cache, StreamInferencePipelineCache):
            raise TypeError(f"cache must come from initialize_cache(), got {type(cache).__name__}")
        if cache.pending_finalize:
            raise RuntimeError(
                f"AR step {cache.autoregressive_index} was generated but not finalized: call "
                f"finalize({cache.autoregressive_index}, cache) before generating step {autoregressive_index}"
            )
        expected = cache.next_autoregressive_index
        if isinstance(autoregressive_index, bool) or not hasattr(autoregressive_index, "__index__"):
            raise TypeError(f"generate: autoregressive_index must be an integer, got {autoregressive_index!r}")
        if operator.index(autoregressive_index) != expected:
            detail = "the first step after initialize_cache is 0" if cache.autoregressive_index is None else (
                f"the previous step was {cache.autoregressive_index}"
            )
            raise ValueError(f"generate: expected autoregressive_index {expected} ({detail}), got {autoregressive_index!r}")
        if self.encoder is None and input is not None:
            raise ValueError(
                "generate: this pipeline has no encoder, so input must be None "
                "(configure an encoder, e.g. NullStreamingEncoderConfig, to feed per-step inputs)"
            )
        if self.encoder is not None and input is None:
            raise ValueError(f"generate: this pipeline's encoder ({type(self.encoder).__name__}) needs an input at every AR step")

    @staticmethod
    def _stage(profiler: EventProfiler | None, name: str) -> contextlib.AbstractContextManager[None]:
        return profiler.stage(name) if profiler is not None else contextlib.nullcontext()

    @torch.no_grad()
    def generate(self, autoregressive_index: int, cache: PipelineCache, input: Any = None) -> torch.Tensor:  # noqa: A002
        """Generate one chunk for this AR step.

        Args:
            autoregressive_index: ``cache.autoregressive_index + 1``, or 0 for the first call
                after :meth:`initialize_cache`. The previous step must be finalized first.
            cache: Per-rollout cache from :meth:`initialize_cache`.
            input: Raw input for the encoder; required when an encoder is configured and
                must be None otherwise.

        Returns:
            The decoded chunk (e.g. RGB video in [-1, 1]) when a decoder is configured,
            otherwise the unpatchified clean latent.
        """
        self._check_generate(autoregressive_index, cache, input)
        autoregressive_index = operator.index(autoregressive_index)
        profiler = cache.event_profiler
        if profiler is not None:
            profiler.begin_step()
        encoded = None
        if self.encoder is not None:
            with self._stage(profiler, "encode"):
                encoded = self.encoder(input, autoregressive_index, cache.encoder_cache)
        with self._stage(profiler, "diffusion"):
            output, final_state = self.diffusion_model.generate(autoregressive_index, cache.transformer_cache, encoded)
        if self.decoder is not None:
            with self._stage(profiler, "decode"):
                output = self.decoder(output, autoregressive_index, cache.decoder_cache)
        cache.final_state = final_state
        cache.autoregressive_index = autoregressive_index
        return output

    @torch.no_grad()
    def finalize(self, autoregressive_index: int, cache: PipelineCache) -> dict[str, float] | None:
        """Advance the diffusion AR cache so the next step can be generated.

        Args:
            autoregressive_index: Must equal the index of the most recent :meth:`generate`.
            cache: The cache passed to :meth:`generate`; ``cache.final_state`` is consumed.

        Returns:
            None unless ``enable_sync_and_profile``; then this step's record
            ``{<stage>_ms, total_ms, total_ms_wo_finalize, mem_alloc_gib, mem_reserved_gib,
            mem_peak_gib}`` (also logged at INFO level).
        """
        if cache.final_state is None:
            if cache.autoregressive_index is None:
                raise RuntimeError("finalize called before generate: there is no AR step to finalize")
            raise RuntimeError(f"AR step {cache.autoregressive_index} is already finalized")
        if autoregressive_index != cache.autoregressive_index:
            raise ValueError(
                f"finalize: autoregressive_index {autoregressive_index!r} does not match the last generated "
                f"step {cache.autoregressive_index}"
            )
        profiler = cache.event_profiler
        with self._stage(profiler if profiler is not None and profiler.in_step else None, "finalize"):
            self.diffusion_model.finalize(cache.final_state)
        cache.final_state = None
        if profiler is None or not profiler.in_step:
            return None
        record = profiler.end_step()
        logger.info("AR step %d: %s", autoregressive_index, format_record(record))
        return record

    # ------------------------------------------------------------------ convenience
    def rollout(
        self,
        num_steps: int,
        cache: PipelineCache | None = None,
        inputs: Iterable[Any] | None = None,
    ) -> Iterator[torch.Tensor]:
        """Yield ``num_steps`` consecutive chunks, finalizing each before the next is generated.

        Each chunk is yielded before its step is finalized, so the consumer gets it as
        early as possible; the step is finalized when the next chunk is requested (and
        after the last one, once the loop ends). Pass ``cache`` to continue an existing
        rollout or to read ``cache.event_profiler.records`` afterwards; ``inputs`` gives
        one encoder input per step (required iff the pipeline has an encoder).
        """
        if isinstance(num_steps, bool) or not isinstance(num_steps, int) or num_steps < 0:
            raise ValueError(f"num_steps must be a non-negative integer, got {num_steps!r}")
        if cache is None:
            cache = self.initialize_cache()
        input_iter = iter(inputs) if inputs is not None else None
        start = cache.next_autoregressive_index
        for step in range(num_steps):
            index = start + step
            step_input = None
            if input_iter is not None:
                try:
                    step_input = next(input_iter)
                except StopIteration:
                    raise ValueError(f"rollout: inputs ran out after {step} of {num_steps} steps") from None
            output = self.generate(index, cache, step_input)
            yield output
            self.finalize(index, cache)
