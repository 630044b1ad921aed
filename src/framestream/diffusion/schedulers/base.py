"""Scheduler interface: a scheduler owns the whole denoising loop.

Schedulers are shape-agnostic: every op broadcasts per-step scalar sigmas, so one
scheduler serves any latent layout. Schedule buffers stay fp32 whatever dtype the
module is moved to (integer timesteps such as 1000 are not representable in bf16).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import Protocol

import torch
import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass

__all__ = ["FlowPredictor", "Scheduler", "SchedulerConfig", "shift_sigmas"]


class FlowPredictor(Protocol):
    """Closure ``(noisy_latent, timestep) -> predicted_flow`` built per AR step."""

    def __call__(self, noisy_latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor: ...


def shift_sigmas(sigmas: torch.Tensor, shift: float) -> torch.Tensor:
    """Flow-matching time-shift warp ``w(s) = shift*s / (1 + (shift-1)*s)``."""
    return shift * sigmas / (1 + (shift - 1) * sigmas)


class Scheduler(ABC, nn.Module):
    """Denoising scheduler: ``sample(noise, predict_flow) -> clean``; ``add_noise`` for re-noising."""

    def __init__(self, config: "SchedulerConfig") -> None:
        super().__init__()
        self.config = config

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # Keep schedule buffers in fp32 through module.to(dtype): only move their device.
        saved = {name: buf.dtype for name, buf in self.named_buffers(recurse=False)}
        result = super()._apply(fn, recurse)
        for name, dtype in saved.items():
            buf = getattr(self, name)
            if buf is not None and buf.dtype != dtype:
                setattr(self, name, buf.to(dtype))
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
