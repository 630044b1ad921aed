"""One steerable stream: a pipeline rollout whose prompt can change between AR blocks.

Steering method ("re-cache", as LongLive does it, applied to the whole kept history):
text conditions every layer of the models we serve (Wan through cross-attention, the
demo DiT through adaLN), so the self-attention K/V cached for earlier blocks were
computed under the old prompt. Swapping only the text conditioning would leave the next
block attending to that stale context. On a prompt change, :class:`SteerableRollout`
therefore builds a fresh transformer cache under the new prompt and replays the
finalize pass (``DiffusionModel.finalize``, the same code path a normal step uses) for
every block generated so far, from its kept clean latent. Afterwards the cache is exactly
the one a rollout under the new prompt would hold had it produced the same frames, and the
next block is denoised against it. Earlier frames are never regenerated, so nothing already
shown changes.

Cost: one finalize forward per kept block (about one denoising step each), paid once per
prompt change; the kept history is bounded by the session's block limit. Clean latents
are small (a latent block, not pixels).

Randomness: the served pipeline draws from torch's global RNG (``diffusion_model.seed``
None); each rollout keeps its own RNG state and swaps it in around its own work, so
interleaving sessions on one worker never changes any session's video.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import torch

from framestream.diffusion.model import FinalState
from framestream.pipeline import StreamInferencePipeline

__all__ = ["KeptBlock", "SteerableRollout"]

ContextBuilder = Callable[[str], dict[str, Any]]
"""Prompt -> ``transformer_context`` keyword arguments of ``initialize_cache``."""


@dataclass(frozen=True)
class KeptBlock:
    """What re-caching needs of one generated block."""

    autoregressive_index: int
    clean_latent: torch.Tensor
    """Patchified clean latent, as ``FinalState.clean_latent``."""
    input: Any = None
    """Patchified encoder output of the step (None for text-to-video)."""


class SteerableRollout:
    """Generate AR blocks one by one for one viewer, with prompt changes between blocks.

    Args:
        pipeline: A built pipeline without a per-step encoder; may be shared by many rollouts.
        context_builder: Turns a prompt into the transformer context for ``initialize_cache``.
        prompt: Initial prompt.
        seed: Seed of this rollout's noise.
    """

    def __init__(self, pipeline: StreamInferencePipeline, context_builder: ContextBuilder, prompt: str, seed: int) -> None:
        if pipeline.encoder is not None:
            raise ValueError("steerable rollouts need a text-to-video pipeline (no per-step encoder)")
        self.pipeline = pipeline
        self.context_builder = context_builder
        self.prompt = prompt
        self._pending_prompt: str | None = None
        self._history: list[KeptBlock] = []
        device = pipeline.device
        self._cpu_rng = torch.Generator().manual_seed(seed).get_state()
        self._cuda_rng: torch.Tensor | None = None
        self._cuda_device = device if device.type == "cuda" else None
        if self._cuda_device is not None:
            self._cuda_rng = torch.Generator(device=self._cuda_device).manual_seed(seed).get_state()
        with self._own_rng():
            self.cache = pipeline.initialize_cache(transformer_context=context_builder(prompt))

    @property
    def blocks_done(self) -> int:
        """Blocks generated so far."""
        return len(self._history)

    def set_prompt(self, prompt: str) -> None:
        """Switch to ``prompt`` from the next block on (the last call before a block wins)."""
        self._pending_prompt = None if prompt == self.prompt else prompt

    @contextlib.contextmanager
    def _own_rng(self) -> Iterator[None]:
        """Run with this rollout's RNG state as torch's global state, then put the caller's back."""
        saved_cpu = torch.get_rng_state()
        saved_cuda = torch.cuda.get_rng_state(self._cuda_device) if self._cuda_device is not None else None
        torch.set_rng_state(self._cpu_rng)
        if self._cuda_device is not None:
            torch.cuda.set_rng_state(self._cuda_rng, self._cuda_device)
        try:
            yield
        finally:
            self._cpu_rng = torch.get_rng_state()
            torch.set_rng_state(saved_cpu)
            if self._cuda_device is not None:
                self._cuda_rng = torch.cuda.get_rng_state(self._cuda_device)
                torch.cuda.set_rng_state(saved_cuda, self._cuda_device)

    @torch.no_grad()
    def _recache(self, prompt: str) -> None:
        """Rebuild the transformer cache under ``prompt`` from the kept clean latents (see module doc)."""
        model = self.pipeline.diffusion_model
        fresh = model.transformer.initialize_autoregressive_cache(**self.context_builder(prompt))
        for block in self._history:
            fresh.start(block.autoregressive_index)
            model.finalize(
                FinalState(
                    clean_latent=block.clean_latent,
                    autoregressive_index=block.autoregressive_index,
                    cache=fresh,
                    input=block.input,
                )
            )
        self.cache.transformer_cache = fresh
        self.cache.final_state = None  # the last block was just finalized under the new prompt
        self.prompt = prompt

    def next_block(self) -> torch.Tensor:
        """Generate the next block and return its decoded frames (as the pipeline returns them).

        The previous block's cache update runs here, not right after it was generated, so
        its frames reach the viewer one finalize pass earlier.
        """
        with self._own_rng():
            pending, self._pending_prompt = self._pending_prompt, None
            if pending is not None:
                self._recache(pending)
            elif self.cache.pending_finalize:
                self.pipeline.finalize(self.cache.autoregressive_index, self.cache)
            index = self.cache.next_autoregressive_index
            frames = self.pipeline.generate(index, self.cache)
            state = self.cache.final_state
            assert state is not None
            self._history.append(KeptBlock(autoregressive_index=index, clean_latent=state.clean_latent, input=state.input))
        return frames

    def close(self) -> None:
        """Drop every tensor this rollout holds (caches and history) right away."""
        self._history.clear()
        self.cache = None  # type: ignore[assignment]
