"""Autoregressive diffusion model: a flow-prediction transformer driven by a scheduler.

Callers see only ``noise -> clean latent`` per AR step; the per-step flow prediction
and the denoising loop stay inside :meth:`DiffusionModel.generate`. After a step,
:meth:`DiffusionModel.finalize` advances the transformer's AR cache with the clean
latent (optionally re-noised to ``context_noise``).

Example::

    model = config.setup().to("cuda")
    cache = model.transformer.initialize_autoregressive_cache()
    clean, final_state = model.generate(autoregressive_index=0, cache=cache)
    model.finalize(final_state)
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Generic, TypeVar

import torch
import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass
from framestream.diffusion.schedulers.base import Scheduler, SchedulerConfig
from framestream.diffusion.transformer import (
    Transformer,
    TransformerAutoregressiveCache,
    TransformerCacheT,
    TransformerConfig,
)

__all__ = ["DiffusionModel", "DiffusionModelConfig", "FinalState"]

_FinalStateCacheT = TypeVar("_FinalStateCacheT", bound=TransformerAutoregressiveCache)


@dataclass(kw_only=True)
class FinalState(Generic[_FinalStateCacheT]):
    """State handed from :meth:`DiffusionModel.generate` to :meth:`DiffusionModel.finalize`."""

    clean_latent: torch.Tensor
    """Patchified clean latent at the end of denoising (after ``postprocess_clean_latent``)."""
    autoregressive_index: int
    """AR step this state was produced at."""
    cache: _FinalStateCacheT
    """Long-lived AR cache used during generation (finalize advances it)."""
    input: Any = None
    """Patchified per-AR-step encoder output, or None."""


@config_dataclass
class DiffusionModelConfig(InstantiateConfig):
    """Config of :class:`DiffusionModel` (transformer + scheduler)."""

    _target: type = field(default_factory=lambda: DiffusionModel)
    transformer: TransformerConfig
    """Flow-prediction network config."""
    scheduler: SchedulerConfig
    """Denoising-loop config."""
    seed: int | None = None
    """Seed of the model's own RNG (initial noise, scheduler renoise); None uses torch's global RNG."""
    context_noise: int = 0
    """Timestep at which ``finalize`` feeds the clean latent to the AR cache update; 0 skips ``add_noise``."""
    noise_in_unpatchified_shape: bool = False
    """Debug only: draw noise in the unpatchified shape, then patchify (to match another implementation's RNG stream)."""


class DiffusionModel(nn.Module, Generic[TransformerCacheT]):
    """Autoregressive diffusion model (scheduler + transformer), generic over the AR cache type.

    Noise is drawn on the model's device in the model's dtype (those of the
    transformer's first floating-point parameter). With ``config.seed`` set, every draw
    comes from :attr:`rng`, so two models with the same seed, device and dtype produce
    identical rollouts.
    """

    def __init__(self, config: DiffusionModelConfig) -> None:
        super().__init__()
        if config.context_noise < 0:
            raise ValueError(f"context_noise must be >= 0, got {config.context_noise}")
        self.config = config
        self.transformer: Transformer[TransformerCacheT] = config.transformer.setup()
        self.scheduler: Scheduler = config.scheduler.setup()
        if not isinstance(self.transformer, Transformer):
            raise TypeError(f"diffusion_model.transformer must build a Transformer, got {type(self.transformer).__name__}")
        if not isinstance(self.scheduler, Scheduler):
            raise TypeError(f"diffusion_model.scheduler must build a Scheduler, got {type(self.scheduler).__name__}")
        self._rng: torch.Generator | None = None
        self._rng_key: tuple[torch.device, torch.dtype] | None = None

    # ------------------------------------------------------------------ placement
    def _reference_tensor(self) -> torch.Tensor | None:
        return self.transformer.placement_tensor()

    @property
    def device(self) -> torch.device:
        """Device of the transformer's weights (CPU for a weightless transformer)."""
        ref = self._reference_tensor()
        return ref.device if ref is not None else torch.device("cpu")

    @property
    def dtype(self) -> torch.dtype:
        """Dtype of the transformer's weights; noise is drawn in it."""
        ref = self._reference_tensor()
        return ref.dtype if ref is not None else torch.get_default_dtype()

    @property
    def rng(self) -> torch.Generator | None:
        """Per-model generator seeded from ``config.seed``, lazily built on the model's device.

        None when ``config.seed`` is None (draws then use torch's global RNG). The
        generator is rebuilt, and its stream restarts from the seed, the first time it is
        used after the model moved to another device or dtype: fine for "build on CPU,
        move once", but a mid-rollout move loses the RNG position.
        """
        if self.config.seed is None:
            return None
        key = (self.device, self.dtype)
        if self._rng is None or self._rng_key != key:
            generator = torch.Generator(device=key[0])
            generator.manual_seed(self.config.seed)
            self._rng, self._rng_key = generator, key
        return self._rng

    # ------------------------------------------------------------------ generation
    def _initial_noise(self) -> torch.Tensor:
        transformer = self.transformer
        rng, device, dtype = self.rng, self.device, self.dtype
        shape = tuple(transformer.latent_shape)
        if not self.config.noise_in_unpatchified_shape:
            return torch.randn(shape, generator=rng, device=device, dtype=dtype)
        # The interface only exposes the patchified shape; unpatchify a placeholder to learn the other one.
        unpatchified_shape = transformer.unpatchify_and_maybe_gather_cp(torch.empty(shape, device=device, dtype=dtype)).shape
        noise = torch.randn(unpatchified_shape, generator=rng, device=device, dtype=dtype)
        return transformer.patchify_and_maybe_split_cp(noise)

    def generate(
        self,
        autoregressive_index: int,
        cache: TransformerCacheT,
        input: Any = None,  # noqa: A002 - documented argument name
    ) -> tuple[torch.Tensor, FinalState[TransformerCacheT]]:
        """Run the denoising loop for one AR step.

        Args:
            autoregressive_index: AR step index.
            cache: Long-lived AR cache, mutated in place.
            input: Optional per-AR-step encoder output. Patchified here, forwarded to
                ``predict_flow`` / ``postprocess_clean_latent`` and kept on the returned
                :class:`FinalState` for :meth:`finalize`.

        Returns:
            ``(clean_latent, final_state)``: the clean latent is unpatchified; pass
            ``final_state`` to :meth:`finalize`.
        """
        transformer = self.transformer
        noise = self._initial_noise()
        patched_input = transformer.patchify_and_maybe_split_cp(input) if input is not None else None
        cache.start(autoregressive_index)

        def predict_flow(noisy_latent: torch.Tensor, timestep: torch.Tensor) -> torch.Tensor:
            return transformer.predict_flow(noisy_latent, timestep, cache, patched_input)

        clean = self.scheduler.sample(noise, predict_flow, rng=self.rng)
        clean = transformer.postprocess_clean_latent(clean, cache, patched_input)
        final_state = FinalState(
            clean_latent=clean,
            autoregressive_index=autoregressive_index,
            cache=cache,
            input=patched_input,
        )
        return transformer.unpatchify_and_maybe_gather_cp(clean), final_state

    def finalize(self, final_state: FinalState[TransformerCacheT]) -> None:
        """Advance the AR cache with the clean latent from :meth:`generate`.

        The clean latent is re-noised to ``config.context_noise`` and passed through the
        transformer's ``finalize_kv_cache``; then ``cache.finalize(index)`` runs.
        ``context_noise == 0`` skips ``add_noise`` (sigma 0 is the identity) and feeds
        the clean latent directly, so schedulers without a t=0 entry work too.
        """
        clean = final_state.clean_latent
        context_noise = self.config.context_noise
        timestep = torch.full((), float(context_noise), device=clean.device, dtype=torch.float32)
        if context_noise == 0:
            noisy = clean
        else:
            noisy = self.scheduler.add_noise(clean, timestep, rng=self.rng)
        self.transformer.finalize_kv_cache(noisy, timestep, final_state.cache, final_state.input)
        final_state.cache.finalize(final_state.autoregressive_index)
