"""Tests for the flow-matching schedulers: parity with diffusers, the renoise loop, dtypes, validation."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from framestream.diffusion.schedulers import (
    FlowMatchEulerScheduler,
    FlowMatchEulerSchedulerConfig,
    FlowMatchScheduler,
    FlowMatchSchedulerConfig,
    FlowMatchUniPCScheduler,
    FlowMatchUniPCSchedulerConfig,
    Scheduler,
)

diffusers = pytest.importorskip("diffusers")

SHAPE = (1, 4, 2, 3, 3)  # tiny [B, C, T, H, W] latent


class TanhFlow:
    """Deterministic, nonlinear flow predictor: a fixed random channel mix + tanh of x and t.

    Records the timesteps it was called with (value and dtype).
    """

    def __init__(self, channels: int = SHAPE[1], seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.mix = torch.randn(channels, channels, generator=g) / channels**0.5
        self.bias = torch.randn(channels, generator=g)
        self.calls: list[torch.Tensor] = []

    def __call__(self, x: torch.Tensor, t: torch.Tensor) -> torch.Tensor:
        self.calls.append(torch.as_tensor(t).clone())
        tf = torch.as_tensor(t).to(torch.float32) / 1000.0
        xf = x.to(torch.float32)
        mixed = torch.einsum("oc,bc...->bo...", self.mix, xf)
        bias = self.bias.view(1, -1, *([1] * (xf.ndim - 2)))
        v = torch.tanh(mixed + bias * tf) + 0.3 * xf * torch.cos(3.0 * tf)
        return v.to(x.dtype)


def _noise(seed: int = 123, dtype: torch.dtype = torch.float32) -> torch.Tensor:
    return torch.randn(SHAPE, generator=torch.Generator().manual_seed(seed)).to(dtype)


def _diffusers_unipc(shift: float, steps: int):
    sched = diffusers.UniPCMultistepScheduler(
        num_train_timesteps=1000,
        solver_order=2,
        prediction_type="flow_prediction",
        solver_type="bh2",
        lower_order_final=True,
        use_flow_sigmas=True,
        flow_shift=shift,
        final_sigmas_type="zero",
    )
    sched.set_timesteps(steps)
    return sched


def _diffusers_euler(shift: float, steps: int):
    sched = diffusers.FlowMatchEulerDiscreteScheduler(num_train_timesteps=1000, shift=shift)
    sched.set_timesteps(steps)
    return sched


def _run_diffusers(sched, noise: torch.Tensor, flow: TanhFlow) -> torch.Tensor:
    x = noise.clone()
    for t in sched.timesteps:
        x = sched.step(flow(x, t), t, x).prev_sample
    return x


# ---------------------------------------------------------------------------
# Schedules: reference numbers and diffusers' tables
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("shift", "expected"),
    [
        (3.0, [999, 964, 923, 875, 818, 750, 667, 563, 429, 251]),
        (5.0, [999, 978, 952, 921, 882, 833, 769, 682, 556, 359]),
    ],
)
def test_unipc_timesteps_reference_numbers(shift, expected):
    sched = FlowMatchUniPCSchedulerConfig(num_inference_steps=10, shift=shift).setup()
    assert sched.timesteps.dtype == torch.int64
    assert sched.timesteps.tolist() == expected
    assert sched.sigmas.dtype == torch.float32
    assert sched.sigmas.shape == (11,) and sched.sigmas[-1].item() == 0.0


def test_euler_sigmas_reference_numbers():
    sched = FlowMatchEulerSchedulerConfig(num_inference_steps=10, shift=3.0).setup()
    expected = [1, 0.960129, 0.913349, 0.857692, 0.790368, 0.707278, 0.602151, 0.464876, 0.278049, 0.008929, 0]
    assert sched.sigmas.dtype == torch.float32 and sched.timesteps.dtype == torch.float32
    torch.testing.assert_close(sched.sigmas, torch.tensor(expected), atol=1e-6, rtol=0)
    torch.testing.assert_close(sched.timesteps, sched.sigmas[:-1] * 1000, atol=0, rtol=0)


@pytest.mark.parametrize("shift", [1.0, 3.0, 5.0, 8.0])
@pytest.mark.parametrize("steps", [1, 2, 3, 7, 10, 30, 50])
def test_schedules_match_diffusers(shift, steps):
    ours = FlowMatchUniPCSchedulerConfig(num_inference_steps=steps, shift=shift).setup()
    ref = _diffusers_unipc(shift, steps)
    assert torch.equal(ours.timesteps, ref.timesteps)
    assert torch.equal(ours.sigmas, ref.sigmas.to(torch.float32))

    ours_e = FlowMatchEulerSchedulerConfig(num_inference_steps=steps, shift=shift).setup()
    ref_e = _diffusers_euler(shift, steps)
    torch.testing.assert_close(ours_e.sigmas, ref_e.sigmas, atol=1e-7, rtol=0)
    torch.testing.assert_close(ours_e.timesteps, ref_e.timesteps, atol=1e-4, rtol=0)


# ---------------------------------------------------------------------------
# Sample parity against diffusers
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(("shift", "steps"), [(1.0, 4), (3.0, 1), (3.0, 2), (3.0, 3), (3.0, 10), (5.0, 7), (5.0, 25)])
def test_unipc_sample_matches_diffusers(shift, steps):
    noise = _noise()
    ours_flow, ref_flow = TanhFlow(), TanhFlow()
    ours = FlowMatchUniPCSchedulerConfig(num_inference_steps=steps, shift=shift).setup()
    out = ours.sample(noise.clone(), ours_flow)
    ref = _run_diffusers(_diffusers_unipc(shift, steps), noise, ref_flow)
    assert out.dtype == torch.float32 and out.shape == noise.shape
    assert (out - ref).abs().max().item() <= 1e-6
    # Same timesteps handed to the predictor, as int64.
    assert len(ours_flow.calls) == steps
    assert all(t.dtype == torch.int64 and t.ndim == 0 for t in ours_flow.calls)
    assert [int(t) for t in ours_flow.calls] == [int(t) for t in ref_flow.calls]
    # The result really depends on the solver: a plain Euler run lands elsewhere (guards a vacuous pass).
    if steps >= 3:
        euler = FlowMatchEulerSchedulerConfig(num_inference_steps=steps, shift=shift).setup()
        assert (euler.sample(noise.clone(), TanhFlow()) - ref).abs().max().item() > 1e-3


@pytest.mark.parametrize(("shift", "steps"), [(1.0, 4), (3.0, 1), (3.0, 10), (5.0, 7), (5.0, 25)])
def test_euler_sample_matches_diffusers(shift, steps):
    noise = _noise(7)
    ours_flow, ref_flow = TanhFlow(seed=1), TanhFlow(seed=1)
    out = FlowMatchEulerSchedulerConfig(num_inference_steps=steps, shift=shift).setup().sample(noise.clone(), ours_flow)
    ref = _run_diffusers(_diffusers_euler(shift, steps), noise, ref_flow)
    assert (out - ref).abs().max().item() <= 1e-6
    assert all(t.dtype == torch.float32 for t in ours_flow.calls)
    torch.testing.assert_close(torch.stack(ours_flow.calls), torch.stack(ref_flow.calls), atol=1e-4, rtol=0)


def test_unipc_rng_is_ignored():
    sched = FlowMatchUniPCSchedulerConfig(num_inference_steps=5, shift=3.0).setup()
    a = sched.sample(_noise(), TanhFlow(), rng=torch.Generator().manual_seed(0))
    b = sched.sample(_noise(), TanhFlow(), rng=torch.Generator().manual_seed(1))
    assert torch.equal(a, b)


# ---------------------------------------------------------------------------
# FlowMatchScheduler (self-forcing renoise loop)
# ---------------------------------------------------------------------------


def _reference_table(shift: float, n_train: int = 1000) -> tuple[list[float], list[float]]:
    """Shifted training table with a trailing 0, written out from the formula in plain Python."""
    base = [1.0 - i / n_train for i in range(n_train)]  # linspace(1, 0, n_train + 1)[:-1]
    sig = [shift * s / (1 + (shift - 1) * s) for s in base] + [0.0]
    return sig, [s * n_train for s in sig]


def test_flow_match_schedule_warped_lookup():
    sched = FlowMatchSchedulerConfig().setup()
    sig, ts = _reference_table(8.0)
    want_t = [ts[1000 - t] for t in (1000, 750, 500, 250)]
    torch.testing.assert_close(sched.timesteps, torch.tensor(want_t), atol=1e-3, rtol=0)
    torch.testing.assert_close(sched.timesteps, torch.tensor([1000.0, 960.0, 8000 / 9, 8000 / 11]), atol=1e-3, rtol=0)
    torch.testing.assert_close(sched.sigmas[:-1], sched.timesteps / 1000, atol=1e-6, rtol=0)
    assert sched.sigmas[-1].item() == 0.0
    assert sched.train_sigmas.shape == (1001,) and sched.train_sigmas[-1].item() == 0.0

    # t = 0 maps to the appended 0 entry.
    zero = FlowMatchSchedulerConfig(num_inference_steps=2, denoising_timesteps=(1000, 0)).setup()
    assert zero.timesteps.tolist() == [1000.0, 0.0] and zero.sigmas.tolist() == [1.0, 0.0, 0.0]

    # Without warping the raw timesteps are handed over; sigma is the nearest table entry.
    raw = FlowMatchSchedulerConfig(warp_denoising_step=False).setup()
    assert raw.timesteps.tolist() == [1000.0, 750.0, 500.0, 250.0]
    for t, s in zip((1000, 750, 500, 250), raw.sigmas[:-1].tolist()):
        nearest = min(range(1001), key=lambda j: abs(ts[j] - t))
        assert s == pytest.approx(sig[nearest], abs=1e-6)

    # Integer timestep dtype truncates the warped values.
    ints = FlowMatchSchedulerConfig(timestep_dtype=torch.int64).setup()
    assert ints.timesteps.tolist() == [1000, 960, 888, 727]


@pytest.mark.parametrize(
    "kwargs",
    [
        {},
        {"num_inference_steps": 3, "denoising_timesteps": (1000, 600, 200), "shift": 5.0},
        {"num_inference_steps": 1, "denoising_timesteps": (1000,)},
        {"warp_denoising_step": False},
    ],
)
def test_flow_match_loop_matches_hand_written_reference(kwargs):
    cfg = FlowMatchSchedulerConfig(**kwargs)
    sched = cfg.setup()
    noise = _noise(5)
    out = sched.sample(noise.clone(), TanhFlow(seed=2), rng=torch.Generator().manual_seed(42))

    # Hand-written reference of x0 = x - s v; x = (1 - s') x0 + s' eps, with the same rng stream.
    sig, ts = _reference_table(cfg.shift)
    if cfg.warp_denoising_step:
        steps = [(ts[1000 - t], sig[1000 - t]) for t in cfg.denoising_timesteps]
    else:
        steps = [(float(t), sig[min(range(1001), key=lambda j: abs(ts[j] - t))]) for t in cfg.denoising_timesteps]
    flow, g = TanhFlow(seed=2), torch.Generator().manual_seed(42)
    x = noise.clone()
    for i, (t, s) in enumerate(steps):
        x0 = x - s * flow(x, torch.tensor(t, dtype=torch.float32))
        if i + 1 < len(steps):
            s_next = steps[i + 1][1]
            x = (1 - s_next) * x0 + s_next * torch.randn(x0.shape, generator=g)
    assert (out - x0).abs().max().item() <= 1e-5

    # The rng matters whenever there is a renoise step.
    other = sched.sample(noise.clone(), TanhFlow(seed=2), rng=torch.Generator().manual_seed(43))
    assert torch.equal(other, out) == (cfg.num_inference_steps == 1)


def test_flow_match_buffers_stay_fp32_after_to_bf16():
    sched = FlowMatchSchedulerConfig().setup().to(torch.bfloat16)
    for name in ("sigmas", "timesteps", "train_sigmas", "train_timesteps"):
        assert getattr(sched, name).dtype == torch.float32, name
    assert sched.timesteps[0].item() == 1000.0  # bf16 would still hold 1000, but not 960 / 888.89 / 727.27
    torch.testing.assert_close(sched.timesteps, torch.tensor([1000.0, 960.0, 8000 / 9, 8000 / 11]), atol=1e-3, rtol=0)

    flow = TanhFlow()
    out = sched.sample(_noise(dtype=torch.bfloat16), flow, rng=torch.Generator().manual_seed(0))
    assert out.dtype == torch.bfloat16
    assert flow.calls[0].dtype == torch.float32 and flow.calls[0].item() == 1000.0

    for cfg in (FlowMatchUniPCSchedulerConfig(num_inference_steps=4), FlowMatchEulerSchedulerConfig(num_inference_steps=4)):
        other = cfg.setup().to(torch.bfloat16)
        assert all(buf.dtype in (torch.float32, torch.int64) for buf in other.buffers())


def test_flow_match_add_noise():
    sched = FlowMatchSchedulerConfig().setup()
    clean = _noise(9)
    # sigma 0: identity, whatever the rng.
    assert torch.equal(sched.add_noise(clean, torch.tensor(0.0), rng=torch.Generator().manual_seed(0)), clean)
    # Top timestep: sigma 1, pure noise from the rng.
    top = sched.add_noise(clean, torch.tensor(1000.0), rng=torch.Generator().manual_seed(3))
    assert torch.equal(top, torch.randn(SHAPE, generator=torch.Generator().manual_seed(3)))
    # A near-top warped timestep is mostly noise.
    near = sched.add_noise(clean, torch.tensor(990.0), rng=torch.Generator().manual_seed(3))
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(3))
    assert torch.corrcoef(torch.stack([near.flatten(), eps.flatten()]))[0, 1] > 0.99
    # Snapping to the warped table (dense at the top, sparse at the bottom: w(0.001) * 1000 = 7.94,
    # w(0.002) * 1000 = 15.78); per-sample timesteps broadcast over the batch.
    batch = clean.repeat(3, 1, 1, 1, 1)
    out = sched.add_noise(batch, torch.tensor([960.05, 10.0, 0.0]), rng=torch.Generator().manual_seed(4))
    eps = torch.randn(batch.shape, generator=torch.Generator().manual_seed(4))
    torch.testing.assert_close(out[0], 0.04 * batch[0] + 0.96 * eps[0], atol=1e-5, rtol=0)
    s_low = 8 * 0.001 / (1 + 7 * 0.001)
    torch.testing.assert_close(out[1], (1 - s_low) * batch[1] + s_low * eps[1], atol=1e-6, rtol=0)
    assert torch.equal(out[2], batch[2])
    with pytest.raises(ValueError, match="prefix"):
        sched.add_noise(batch, torch.tensor([1.0, 2.0]))


def test_unipc_and_euler_add_noise_snap_to_inference_schedule():
    unipc = FlowMatchUniPCSchedulerConfig(num_inference_steps=10, shift=5.0).setup()
    clean = _noise(11)
    out = unipc.add_noise(clean, torch.tensor(950), rng=torch.Generator().manual_seed(8))  # nearest: 952
    s = unipc.sigmas[2]
    eps = torch.randn(SHAPE, generator=torch.Generator().manual_seed(8))
    assert 0.95 < s.item() < 0.953
    torch.testing.assert_close(out, (1 - s) * clean + s * eps, atol=1e-6, rtol=0)

    euler = FlowMatchEulerSchedulerConfig(num_inference_steps=10, shift=3.0).setup()
    assert torch.equal(euler.add_noise(clean, torch.tensor(0.0)), clean)
    out = euler.add_noise(clean, torch.tensor(700.0), rng=torch.Generator().manual_seed(8))  # nearest: 707.28
    s = euler.sigmas[5]
    torch.testing.assert_close(out, (1 - s) * clean + s * eps, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------
# Dtypes, configs, validation
# ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "cfg",
    [
        FlowMatchSchedulerConfig(),
        FlowMatchUniPCSchedulerConfig(num_inference_steps=4, shift=3.0),
        FlowMatchEulerSchedulerConfig(num_inference_steps=4, shift=3.0),
    ],
    ids=["flow_match", "unipc", "euler"],
)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16, torch.float32])
def test_output_dtype_equals_input_dtype(cfg, dtype):
    sched = cfg.setup()
    assert isinstance(sched, Scheduler)
    seen: list[torch.dtype] = []

    def flow(x, t):
        seen.append(x.dtype)
        return TanhFlow()(x, t)

    noise = _noise(dtype=dtype)
    out = sched.sample(noise, flow, rng=torch.Generator().manual_seed(0))
    assert out.dtype == dtype and out.shape == noise.shape and torch.isfinite(out.float()).all()
    assert set(seen) == {dtype}
    ref = cfg.setup().sample(noise.float(), TanhFlow(), rng=torch.Generator().manual_seed(0))
    assert (out.float() - ref).abs().max().item() < 0.1  # low precision, same trajectory
    assert sched.add_noise(noise, torch.tensor(500), rng=torch.Generator().manual_seed(0)).dtype == dtype


def test_configs_are_frozen_hashable_and_build_their_target():
    cfg = FlowMatchSchedulerConfig(denoising_timesteps=[1000, 500], num_inference_steps=2)
    assert cfg.denoising_timesteps == (1000, 500)
    hash(cfg)
    with pytest.raises(dataclasses.FrozenInstanceError):
        cfg.shift = 1.0  # type: ignore[misc]
    assert type(cfg.setup()) is FlowMatchScheduler
    assert type(FlowMatchUniPCSchedulerConfig().setup()) is FlowMatchUniPCScheduler
    assert type(FlowMatchEulerSchedulerConfig().setup()) is FlowMatchEulerScheduler
    for cls in (FlowMatchSchedulerConfig, FlowMatchUniPCSchedulerConfig, FlowMatchEulerSchedulerConfig):
        hash(cls())


@pytest.mark.parametrize(
    "cfg",
    [
        FlowMatchSchedulerConfig(timestep_dtype=torch.int64, shift=5.0),
        FlowMatchUniPCSchedulerConfig(num_inference_steps=12, shift=3.0),
        FlowMatchEulerSchedulerConfig(num_inference_steps=6),
    ],
    ids=["flow_match", "unipc", "euler"],
)
def test_configs_round_trip_through_dicts(cfg):
    from framestream.config.serialization import config_from_dict, config_to_dict

    back = config_from_dict(config_to_dict(cfg))
    assert back == cfg and type(back) is type(cfg)


def test_enable_tqdm_runs(capsys):
    sched = FlowMatchEulerSchedulerConfig(num_inference_steps=2, enable_tqdm=True).setup()
    sched.sample(_noise(), TanhFlow())
    assert "euler" in capsys.readouterr().err


@pytest.mark.parametrize(
    ("cls", "kwargs", "match"),
    [
        (FlowMatchSchedulerConfig, {"num_inference_steps": 3}, "must equal len"),
        (FlowMatchSchedulerConfig, {"num_inference_steps": 2, "denoising_timesteps": (1001, 500)}, "outside"),
        (FlowMatchSchedulerConfig, {"num_inference_steps": 2, "denoising_timesteps": (1000, -1)}, "outside"),
        (FlowMatchSchedulerConfig, {"num_inference_steps": 2, "denoising_timesteps": (1000, 2.5)}, "integers"),
        (FlowMatchSchedulerConfig, {"shift": 0.0}, "shift"),
        (FlowMatchSchedulerConfig, {"shift": -1.0}, "shift"),
        (FlowMatchSchedulerConfig, {"sigma_min": 0.5, "sigma_max": 0.4}, "sigma_min"),
        (FlowMatchUniPCSchedulerConfig, {"solver_order": 3}, "solver_order=2"),
        (FlowMatchUniPCSchedulerConfig, {"solver_order": 1}, "solver_order=2"),
        (FlowMatchUniPCSchedulerConfig, {"num_inference_steps": 0}, "num_inference_steps"),
        (FlowMatchUniPCSchedulerConfig, {"shift": 0.0}, "shift"),
        (FlowMatchEulerSchedulerConfig, {"num_inference_steps": 0}, "num_inference_steps"),
        (FlowMatchEulerSchedulerConfig, {"shift": -2.0}, "shift"),
    ],
)
def test_config_validation(cls, kwargs, match):
    with pytest.raises(ValueError, match=match):
        cls(**kwargs)
