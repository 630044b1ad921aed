"""The interface through which the Wan DiT runs context- and CFG-parallel (implemented in framestream.distributed).

The model knows no process group: :class:`~framestream.models.wan.transformer.model.WanTransformer`
holds an optional :class:`DiTParallel` and the DiT calls these hooks; with none set, every
forward is the one-process code path, unchanged.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Protocol

import torch

__all__ = ["DiTParallel", "DiTTokenShards"]


class DiTTokenShards(Protocol):
    """This rank's share of one forward's tokens (for one patch grid)."""

    cache_tokens_per_frame: int
    """Tokens per latent frame this rank keeps in a causal KV cache."""

    def split(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C]`` (all tokens, frame-major) -> this rank's tokens."""

    def split_rope(self, cos: torch.Tensor, sin: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """RoPE tables ``[L, D/2]`` -> the rows of this rank's tokens (their true positions)."""

    def self_attention(
        self,
        q: torch.Tensor,
        k: torch.Tensor,
        v: torch.Tensor,
        self_kv: Callable[[torch.Tensor, torch.Tensor], tuple[torch.Tensor, torch.Tensor]] | None,
        mask: torch.Tensor | None,
    ) -> torch.Tensor:
        """Attention of this rank's queries over every rank's keys ``[B, L_local, H, D]``."""

    def gather(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's output tokens -> all tokens ``[B, L, C]``, on every rank."""


class DiTParallel(Protocol):
    """Context- and CFG-parallel hooks of one rank."""

    def shard(self, grid: tuple[int, int, int]) -> DiTTokenShards:
        """Token shards of a ``(frames, rows, cols)`` patch grid."""

    def cache_layout(self, grid_hw: tuple[int, int], heads: int) -> tuple[int, int]:
        """``(heads, tokens per frame)`` of this rank's causal KV cache."""

    def split_cfg(self, x: torch.Tensor) -> torch.Tensor:
        """``[2B, ...]`` cond + uncond rows -> this rank's CFG branch."""

    def gather_cfg(self, x: torch.Tensor) -> torch.Tensor:
        """This rank's branch -> ``[2B, ...]`` on every rank."""
