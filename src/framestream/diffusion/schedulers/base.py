"""Scheduler interface: a scheduler owns the whole denoising loop.

Schedulers are shape-agnostic: every op broadcasts per-step scalar sigmas, so one
scheduler serves any latent layout. Schedule buffers keep their dtype and exact
values whatever dtype the module is moved to (bf16 would round warped timesteps
such as 888.89 to 888).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from collections.abc import Iterable
from typing import Protocol

import torch
import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass

__all__ = [
    "FlowPredictor",
    "Scheduler",
    "SchedulerConfig",
    "gaussian_like",
    "lerp_noise",
    "progress_steps",
    "shift_sigmas",
    "snap_sigma",
]


class FlowPredictor(Protocol):
    """Closure ``(noisy_latent, timestep) -> predicted_flow`` built per AR step."""

    def __call__(self, noisy_latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching time-shift warp ``w(s) = shift*s / (1 + (shift-1)*s)``."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


def progress_steps(num_steps: int, enabled: bool, desc: str) -> Iterable[int]:
    """``range(num_steps)``, wrapped in a tqdm bar when ``enabled``."""
    if not enabled:
        return range(num_steps)
    from tqdm.auto import tqdm

    return tqdm(range(num_steps), desc=desc, total=num_steps)


def gaussian_like(reference: torch.Tensor, rng: torch.Generator | None) -> torch.Tensor:
    """Standard normal fp32 noise with ``reference``'s shape and device, drawn from ``rng``."""
    return torch.randn(reference.shape, generator=rng, device=reference.device, dtype=torch.float32)


def snap_sigma(
    timestep: torch.Tensor | float | int,
    table_timesteps: torch.Tensor,
    table_sigmas: torch.Tensor,
    like: torch.Tensor,
) -> torch.Tensor:
    """Sigma of the table entry nearest ``timestep``, shaped to broadcast against ``like``.

    ``timestep`` may be a Python number, a 0-d tensor (one sigma for the whole
    tensor) or a tensor whose shape is a prefix of ``like.shape`` (per-sample /
    per-frame sigmas). The lookup is an on-device argmin: no host sync.
    """
    t = torch.as_tensor(timestep, device=table_timesteps.device).to(torch.float32)
    if t.ndim > like.ndim or tuple(like.shape[: t.ndim]) != tuple(t.shape):
        raise ValueError(
            f"timestep of shape {tuple(t.shape)} must be 0-d or a leading prefix of the input shape {tuple(like.shape)}"
        )
    distance = (t.unsqueeze(-1) - table_timesteps.to(torch.float32)).abs()
    sigma = table_sigmas[distance.argmin(dim=-1)]
    return sigma.reshape(tuple(t.shape) + (1,) * (like.ndim - t.ndim)).to(like.device)


def lerp_noise(
    clean_input: torch.Tensor, sigma: torch.Tensor, rng: torch.Generator | None
) -> torch.Tensor:
    """``(1 - sigma) x0 + sigma eps`` computed in fp32, returned in ``clean_input.dtype``."""
    eps = gaussian_like(clean_input, rng)
    noisy = (1 - sigma) * clean_input.to(torch.float32) + sigma * eps
    return noisy.to(clean_input.dtype)


class Scheduler(ABC, nn.Module):
    """Denoising scheduler: ``sample(noise, predict_flow) -> clean``; ``add_noise`` for re-noising."""

    def __init__(self, config: "SchedulerConfig") -> None:
        super().__init__()
        self.config = config

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # Schedule buffers survive module.to(dtype) bit for bit: keep the pre-cast tensors
        # and only move them to the device the transform chose (a cast-then-restore would
        # round warped timesteps such as 888.89 through bf16).
        originals = {name: buf for name, buf in self.named_buffers(recurse=False) if buf is not None}
        result = super()._apply(fn, recurse)
        for name, original in originals.items():
            setattr(self, name, original.to(getattr(self, name).device))
        return result

    @abstractmethod
    def sample(
        self,
        initial_noise: torch.Tensor,
        predict_flow: FlowPredictor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run the full denoising loop from ``initial_noise`` (sigma=1) and return the clean latent."""

    @abstractmethod
    def add_noise(
        self,
        clean_input: torch.Tensor,
        timestep: torch.Tensor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Forward corruption ``x_t = (1 - sigma(t)) x0 + sigma(t) eps`` at the schedule entry nearest ``timestep``."""


@config_dataclass
class SchedulerConfig(InstantiateConfig):
    """Category base of scheduler configs (concrete configs declare their own fields)."""

    _target: type = field(default_factory=lambda: Scheduler)
