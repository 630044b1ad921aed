"""Order-2 UniPC predictor-corrector specialised to flow matching (Wan 2.1 default sampler).

Equivalent to diffusers ``UniPCMultistepScheduler(prediction_type="flow_prediction",
use_flow_sigmas=True, solver_order=2, solver_type="bh2", lower_order_final=True,
final_sigmas_type="zero")``, but every per-step scalar (sigma ratios, exp-integrator
weights, corrector weights) is computed once at construction into fp32 buffers,
so :meth:`FlowMatchUniPCScheduler.sample` is straight tensor arithmetic.

Notation (data-prediction UniPC with ``alpha = 1 - sigma``): for step ``i`` the
log-SNR is ``lambda_i = log(alpha_i) - log(sigma_i)`` and ``h_i = lambda_{i+1} -
lambda_i``. With ``hh = -h``, ``phi = expm1(hh)`` and (B(h) variant 2) ``B = expm1(hh)``,
the predictor from ``x_i`` and the data estimate ``m_i = x_i - sigma_i v_i`` is::

    x_{i+1} = (sigma_{i+1}/sigma_i) x_i - alpha_{i+1} phi m_i - alpha_{i+1} B * 0.5 * D_i
    D_i     = (m_{i-1} - m_i) / r_i,   r_i = (lambda_{i-1} - lambda_i) / h_i

(the ``D_i`` term only at order 2). The corrector at step ``i`` re-does step
``i-1`` with the fresh estimate ``m_i`` included, weights from solving the 2x2
Vandermonde system ``[[1, 1], [r, 1]] rho = (b1, b2)`` (order 1: ``rho = 0.5``).
Orders follow diffusers: 1 at the first step, 1 at the last (``lower_order_final``),
2 in between.
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

__all__ = ["FlowMatchUniPCScheduler", "FlowMatchUniPCSchedulerConfig"]


@config_dataclass
class FlowMatchUniPCSchedulerConfig(SchedulerConfig):
    """Config for :class:`FlowMatchUniPCScheduler` (defaults: official Wan 2.1 sampler, shift 5)."""

    _target: type = field(default_factory=lambda: FlowMatchUniPCScheduler)

    num_inference_steps: int = 50
    """Number of UniPC steps (= flow-predictor evaluations)."""

    shift: float = 5.0
    """Flow-matching time-shift factor (Wan recommends 3.0 at 480p, 5.0 at 720p)."""

    num_train_timesteps: int = 1000
    """Training timestep count: timesteps are ``int(sigma * num_train_timesteps)``."""

    solver_order: int = 2
    """UniPC order; only 2 is supported."""

    enable_tqdm: bool = False
    """Show a tqdm progress bar over the denoising steps."""

    def __post_init__(self) -> None:
        if self.solver_order != 2:
            raise ValueError(f"FlowMatchUniPCScheduler only supports solver_order=2, got {self.solver_order}")
        if self.num_inference_steps < 1:
            raise ValueError(f"num_inference_steps must be >= 1, got {self.num_inference_steps}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        if not self.shift > 0:
            raise ValueError(f"shift must be > 0, got {self.shift}")


class FlowMatchUniPCScheduler(Scheduler):
    """Order-2 UniPC (bh2) predictor-corrector for flow prediction, with pre-baked coefficients.

    Buffers: ``sigmas`` (fp32, ``N + 1`` entries ending in 0), ``timesteps``
    (int64, ``N`` entries) and the per-step coefficient tables (fp32), which all
    keep their dtype through ``module.to(dtype)``.
    """

    config: FlowMatchUniPCSchedulerConfig
    sigmas: torch.Tensor
    timesteps: torch.Tensor

    def __init__(self, config: FlowMatchUniPCSchedulerConfig) -> None:
        super().__init__(config)
        n = config.num_inference_steps
        n_train = config.num_train_timesteps

        # Schedule: shifted linspace in float64 with the top pulled just below 1 (log(alpha) must stay finite).
        # numpy's linspace, not torch's: the int64 truncation below is sensitive to the last ulp
        # (torch gives 0.334 where numpy gives 0.33399999..., i.e. timestep 334 instead of 333).
        grid = torch.from_numpy(np.linspace(1.0, 1.0 / n_train, n + 1, dtype=np.float64)[:-1].copy())
        s64 = shift_sigmas(grid, config.shift)
        if abs(s64[0].item() - 1.0) < 1e-6:
            s64[0] -= 1e-6
        timesteps = (s64 * n_train).to(torch.int64)  # truncation, as upstream
        sigmas = torch.cat([s64, s64.new_zeros(1)]).to(torch.float32)

        # Per-step scalars, in fp32 like the reference implementation (the final sigma 0 gives
        # lambda = +inf, h = +inf, expm1(-inf) = -1: the last step returns m_{N-1}, no NaN).
        alphas = 1 - sigmas
        lambdas = torch.log(alphas) - torch.log(sigmas)
        h = lambdas[1:] - lambdas[:-1]  # (n,)
        hh = -h
        phi = torch.expm1(hh)
        b_h = torch.expm1(hh)
        b1 = (phi / hh - 1) / b_h
        b2 = ((phi / hh - 1) / hh - 0.5) * 2 / b_h
        # r_i = (lambda_{i-1} - lambda_i) / h_i (only meaningful for i >= 1; 1.0 placeholder at i = 0).
        ratio = torch.ones(n, dtype=torch.float32)
        if n > 1:
            ratio[1:] = (lambdas[:-2] - lambdas[1:-1]) / h[1:]

        # Orders: warm-up order 1 at step 0, lower_order_final order 1 at the last step.
        order = torch.full((n,), 2, dtype=torch.int64)
        order[0] = 1
        order[-1] = 1

        # Corrector weights for the step that ends at sigma_i, i.e. predictor step i-1
        # (index k = i-1 here). Order 1: rho = 0.5 on the new estimate only.
        # Order 2: solve [[1, 1], [r_k, 1]] (rho0, rho1) = (b1_k, b2_k).
        rho_hist = torch.zeros(n, dtype=torch.float32)
        rho_new = torch.full((n,), 0.5, dtype=torch.float32)
        two = order == 2
        if bool(two.any()):
            mats = torch.ones(int(two.sum()), 2, 2, dtype=torch.float32)
            mats[:, 1, 0] = ratio[two]
            rhs = torch.stack([b1[two], b2[two]], dim=-1)
            rho = torch.linalg.solve(mats, rhs)
            rho_hist[two] = rho[:, 0]
            rho_new[two] = rho[:, 1]

        self.register_buffer("sigmas", sigmas)
        self.register_buffer("timesteps", timesteps)
        # x_{i+1} = coef_x[i] * x_i - coef_m[i] * m_i - coef_b[i] * (history term)
        self.register_buffer("coef_x", sigmas[1:] / sigmas[:-1])
        self.register_buffer("coef_m", alphas[1:] * phi)
        self.register_buffer("coef_b", alphas[1:] * b_h)
        self.register_buffer("ratio", ratio)
        self.register_buffer("rho_hist", rho_hist)
        self.register_buffer("rho_new", rho_new)
        self._orders: tuple[int, ...] = tuple(int(o) for o in order)

    @property
    def num_inference_steps(self) -> int:
        return self.config.num_inference_steps

    def sample(
        self,
        initial_noise: torch.Tensor,
        predict_flow: FlowPredictor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Integrate from ``initial_noise`` (sigma=1) to sigma=0; ``rng`` is unused (deterministic ODE).

        The state is kept in fp32; the predictor sees it in ``initial_noise.dtype``
        with a 0-d int64 timestep.
        """
        del rng
        dtype = initial_noise.dtype
        steps = self.config.num_inference_steps
        x = initial_noise.to(torch.float32)
        prev_x: torch.Tensor | None = None  # corrected sample the previous predictor started from
        m_prev: torch.Tensor | None = None  # m_{i-1}
        m_prev2: torch.Tensor | None = None  # m_{i-2}
        for i in progress_steps(steps, self.config.enable_tqdm, "unipc"):
            flow = predict_flow(x.to(dtype), self.timesteps[i])
            m = x - self.sigmas[i] * flow.to(torch.float32)

            if i > 0:  # corrector: redo step i-1 with m_i included
                k = i - 1
                assert prev_x is not None and m_prev is not None
                base = self.coef_x[k] * prev_x - self.coef_m[k] * m_prev
                correction = self.rho_new[k] * (m - m_prev)
                if self._orders[k] == 2:
                    assert m_prev2 is not None
                    correction = self.rho_hist[k] * ((m_prev2 - m_prev) / self.ratio[k]) + correction
                x = base - self.coef_b[k] * correction

            # predictor: step i -> i+1
            prev_x = x
            x_next = self.coef_x[i] * x - self.coef_m[i] * m
            if self._orders[i] == 2:
                assert m_prev is not None
                x_next = x_next - self.coef_b[i] * (0.5 * ((m_prev - m) / self.ratio[i]))
            m_prev2, m_prev = m_prev, m
            x = x_next
        return x.to(dtype)

    def add_noise(
        self,
        clean_input: torch.Tensor,
        timestep: torch.Tensor,
        rng: torch.Generator | None = None,
    ) -> torch.Tensor:
        """Corrupt ``clean_input`` at the inference-schedule entry nearest ``timestep`` (int scale 0..999).

        The schedule has no t=0 entry: timestep 0 snaps to the last step's sigma.
        """
        sigma = snap_sigma(timestep, self.timesteps, self.sigmas[:-1], clean_input)
        return lerp_noise(clean_input, sigma, rng)
