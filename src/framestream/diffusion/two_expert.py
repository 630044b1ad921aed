"""Two-expert denoising (Wan 2.2 A14B): a high-noise transformer above a timestep boundary, a low-noise one below.

Wan 2.2 A14B splits the denoising trajectory between two separately trained DiTs of the
same architecture: the high-noise expert handles every step whose timestep ``t`` satisfies
``t >= boundary * num_train_timesteps``, the low-noise expert the rest (the rule of the
original code and of diffusers' ``boundary_ratio``). Published boundaries: 0.875 for
T2V-A14B, 0.900 for I2V-A14B (:data:`WAN22_T2V_A14B_BOUNDARY`, :data:`WAN22_I2V_A14B_BOUNDARY`).

:class:`TwoExpertTransformer` is an ordinary
:class:`~framestream.diffusion.transformer.Transformer`, so the diffusion model, the
schedulers and the pipeline need no change: it picks the expert per ``predict_flow``
call. Each expert keeps its own per-rollout cache (text keys / values are computed with
each expert's own cross-attention weights) inside a :class:`TwoExpertCache`; each
expert's config carries its own guidance scale (A14B publishes one per expert).

Placement: with ``offload_inactive`` (the default) only the active expert's weights are
on the execution device; the other waits on ``offload_device`` (CPU) and the two swap
when the schedule crosses the boundary (once per rollout for a monotone schedule, plus
once at the start of the next rollout). ``module.to(device)`` moves only the active
expert; dtype casts apply to both. With ``offload_inactive=False`` both stay on the
device and nothing moves.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any, Literal

import torch

from framestream.config import config_dataclass
from framestream.diffusion.transformer import Transformer, TransformerAutoregressiveCache, TransformerConfig

__all__ = [
    "TwoExpertCache",
    "TwoExpertTransformer",
    "TwoExpertTransformerConfig",
    "WAN22_T2V_A14B_BOUNDARY",
    "WAN22_I2V_A14B_BOUNDARY",
    "expert_for_timestep",
]

WAN22_T2V_A14B_BOUNDARY = 0.875
"""Wan 2.2 T2V-A14B: the high-noise expert runs while ``t >= 875``."""
WAN22_I2V_A14B_BOUNDARY = 0.900
"""Wan 2.2 I2V-A14B: the high-noise expert runs while ``t >= 900``."""

Expert = Literal["high_noise", "low_noise"]


def expert_for_timestep(timestep: float, boundary: float, num_train_timesteps: int = 1000) -> Expert:
    """``"high_noise"`` when ``timestep >= boundary * num_train_timesteps``, else ``"low_noise"``."""
    return "high_noise" if timestep >= boundary * num_train_timesteps else "low_noise"


class TwoExpertCache(TransformerAutoregressiveCache):
    """Per-rollout cache holding one cache per expert; ``start`` / ``finalize`` reach both."""

    def __init__(self, high_noise: TransformerAutoregressiveCache, low_noise: TransformerAutoregressiveCache) -> None:
        self.high_noise = high_noise
        self.low_noise = low_noise

    def of(self, expert: Expert) -> TransformerAutoregressiveCache:
        return self.high_noise if expert == "high_noise" else self.low_noise

    def start(self, autoregressive_index: int) -> None:
        self.high_noise.start(autoregressive_index)
        self.low_noise.start(autoregressive_index)

    def finalize(self, autoregressive_index: int) -> None:
        self.high_noise.finalize(autoregressive_index)
        self.low_noise.finalize(autoregressive_index)


class TwoExpertTransformer(Transformer[TwoExpertCache]):
    """Routes each denoising step to the high- or low-noise expert by its timestep.

    The experts must agree on ``latent_shape`` and on their patchify hooks (the
    first one's hooks are used). Per-rollout context is passed to both experts'
    ``initialize_autoregressive_cache``; when this wrapper has a ``context_encoder``,
    ``prompt`` / ``negative_prompt`` are encoded once here and handed to both as
    ``text_embeddings`` / ``negative_text_embeddings``.
    """

    config: "TwoExpertTransformerConfig"

    def __init__(self, config: "TwoExpertTransformerConfig") -> None:
        super().__init__(config)
        self.high_noise = config.high_noise.setup()
        self.low_noise = config.low_noise.setup()
        for name in ("high_noise", "low_noise"):
            if not isinstance(getattr(self, name), Transformer):
                raise TypeError(f"TwoExpertTransformerConfig.{name} must build a Transformer")
        if tuple(self.high_noise.latent_shape) != tuple(self.low_noise.latent_shape):
            raise ValueError(
                f"the experts' latent shapes differ: high {tuple(self.high_noise.latent_shape)} vs "
                f"low {tuple(self.low_noise.latent_shape)}"
            )
        reference = next((p for p in self.high_noise.parameters() if p.is_floating_point()), None)
        dtype = reference.dtype if reference is not None else torch.float32
        # Zero-size anchor: where this module was last moved to (the execution device) and its weight dtype.
        self.register_buffer("_anchor", torch.empty(0, dtype=dtype), persistent=False)
        self.active: Expert = "high_noise"
        """The expert whose weights are on the execution device (both are when not offloading)."""

    # ------------------------------------------------------------------ placement
    @property
    def execution_device(self) -> torch.device:
        return self._anchor.device

    def expert(self, name: Expert) -> Transformer:
        return self.high_noise if name == "high_noise" else self.low_noise

    def placement_tensor(self) -> torch.Tensor:
        """Device and dtype noise is drawn in: the execution device, whichever expert is resident."""
        return self._anchor

    def _offloading(self) -> bool:
        return self.config.offload_inactive and self.execution_device != torch.device(self.config.offload_device)

    def _apply(self, fn, recurse=True):  # type: ignore[override]
        # Learn where ``fn`` sends tensors from a zero-size probe (no allocation); when that is
        # not the offload device, the inactive expert gets only the dtype part of ``fn``, so a
        # ``.to("cuda")`` never puts both experts' weights on the device at once.
        target = fn(torch.empty(0, dtype=self._anchor.dtype, device=self._anchor.device)).device
        if not (recurse and self.config.offload_inactive and target != torch.device(self.config.offload_device)):
            return super()._apply(fn, recurse)
        inactive = self.expert("low_noise" if self.active == "high_noise" else "high_noise")

        def cast_only(t: torch.Tensor) -> torch.Tensor:
            dtype = fn(torch.empty(0, dtype=t.dtype, device=t.device)).dtype
            return t.to(self.config.offload_device, dtype)

        for name, module in self.named_children():
            if module is inactive:
                module._apply(cast_only)
            else:
                module._apply(fn)
        for name, buf in list(self._buffers.items()):
            if buf is not None:
                self._buffers[name] = fn(buf)
        return self

    def activate(self, name: Expert) -> Transformer:
        """Make ``name`` the active expert, swapping weights when offloading; returns it."""
        if name != self.active and self._offloading():
            # Free the device first so the incoming expert can reuse the memory.
            self.expert(self.active).to(self.config.offload_device)
            self.expert(name).to(self.execution_device)
        self.active = name
        return self.expert(name)

    # ------------------------------------------------------------------ interface
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return tuple(self.high_noise.latent_shape)

    def patchify_and_maybe_split_cp(self, x: Any) -> Any:
        return self.high_noise.patchify_and_maybe_split_cp(x)

    def unpatchify_and_maybe_gather_cp(self, x: torch.Tensor) -> torch.Tensor:
        return self.high_noise.unpatchify_and_maybe_gather_cp(x)

    def expert_for(self, timestep: torch.Tensor | float) -> Expert:
        """Which expert denoises at ``timestep`` (a scalar; one host read per step)."""
        t = float(torch.as_tensor(timestep).reshape(-1)[0]) if torch.is_tensor(timestep) else float(timestep)
        return expert_for_timestep(t, self.config.boundary, self.config.num_train_timesteps)

    def initialize_autoregressive_cache(self, **context: Any) -> TwoExpertCache:
        """Both experts' caches from the same context (prompts encoded once when this wrapper has an encoder).

        The low-noise expert's cache is built first so that the high-noise expert, which
        denoises the first steps, is the resident one afterwards.
        """
        if self.context_encoder is not None and "prompt" in context:
            prompt = context.pop("prompt")
            negative = context.pop("negative_prompt", None)
            context["text_embeddings"] = self.context_encoder(prompt)
            if any(getattr(e, "guidance", False) for e in (self.high_noise, self.low_noise)):
                if negative is None:
                    negative = getattr(getattr(self.context_encoder, "config", None), "negative_prompt", "")
                if isinstance(negative, str):
                    negative = [negative] * (len(prompt) if isinstance(prompt, list) else 1)
                context["negative_text_embeddings"] = self.context_encoder(negative)
        low = self.activate("low_noise").initialize_autoregressive_cache(**context)
        high = self.activate("high_noise").initialize_autoregressive_cache(**context)
        return TwoExpertCache(high_noise=high, low_noise=low)

    def predict_flow(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: TwoExpertCache,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """The flow of the expert that owns ``timestep``."""
        name = self.expert_for(timestep)
        return self.activate(name).predict_flow(noisy_latent, timestep, cache.of(name), input)

    def finalize_kv_cache(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: TwoExpertCache,
        input: Any = None,  # noqa: A002
    ) -> None:
        """Advance both experts' caches (each keeps its own KV history), ending on the high-noise one."""
        for name in ("low_noise", "high_noise"):
            self.activate(name).finalize_kv_cache(noisy_latent, timestep, cache.of(name), input)  # type: ignore[arg-type]

    def postprocess_clean_latent(self, clean_latent: torch.Tensor, cache: TwoExpertCache, input: Any = None) -> torch.Tensor:  # noqa: A002
        """The low-noise expert (which produced the last step) post-processes the result."""
        return self.low_noise.postprocess_clean_latent(clean_latent, cache.low_noise, input)


def _two_expert_class() -> type:
    return TwoExpertTransformer


@config_dataclass
class TwoExpertTransformerConfig(TransformerConfig):
    """Config of :class:`TwoExpertTransformer` (Wan 2.2 A14B-style expert switching)."""

    _target: type = field(default_factory=_two_expert_class)
    high_noise: TransformerConfig
    """Expert for ``t >= boundary * num_train_timesteps`` (the first, noisiest steps)."""
    low_noise: TransformerConfig
    """Expert for ``t < boundary * num_train_timesteps``."""
    boundary: float = WAN22_T2V_A14B_BOUNDARY
    """Switch point as a fraction of ``num_train_timesteps`` (T2V-A14B 0.875, I2V-A14B 0.900)."""
    num_train_timesteps: int = 1000
    offload_inactive: bool = True
    """Keep only the active expert on the execution device; the other waits on ``offload_device``."""
    offload_device: str = "cpu"
    """Where the inactive expert waits when ``offload_inactive``."""

    def __post_init__(self) -> None:
        if not 0.0 < self.boundary < 1.0:
            raise ValueError(f"boundary must be in (0, 1), got {self.boundary}")
        if self.num_train_timesteps < 1:
            raise ValueError(f"num_train_timesteps must be >= 1, got {self.num_train_timesteps}")
        torch.device(self.offload_device)  # a clear error for a bad device name, before any weights load
