"""Self-forcing flow-matching scheduler (DiffSynth / Self-Forcing / CausVid style).

Each denoising step turns the predicted flow into a clean estimate
``x0 = x_t - sigma * v`` and, unless it is the last step, re-noises that estimate
to the next step's sigma with fresh Gaussian noise: ``x_t = (1 - s') x0 + s' eps``.
The last ``x0`` is the result.

The few-step timestep list (e.g. ``1000, 750, 500, 250``) is given on the
unwarped 0..1000 scale; with ``warp_denoising_step`` each entry ``t`` is looked up
in the shifted training table at index ``num_train_timesteps - t`` (the table gets
a trailing 0, so ``t = 0`` maps to sigma 0), exactly as the Self-Forcing pipeline
does it.
"""

from __future__ import annotations

from dataclasses import field
import torch

from framestream.config import config_dataclass
from framestream.diffusion.schedulers.base import (
    FlowPredictor,
    Scheduler,
    SchedulerConfig,
    gaussian_like,
    lerp_noise,
    progress_steps,
    shift_sigmas,
    snap_sigma,
)

__all__ = ["FlowMatchScheduler", "FlowMatchSchedulerConfig"]


# ---------------------------------------------------------------------------
# Self-forcing flow-match scheduler.
# ---------------------------------------------------------------------------


@config_dataclass
class FlowMatchSchedulerConfig(SchedulerConfig):
    """Config for :class:`FlowMatchScheduler` (few-step self-forcing renoise loop)."""

    _target: type = field(default_factory=lambda: FlowMatchScheduler)

    num_inference_steps: int = 4
    """Number of denoising steps; must equal ``len(denoising_timesteps)``."""

    shift: float = 8.0
    """Flow-matching time-shift factor applied to the training sigma table."""

    denoising_timesteps: tuple[int, ...] = (1000, 750, 500, 250)
    """Per-step timesteps on the unwarped ``[0, num_train_timesteps]`` scale, highest first."""

    warp_denoising_step: bool = True
    """Map each denoising timestep ``t`` to ``table[num_train_timesteps - t]`` of the shifted table."""

    num_train_timesteps: int = 1000
    """Number of entries of the training sigma table (before the appended 0)."""

    sigma_max: float = 1.0
    """Top of the linspace before shifting (1.0 as in DiffSynth; upstream Wan uses 0.999)."""

    sigma_min: float = 0.0
    """Bottom of the linspace before shifting (only 0.0 is exercised)."""

    extra_one_step: bool = True
    """Build the table from ``linspace(max, min, N + 1)[:-1]`` (Wan / DiffSynth) rather than N points."""

    timestep_dtype: torch.dtype = torch.float32
    """Dtype of the timesteps handed to the flow predictor (``torch.int64`` truncates the warped values)."""

    enable_tqdm: bool = False
    """Show a tqdm progress bar over the denoising steps."""

    def __post_init__(self) -> None:
        if isinstance(self.denoising_timesteps, list):
            object.__setattr__(self, "denoising_timesteps", tuple(self.denoising_timesteps))
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.num_inference_steps != len(self.denoising_timesteps):
            raise ValueError(
                f"num_inference_steps ({self.num_inference_steps}) must equal "
                f"len(denoising_timesteps) ({len(self.denoising_timesteps)}): {self.denoising_timesteps}"
            )
        for t in self.denoising_timesteps:
            if isinstance(t, bool) or not isinstance(t, int):
                raise ValueError(f"denoising_timesteps must be integers, got {t!r} in {self.denoising_timesteps}")
            if not 0 <= t <= self.num_train_timesteps:
                raise ValueError(
                    f"denoising timestep {t} is outside [0, num_train_timesteps={self.num_train_timesteps}]"
                )
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")
        if not 0.0 <= self.sigma_min <= self.sigma_max <= 1.0:
            raise ValueError(
                f"need 0 <= sigma_min <= sigma_max <= 1, got sigma_min={self.sigma_min}, sigma_max={self.sigma_max}"
            )


class FlowMatchScheduler(Scheduler):
    """Flow-matching scheduler with self-forcing renoise (DiffSynth style).

    Buffers (fp32 whatever ``.to(dtype)`` the module gets):

    * ``train_sigmas`` / ``train_timesteps``: the shifted training table with a
      trailing 0 appended (``num_train_timesteps + 1`` entries);
    * ``sigmas``: per-step sigmas plus a trailing 0 (``num_inference_steps + 1``);
    * ``timesteps``: per-step timesteps handed to the predictor, in ``timestep_dtype``.
    """

    config: FlowMatchSchedulerConfig
    sigmas: torch.Tensor
    timesteps: torch.Tensor
    train_sigmas: torch.Tensor
    train_timesteps: torch.Tensor

    def __init__(self, config: FlowMatchSchedulerConfig) -> None:
        super().__init__(config)
        n_train = config.num_train_timesteps

        # Training table in float64, stored as fp32.
        if config.extra_one_step:
            base = torch.linspace(config.sigma_max, config.sigma_min, n_train + 1, dtype=torch.float64)[:-1]
        else:
            base = torch.linspace(config.sigma_max, config.sigma_min, n_train, dtype=torch.float64)
        table_sigmas = torch.cat([shift_sigmas(base, config.shift), base.new_zeros(1)])
        table_timesteps = table_sigmas * n_train

        requested = torch.tensor(config.denoising_timesteps, dtype=torch.int64)
        if config.warp_denoising_step:
            index = n_train - requested
        else:
            # Raw timesteps; their sigma is the nearest entry of the table.
            index = (requested.to(torch.float64)[:, None] - table_timesteps[None, :]).abs().argmin(dim=1)
        step_sigmas = table_sigmas[index]
        step_timesteps = table_timesteps[index] if config.warp_denoising_step else requested.to(torch.float64)

        self.register_buffer("train_sigmas", table_sigmas.to(torch.float32))
        self.register_buffer("train_timesteps", table_timesteps.to(torch.float32))
        self.register_buffer("sigmas", torch.cat([step_sigmas, step_sigmas.new_zeros(1)]).to(torch.float32))
        self.register_buffer("timesteps", step_timesteps.to(torch.float32).to(config.timestep_dtype))

    @property
    def num_inference_steps(self) -> int:
        return self.config.num_inference_steps

    def sample(
        self,
        initial_noise: torch.Tensor,
        predict_flow: FlowPredictor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Run the renoise loop from ``initial_noise`` (sigma=1) and return the last ``x0``.

        Schedule arithmetic runs in fp32; the predictor sees the latent in
        ``initial_noise.dtype`` and a 0-d timestep in ``timestep_dtype``. ``rng``
        draws the re-noising noise (``num_inference_steps - 1`` draws).
        """
        dtype = initial_noise.dtype
        steps = self.config.num_inference_steps
        x_t = initial_noise.to(torch.float32)
        x0 = x_t
        for i in progress_steps(steps, self.config.enable_tqdm, "flow-match"):
            flow = predict_flow(x_t.to(dtype), self.timesteps[i])
            x0 = x_t - self.sigmas[i] * flow.to(torch.float32)
            if i < steps - 1:
                sigma_next = self.sigmas[i + 1]
                x_t = (1 - sigma_next) * x0 + sigma_next * gaussian_like(x0, rng)
        return x0.to(dtype)

    def add_noise(
        self,
        clean_input: torch.Tensor,
        timestep: torch.Tensor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt ``clean_input`` at the entry of the warped training table nearest ``timestep``.

        ``timestep`` is on the warped scale (``train_timesteps``: 1000 → sigma 1,
        0 → sigma 0, i.e. identity); 0-d or a leading prefix of the input shape.
        """
        sigma = snap_sigma(timestep, self.train_timesteps, self.train_sigmas, clean_input)
        return lerp_noise(clean_input, sigma, rng)
