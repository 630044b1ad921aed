"""DiffusionModel: noise drawing, RNG, the generate closure, finalize / context noise."""

from __future__ import annotations

from dataclasses import field
from typing import Any

import pytest
import torch
import torch.nn as nn

from framestream.config import apply_overrides, config_dataclass
from framestream.diffusion import (
    DiffusionModel,
    DiffusionModelConfig,
    FinalState,
    Transformer,
    TransformerAutoregressiveCache,
    TransformerConfig,
)
from framestream.diffusion.schedulers.base import Scheduler, SchedulerConfig

UNPATCHIFIED = (1, 2, 2, 2, 3)  # (B, C, T, H, W)
PATCHIFIED = (1, 12, 2)  # (B, T*H*W, C)


class RecordingCache(TransformerAutoregressiveCache):
    def __init__(self) -> None:
        self.events: list[tuple[str, int]] = []
        self.kv_updates: list[tuple[torch.Tensor, torch.Tensor, Any]] = []
        self.flow_inputs: list[Any] = []

    def start(self, autoregressive_index: int) -> None:
        self.events.append(("start", autoregressive_index))

    def finalize(self, autoregressive_index: int) -> None:
        self.events.append(("finalize", autoregressive_index))


class TinyTransformer(Transformer[RecordingCache]):
    """Patchify = channels-last token layout; flow = linear map of the tokens (+ input)."""

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__(config)
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(0)
            self.proj = nn.Linear(UNPATCHIFIED[1], UNPATCHIFIED[1])

    @property
    def latent_shape(self) -> tuple[int, ...]:
        return PATCHIFIED

    def initialize_autoregressive_cache(self, **context: Any) -> RecordingCache:
        return RecordingCache()

    def predict_flow(self, noisy_latent, timestep, cache, input=None):  # noqa: A002
        cache.flow_inputs.append(input)
        flow = self.proj(noisy_latent) + 1e-3 * timestep
        return flow if input is None else flow + input

    def finalize_kv_cache(self, noisy_latent, timestep, cache, input=None):  # noqa: A002
        cache.kv_updates.append((noisy_latent, timestep, input))

    def patchify_and_maybe_split_cp(self, x):
        b, c = x.shape[:2]
        return x.reshape(b, c, -1).transpose(1, 2)

    def unpatchify_and_maybe_gather_cp(self, x):
        b, _, c = x.shape
        return x.transpose(1, 2).reshape(b, c, *UNPATCHIFIED[2:])


class ZeroingTransformer(TinyTransformer):
    def postprocess_clean_latent(self, clean_latent, cache, input=None):  # noqa: A002
        return torch.zeros_like(clean_latent)


@config_dataclass
class TinyTransformerConfig(TransformerConfig):
    _target: type = field(default_factory=lambda: TinyTransformer)


class TinyScheduler(Scheduler):
    """Two renoising steps (uses the rng), and an add_noise that records its timesteps."""

    def __init__(self, config: SchedulerConfig) -> None:
        super().__init__(config)
        self.register_buffer("sigmas", torch.tensor([1.0, 0.5, 0.0]))
        self.add_noise_timesteps: list[float] = []
        self.sampled_noise: list[torch.Tensor] = []

    def sample(self, initial_noise, predict_flow, rng=None):
        self.sampled_noise.append(initial_noise)
        x = initial_noise
        x0 = x
        for i in range(2):
            sigma = self.sigmas[i].to(x.dtype)
            x0 = x - sigma * predict_flow(x, self.sigmas[i] * 1000)
            nxt = self.sigmas[i + 1].to(x.dtype)
            x = (1 - nxt) * x0 + nxt * torch.randn(x0.shape, generator=rng, device=x0.device, dtype=x0.dtype)
        return x0

    def add_noise(self, clean_input, timestep, rng=None):
        self.add_noise_timesteps.append(float(timestep))
        sigma = float(timestep) / 1000
        eps = torch.randn(clean_input.shape, generator=rng, device=clean_input.device, dtype=clean_input.dtype)
        return (1 - sigma) * clean_input + sigma * eps


@config_dataclass
class TinySchedulerConfig(SchedulerConfig):
    _target: type = field(default_factory=lambda: TinyScheduler)


def make_model(**kwargs: Any) -> DiffusionModel:
    transformer = kwargs.pop("transformer", TinyTransformerConfig())
    return DiffusionModelConfig(transformer=transformer, scheduler=TinySchedulerConfig(), **kwargs).setup()


def test_generate_returns_unpatchified_latent_and_final_state() -> None:
    model = make_model(seed=0)
    cache = model.transformer.initialize_autoregressive_cache()
    clean, state = model.generate(0, cache)
    assert clean.shape == UNPATCHIFIED
    assert isinstance(state, FinalState)
    assert state.clean_latent.shape == PATCHIFIED
    assert state.autoregressive_index == 0 and state.cache is cache and state.input is None
    torch.testing.assert_close(model.transformer.unpatchify_and_maybe_gather_cp(state.clean_latent), clean)
    assert cache.events == [("start", 0)]
    assert len(cache.flow_inputs) == 2  # the closure was called once per scheduler step


def test_input_is_patchified_and_reaches_predict_flow_and_final_state() -> None:
    model = make_model(seed=0)
    cache = model.transformer.initialize_autoregressive_cache()
    raw = torch.arange(2 * 12, dtype=torch.float32).reshape(UNPATCHIFIED)
    _, state = model.generate(0, cache, input=raw)
    expected = model.transformer.patchify_and_maybe_split_cp(raw)
    assert all(torch.equal(seen, expected) for seen in cache.flow_inputs)
    assert torch.equal(state.input, expected)


def test_postprocess_clean_latent_is_applied() -> None:
    model = make_model(seed=0, transformer=TinyTransformerConfig(_target=ZeroingTransformer))
    clean, state = model.generate(0, model.transformer.initialize_autoregressive_cache())
    assert torch.count_nonzero(clean) == 0 and torch.count_nonzero(state.clean_latent) == 0


def test_same_seed_same_output_different_seed_differs() -> None:
    def run(seed: int) -> torch.Tensor:
        model = make_model(seed=seed)
        return model.generate(0, model.transformer.initialize_autoregressive_cache())[0]

    torch.testing.assert_close(run(5), run(5), rtol=0, atol=0)
    assert not torch.allclose(run(5), run(6))


def test_rng_stream_continues_between_steps_and_ignores_global_rng() -> None:
    model = make_model(seed=1)
    rng = model.rng
    assert isinstance(rng, torch.Generator) and model.rng is rng
    cache = model.transformer.initialize_autoregressive_cache()
    torch.manual_seed(0)
    first = model.generate(0, cache)[0]
    torch.manual_seed(0)
    second = model.generate(1, cache)[0]
    assert not torch.allclose(first, second)  # same global RNG state, yet the model's stream moved on
    assert model.rng is rng


def test_seed_none_uses_global_rng() -> None:
    model = make_model(seed=None)
    assert model.rng is None
    cache = model.transformer.initialize_autoregressive_cache()
    torch.manual_seed(123)
    a = model.generate(0, cache)[0]
    torch.manual_seed(123)
    b = model.generate(1, cache)[0]
    torch.testing.assert_close(a, b, rtol=0, atol=0)


def test_rng_rebuilt_after_dtype_move_and_noise_follows_model_dtype() -> None:
    model = make_model(seed=3)
    cache = model.transformer.initialize_autoregressive_cache()
    model.generate(0, cache)  # consume some of the fp32 stream
    before = model.rng
    model.to(torch.device("cpu"))  # no-op move keeps the stream
    assert model.rng is before
    model.to(torch.float64)
    after = model.rng
    assert after is not before
    out, state = model.generate(0, model.transformer.initialize_autoregressive_cache())
    assert model.scheduler.sampled_noise[-1].dtype == torch.float64
    assert out.dtype == torch.float64 and state.clean_latent.dtype == torch.float64
    # The rebuilt stream restarts from the seed: same as a model built and moved before any draw.
    fresh = make_model(seed=3).to(torch.float64)
    expected, _ = fresh.generate(0, fresh.transformer.initialize_autoregressive_cache())
    torch.testing.assert_close(out, expected, rtol=0, atol=0)
    assert model.scheduler.sampled_noise[-1].device == model.device


@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_rng_rebuilt_on_device_move() -> None:
    model = make_model(seed=0)
    cpu_rng = model.rng
    model.to("cuda")
    assert model.rng is not cpu_rng and model.rng.device.type == "cuda"
    model.generate(0, model.transformer.initialize_autoregressive_cache())
    assert model.scheduler.sampled_noise[-1].device.type == "cuda"


def test_noise_in_unpatchified_shape_draws_then_patchifies() -> None:
    model = make_model(seed=9, noise_in_unpatchified_shape=True)
    model.generate(0, model.transformer.initialize_autoregressive_cache())
    generator = torch.Generator().manual_seed(9)
    expected = model.transformer.patchify_and_maybe_split_cp(torch.randn(UNPATCHIFIED, generator=generator))
    torch.testing.assert_close(model.scheduler.sampled_noise[0], expected, rtol=0, atol=0)

    default = make_model(seed=9)
    default.generate(0, default.transformer.initialize_autoregressive_cache())
    generator = torch.Generator().manual_seed(9)
    torch.testing.assert_close(default.scheduler.sampled_noise[0], torch.randn(PATCHIFIED, generator=generator), rtol=0, atol=0)
    assert not torch.equal(default.scheduler.sampled_noise[0], expected)


def test_finalize_without_context_noise_feeds_clean_latent() -> None:
    model = make_model(seed=0)
    cache = model.transformer.initialize_autoregressive_cache()
    raw = torch.ones(UNPATCHIFIED)
    _, state = model.generate(0, cache, input=raw)
    model.finalize(state)
    assert model.scheduler.add_noise_timesteps == []
    (noisy, timestep, seen_input), = cache.kv_updates
    assert noisy is state.clean_latent
    assert timestep.ndim == 0 and float(timestep) == 0.0
    assert seen_input is state.input
    assert cache.events == [("start", 0), ("finalize", 0)]


def test_finalize_with_context_noise_calls_add_noise() -> None:
    model = make_model(seed=0, context_noise=250)
    cache = model.transformer.initialize_autoregressive_cache()
    _, state = model.generate(0, cache)
    model.finalize(state)
    assert model.scheduler.add_noise_timesteps == [250.0]
    (noisy, timestep, _), = cache.kv_updates
    assert float(timestep) == 250.0
    assert noisy.shape == state.clean_latent.shape and not torch.allclose(noisy, state.clean_latent)
    assert cache.events[-1] == ("finalize", 0)


def test_negative_context_noise_rejected() -> None:
    with pytest.raises(ValueError, match="context_noise"):
        make_model(context_noise=-1)


def test_config_overrides_reach_model_fields() -> None:
    config = DiffusionModelConfig(transformer=TinyTransformerConfig(), scheduler=TinySchedulerConfig())
    config = apply_overrides(config, ["--seed", "7", "--context-noise", "100", "--noise-in-unpatchified-shape", "true"])
    assert (config.seed, config.context_noise, config.noise_in_unpatchified_shape) == (7, 100, True)
    assert config.setup().rng.initial_seed() == 7
