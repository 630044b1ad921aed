"""Plain Euler ODE sampler for flow matching, matching diffusers ``FlowMatchEulerDiscreteScheduler``.

The diffusers schedule applies the shift twice: the training table is
``w(linspace(1, N_train, N_train)[::-1] / N_train)``; ``set_timesteps(N)`` then
spaces ``N`` points linearly between that table's first and last sigma and warps
them with ``w`` again. Timesteps are ``sigma * N_train`` (float) and a final sigma 0
is appended. A step is ``x + (sigma_next - sigma) * v`` in fp32.
"""

from __future__ import annotations

from dataclasses import field

import numpy as np
import torch

from framestream.config import config_dataclass
from framestream.diffusion.schedulers.base import (
    FlowPredictor,
    Scheduler,
    SchedulerConfig,
    lerp_noise,
    progress_steps,
    shift_sigmas,
    snap_sigma,
)

__all__ = ["FlowMatchEulerScheduler", "FlowMatchEulerSchedulerConfig"]


@config_dataclass
class FlowMatchEulerSchedulerConfig(SchedulerConfig):
    """Config for :class:`FlowMatchEulerScheduler`."""

    _target: type = field(default_factory=lambda: FlowMatchEulerScheduler)

    num_inference_steps: int = 50
    """Number of Euler steps (= flow-predictor evaluations)."""

    shift: float = 5.0
    """Flow-matching time-shift factor (applied twice, as diffusers does)."""

    num_train_timesteps: int = 1000
    """Length of the training sigma table; timesteps are ``sigma * num_train_timesteps``."""

    enable_tqdm: bool = False
    """Show a tqdm progress bar over the denoising steps."""

    def __post_init__(self) -> None:
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")


class FlowMatchEulerScheduler(Scheduler):
    """Deterministic Euler integration of the flow ODE from sigma=1 to sigma=0.

    Buffers: ``sigmas`` (fp32, ``N + 1`` entries ending in 0), ``timesteps``
    (fp32, ``N`` entries) and ``dt`` (fp32 ``sigma_{i+1} - sigma_i``).
    """

    config: FlowMatchEulerSchedulerConfig
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    dt: torch.Tensor

    def __init__(self, config: FlowMatchEulerSchedulerConfig) -> None:
        super().__init__(config)
        n_train = config.num_train_timesteps
        # Ends of the (already shifted) training table, evaluated in fp32 as diffusers stores it.
        ends = torch.tensor([float(n_train), 1.0], dtype=torch.float32) / n_train
        top, bottom = (float(v) for v in shift_sigmas(ends, config.shift))
        # Inference grid in float64 (numpy's linspace, as upstream), shifted a second time, stored as fp32.
        grid = torch.from_numpy(np.linspace(top * n_train, bottom * n_train, config.num_inference_steps).copy())
        sigmas = shift_sigmas(grid / n_train, config.shift).to(torch.float32)
        self.register_buffer("timesteps", sigmas * n_train)
        full = torch.cat([sigmas, sigmas.new_zeros(1)])
        self.register_buffer("sigmas", full)
        self.register_buffer("dt", full[1:] - full[:-1])

    @property
    def num_inference_steps(self) -> int:
        return self.config.num_inference_steps

    def sample(
        self,
        initial_noise: torch.Tensor,
        predict_flow: FlowPredictor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Euler-integrate from ``initial_noise``; ``rng`` is unused. State is fp32, output in the input dtype."""
        del rng
        dtype = initial_noise.dtype
        x = initial_noise.to(torch.float32)
        for i in progress_steps(self.config.num_inference_steps, self.config.enable_tqdm, "euler"):
            flow = predict_flow(x.to(dtype), self.timesteps[i])
            x = x + self.dt[i] * flow.to(torch.float32)
        return x.to(dtype)

    def add_noise(
        self,
        clean_input: torch.Tensor,
        timestep: torch.Tensor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt ``clean_input`` at the schedule entry nearest ``timestep``.

        The terminal entry (timestep 0, sigma 0) is included, so timestep 0 is the identity.
        """
        table_t = torch.cat([self.timesteps, self.timesteps.new_zeros(1)])
        sigma = snap_sigma(timestep, table_t, self.sigmas, clean_input)
        return lerp_noise(clean_input, sigma, rng)
