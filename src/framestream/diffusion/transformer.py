"""Flow-prediction transformer interface and its autoregressive cache."""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import field
from typing import Any, Generic, TypeVar

import torch
import torch.nn as nn

from framestream.config import InstantiateConfig, config_dataclass
from framestream.encoders.base import EncoderConfig

__all__ = ["Transformer", "TransformerConfig", "TransformerAutoregressiveCache"]


class TransformerAutoregressiveCache:
    """State that persists across an AR rollout (KV cache, context embeddings...).

    Empty by default, which is right for non-AR transformers. ``start`` / ``finalize``
    bracket each AR step and are no-ops here; subclasses add bookkeeping.
    """

    def start(self, autoregressive_index: int) -> None:
        """Mark the start of an AR step."""

    def finalize(self, autoregressive_index: int) -> None:
        """Bookkeeping after the AR step's cache update."""


TransformerCacheT = TypeVar("TransformerCacheT", bound=TransformerAutoregressiveCache)


@config_dataclass
class TransformerConfig(InstantiateConfig):
    """Category base of transformer configs."""

    _target: type = field(default_factory=lambda: Transformer)
    context_encoder: EncoderConfig | None = None
    """Optional one-shot encoder run inside ``initialize_autoregressive_cache`` (e.g. text)."""


class Transformer(ABC, nn.Module, Generic[TransformerCacheT]):
    """Flow-prediction network, generic over its AR cache type.

    Subclasses implement :meth:`predict_flow`, :attr:`latent_shape` and the patchify
    hooks; AR transformers also override :meth:`initialize_autoregressive_cache`.
    """

    def __init__(self, config: TransformerConfig) -> None:
        super().__init__()
        self.config = config
        self.context_encoder = config.context_encoder.setup() if config.context_encoder is not None else None

    @property
    @abstractmethod
    def latent_shape(self) -> tuple[int, ...]:
        """Shape of one AR step's (patchified) latent, batch dims included."""

    def placement_tensor(self) -> torch.Tensor | None:
        """A tensor on the device, and in the dtype, that noise for this transformer is drawn in.

        Default: the first floating-point parameter (else buffer); None for a weightless
        transformer. Transformers that keep some weights off the execution device (the
        two-expert wrapper) override it.
        """
        for tensor in self.parameters():
            if tensor.is_floating_point():
                return tensor
        for tensor in self.buffers():
            if tensor.is_floating_point():
                return tensor
        return None

    @abstractmethod
    def predict_flow(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: TransformerCacheT,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Predicted flow at ``timestep``, same shape as ``noisy_latent``."""

    def finalize_kv_cache(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: TransformerCacheT,
        input: Any = None,  # noqa: A002
    ) -> None:
        """Advance the AR cache after denoising; default is one forward whose flow is discarded."""
        self.predict_flow(noisy_latent, timestep, cache, input)

    def initialize_autoregressive_cache(self, **context: Any) -> TransformerCacheT:
        """Fresh AR cache for a rollout; the default empty cache suits non-AR transformers."""
        if context:
            raise TypeError(
                f"{type(self).__name__} takes no per-rollout context, got {sorted(context)}; "
                "override initialize_autoregressive_cache to accept it"
            )
        return TransformerAutoregressiveCache()  # type: ignore[return-value]

    def postprocess_clean_latent(
        self,
        clean_latent: torch.Tensor,
        cache: TransformerCacheT,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Hook to pin regions of the clean latent (e.g. an I2V first frame); identity by default."""
        return clean_latent

    @abstractmethod
    def patchify_and_maybe_split_cp(self, x: Any) -> Any:
        """Patchify a latent (or each tensor of a structured payload); identity when not needed."""

    @abstractmethod
    def unpatchify_and_maybe_gather_cp(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify_and_maybe_split_cp` for the network output."""
