"""StreamInferencePipeline: AR-index contract, encoder/decoder wiring, rollout, profiling."""

from __future__ import annotations

import logging
from dataclasses import field
from typing import Any

import pytest
import torch
import torch.nn as nn

from framestream.config import config_dataclass
from framestream.decoders import DecoderConfig, StreamingDecoder, StreamingDecoderCache
from framestream.diffusion import DiffusionModelConfig, Transformer, TransformerAutoregressiveCache, TransformerConfig
from framestream.diffusion.schedulers.base import Scheduler, SchedulerConfig
from framestream.encoders import NullEncoderConfig, NullStreamingEncoderConfig
from framestream.pipeline import (
    STAGES,
    EventProfiler,
    StreamInferencePipeline,
    StreamInferencePipelineCache,
    StreamInferencePipelineConfig,
    profile_table,
)

LATENT = (1, 2, 3, 2, 2)  # (B, C, T, H, W)


class CountingCache(TransformerAutoregressiveCache):
    def __init__(self, **context: Any) -> None:
        self.context = context
        self.finalized: list[int] = []

    def finalize(self, autoregressive_index: int) -> None:
        self.finalized.append(autoregressive_index)


class TinyTransformer(Transformer[CountingCache]):
    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        self.scale = nn.Parameter(torch.tensor(0.5))

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return LATENT

    def initialize_autoregressive_cache(self, **context: Any) -> CountingCache:
        return CountingCache(**context)

    def predict_flow(self, noisy_latent, timestep, cache, input=None):  # noqa: A002
        flow = self.scale * noisy_latent
        return flow if input is None else flow + input

    def patchify_and_maybe_split_cp(self, x):
        return x

    def unpatchify_and_maybe_gather_cp(self, x):
        return x


@config_dataclass
class TinyTransformerConfig(TransformerConfig):
    _target: type = field(default_factory=lambda: TinyTransformer)


class OneStepScheduler(Scheduler):
    def sample(self, initial_noise, predict_flow, rng=None):
        return initial_noise - predict_flow(initial_noise, torch.tensor(1000.0))

    def add_noise(self, clean_input, timestep, rng=None):
        return clean_input


@config_dataclass
class OneStepSchedulerConfig(SchedulerConfig):
    _target: type = field(default_factory=lambda: OneStepScheduler)


class DoublingDecoderCache(StreamingDecoderCache):
    def __init__(self, **context: Any) -> None:
        self.context = context
        self.calls: list[int] = []


class DoublingDecoder(StreamingDecoder[DoublingDecoderCache]):
    def initialize_autoregressive_cache(self, **context: Any) -> DoublingDecoderCache:
        return DoublingDecoderCache(**context)

    def forward(self, input, autoregressive_index=0, cache=None):  # noqa: A002
        cache.calls.append(autoregressive_index)
        return 2 * input


@config_dataclass
class DoublingDecoderConfig(DecoderConfig):
    _target: type = field(default_factory=lambda: DoublingDecoder)


def make_pipeline(*, encoder: Any = None, decoder: Any = None, profile: bool = False, seed: int | None = 0) -> StreamInferencePipeline:
    return StreamInferencePipelineConfig(
        name="tiny",
        diffusion_model=DiffusionModelConfig(transformer=TinyTransformerConfig(), scheduler=OneStepSchedulerConfig(), seed=seed),
        encoder=encoder,
        decoder=decoder,
        enable_sync_and_profile=profile,
    ).setup()


# ---------------------------------------------------------------------------- AR index contract


def test_generate_finalize_sequence_updates_cache() -> None:
    pipeline = make_pipeline()
    cache = pipeline.initialize_cache()
    assert isinstance(cache, StreamInferencePipelineCache)
    assert cache.autoregressive_index is None and cache.final_state is None
    assert cache.encoder_cache is None and cache.decoder_cache is None and cache.event_profiler is None
    for index in range(3):
        pipeline.generate(index, cache)
        assert cache.autoregressive_index == index and cache.final_state is not None
        assert pipeline.finalize(index, cache) is None
        assert cache.final_state is None
    assert cache.transformer_cache.finalized == [0, 1, 2]


def test_first_index_must_be_zero() -> None:
    pipeline = make_pipeline()
    cache = pipeline.initialize_cache()
    with pytest.raises(ValueError, match="expected autoregressive_index 0"):
        pipeline.generate(1, cache)
    pipeline.generate(0, cache)  # the failed call left the cache untouched


def test_skipping_or_repeating_an_index_is_an_error() -> None:
    pipeline = make_pipeline()
    cache = pipeline.initialize_cache()
    pipeline.generate(0, cache)
    pipeline.finalize(0, cache)
    with pytest.raises(ValueError, match="expected autoregressive_index 1"):
        pipeline.generate(2, cache)
    with pytest.raises(ValueError, match="expected autoregressive_index 1"):
        pipeline.generate(0, cache)
    with pytest.raises(TypeError, match="integer"):
        pipeline.generate(1.0, cache)
    pipeline.generate(torch.tensor(1), cache)  # any integer-like index works
    assert cache.autoregressive_index == 1 and type(cache.autoregressive_index) is int


def test_generate_twice_without_finalize_is_an_error() -> None:
    pipeline = make_pipeline()
    cache = pipeline.initialize_cache()
    pipeline.generate(0, cache)
    with pytest.raises(RuntimeError, match="not finalized"):
        pipeline.generate(1, cache)
    with pytest.raises(RuntimeError, match="not finalized"):
        pipeline.generate(0, cache)


def test_finalize_errors() -> None:
    pipeline = make_pipeline()
    cache = pipeline.initialize_cache()
    with pytest.raises(RuntimeError, match="before generate"):
        pipeline.finalize(0, cache)
    pipeline.generate(0, cache)
    with pytest.raises(ValueError, match="does not match"):
        pipeline.finalize(1, cache)
    pipeline.finalize(0, cache)
    with pytest.raises(RuntimeError, match="already finalized"):
        pipeline.finalize(0, cache)


def test_caches_are_independent_rollouts() -> None:
    pipeline = make_pipeline()
    a, b = pipeline.initialize_cache(), pipeline.initialize_cache()
    pipeline.generate(0, a)
    pipeline.generate(0, b)  # b has its own AR position
    pipeline.finalize(0, a)
    pipeline.finalize(0, b)


# ---------------------------------------------------------------------------- encoder / decoder wiring


def test_input_without_encoder_is_rejected() -> None:
    pipeline = make_pipeline()
    with pytest.raises(ValueError, match="no encoder"):
        pipeline.generate(0, pipeline.initialize_cache(), input=torch.zeros(LATENT))


def test_missing_input_with_encoder_is_rejected() -> None:
    pipeline = make_pipeline(encoder=NullStreamingEncoderConfig())
    with pytest.raises(ValueError, match="needs an input"):
        pipeline.generate(0, pipeline.initialize_cache())


def test_one_shot_encoder_is_rejected() -> None:
    with pytest.raises(TypeError, match="StreamingEncoder"):
        make_pipeline(encoder=NullEncoderConfig())


def test_encoder_output_reaches_the_transformer() -> None:
    with_input = make_pipeline(encoder=NullStreamingEncoderConfig())
    without = make_pipeline()
    control = torch.full(LATENT, 3.0)
    out = with_input.generate(0, with_input.initialize_cache(), input=control)
    base = without.generate(0, without.initialize_cache())
    torch.testing.assert_close(out, base - control)  # sample() = noise - (0.5 * noise + input)


def test_decoder_none_returns_clean_latent() -> None:
    pipeline = make_pipeline(seed=4)
    out = pipeline.generate(0, pipeline.initialize_cache())
    generator = torch.Generator().manual_seed(4)
    torch.testing.assert_close(out, 0.5 * torch.randn(LATENT, generator=generator))


def test_decoder_is_called_with_index_and_its_cache() -> None:
    pipeline = make_pipeline(decoder=DoublingDecoderConfig(), seed=4)
    reference = make_pipeline(seed=4)
    cache = pipeline.initialize_cache(decoder_context={"tag": "x"})
    ref_cache = reference.initialize_cache()
    for index in range(2):
        out = pipeline.generate(index, cache)
        torch.testing.assert_close(out, 2 * reference.generate(index, ref_cache))
        pipeline.finalize(index, cache)
        reference.finalize(index, ref_cache)
    assert cache.decoder_cache.calls == [0, 1] and cache.decoder_cache.context == {"tag": "x"}


def test_contexts_are_forwarded(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = make_pipeline()
    with caplog.at_level(logging.WARNING, logger="framestream.pipeline"):
        cache = pipeline.initialize_cache(transformer_context={"text": "a cat"}, decoder_context={"unused": 1})
    assert cache.transformer_cache.context == {"text": "a cat"}
    assert "decoder_context" in caplog.text and "ignored" in caplog.text


# ---------------------------------------------------------------------------- rollout


def test_rollout_yields_and_finalizes_every_step() -> None:
    pipeline = make_pipeline(decoder=DoublingDecoderConfig())
    cache = pipeline.initialize_cache()
    outputs = list(pipeline.rollout(3, cache=cache))
    assert len(outputs) == 3 and all(o.shape == LATENT for o in outputs)
    assert cache.transformer_cache.finalized == [0, 1, 2] and cache.final_state is None
    assert len(list(pipeline.rollout(2, cache=cache))) == 2  # continues the same rollout
    assert cache.autoregressive_index == 4


def test_rollout_with_inputs() -> None:
    pipeline = make_pipeline(encoder=NullStreamingEncoderConfig())
    inputs = [torch.full(LATENT, float(i)) for i in range(2)]
    assert len(list(pipeline.rollout(2, inputs=inputs))) == 2
    with pytest.raises(ValueError, match="inputs ran out after 2 of 3"):
        list(pipeline.rollout(3, inputs=inputs))
    with pytest.raises(ValueError, match="num_steps"):
        list(pipeline.rollout(-1))


# ---------------------------------------------------------------------------- profiling


def test_finalize_returns_profile_record_and_logs(caplog: pytest.LogCaptureFixture) -> None:
    pipeline = make_pipeline(encoder=NullStreamingEncoderConfig(), decoder=DoublingDecoderConfig(), profile=True)
    cache = pipeline.initialize_cache()
    assert isinstance(cache.event_profiler, EventProfiler)
    pipeline.generate(0, cache, input=torch.zeros(LATENT))
    with caplog.at_level(logging.INFO, logger="framestream.pipeline"):
        record = pipeline.finalize(0, cache)
    expected = {f"{s}_ms" for s in STAGES} | {
        "total_ms",
        "total_ms_wo_finalize",
        "mem_alloc_gib",
        "mem_reserved_gib",
        "mem_peak_gib",
    }
    assert set(record) == expected
    assert all(v >= 0 for v in record.values())
    assert record["total_ms"] == pytest.approx(sum(record[f"{s}_ms"] for s in STAGES))
    assert record["total_ms_wo_finalize"] == pytest.approx(record["total_ms"] - record["finalize_ms"])
    assert 0 < record["mem_alloc_gib"] <= record["mem_peak_gib"]
    assert "AR step 0" in caplog.text and "diffusion_ms=" in caplog.text
    assert cache.event_profiler.records == [record]


def test_missing_stages_report_zero() -> None:
    pipeline = make_pipeline(profile=True)
    cache = pipeline.initialize_cache()
    pipeline.generate(0, cache)
    record = pipeline.finalize(0, cache)
    assert record["encode_ms"] == 0.0 and record["decode_ms"] == 0.0 and record["diffusion_ms"] > 0


def test_event_profiler_times_stages_on_cpu() -> None:
    import time

    profiler = EventProfiler("cpu")
    assert not profiler.uses_cuda_events
    with pytest.raises(RuntimeError, match="begin_step"):
        with profiler.stage("decode"):
            pass
    profiler.begin_step()
    with profiler.stage("decode"):
        time.sleep(0.02)
    with pytest.raises(ValueError, match="unknown stage"):
        with profiler.stage("upload"):
            pass
    record = profiler.end_step()
    assert 15.0 <= record["decode_ms"] < 1000.0
    with pytest.raises(RuntimeError, match="without begin_step"):
        profiler.end_step()


def test_profile_table_renders() -> None:
    from rich.console import Console

    records = [
        {"encode_ms": 1.0, "diffusion_ms": 10.0, "decode_ms": 2.0, "finalize_ms": 3.0, "total_ms": 16.0,
         "total_ms_wo_finalize": 13.0, "mem_alloc_gib": 0.5, "mem_reserved_gib": 0.5, "mem_peak_gib": 0.75},
        {"encode_ms": 3.0, "diffusion_ms": 20.0, "decode_ms": 4.0, "finalize_ms": 5.0, "total_ms": 32.0,
         "total_ms_wo_finalize": 27.0, "mem_alloc_gib": 0.5, "mem_reserved_gib": 0.5, "mem_peak_gib": 0.75},
    ]
    console = Console(record=True, width=200)
    console.print(profile_table(records, title="t"))
    text = console.export_text()
    for needle in ("diffusion", "w/o fin", "peak", "times in ms", "GiB", "mean*", "15.0", "24.0", "20.0", "0.75"):
        assert needle in text
    console.print(profile_table([]))
    assert "no profiled steps" in console.export_text()
