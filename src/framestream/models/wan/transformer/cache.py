"""Per-rollout cache of the Wan DiT: text cross-attention K/V and the causal self-attention KV cache.

:class:`WanKVCache` is an explicit, preallocated object:

- ``cross_k`` / ``cross_v``: per layer ``[B, L_text, H, D]`` keys and values of the
  text embedding, computed once in ``initialize_autoregressive_cache`` and reused by
  every denoising step and block.
- causal mode only, ``self_k`` / ``self_v``: per layer ``[B, S, H, D]`` buffers with
  ``S = (kv_cache_frames + block_frames) * tokens_per_frame``. The first
  ``fill_frames`` frames hold the (RoPE-rotated) keys and values of finalized blocks.
  The tail past the fill pointer is scratch space: every forward writes the current
  block's keys there so attention reads one contiguous slice ``[0, fill + block)``
  without concatenating. Denoising forwards never move the fill pointer, so the
  cached frames are never modified by them; only :meth:`commit` (after the
  finalize forward wrote the clean block into the scratch slot) advances it, and
  evicts the oldest non-sink frames of a rolling cache.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch

from framestream.diffusion.transformer import TransformerAutoregressiveCache

__all__ = ["WanKVCache", "KVCacheFullError"]


class KVCacheFullError(RuntimeError):
    """A finalized block does not fit in a non-rolling KV cache."""


@dataclass(eq=False)
class WanKVCache(TransformerAutoregressiveCache):
    """Per-rollout state of :class:`~framestream.models.wan.transformer.model.WanTransformer`."""

    cross_k: list[torch.Tensor]
    """Per layer text keys ``[B, L_text, H, D]`` (cond then uncond rows under CFG)."""
    cross_v: list[torch.Tensor]
    batch_size: int
    """Rows of the DiT batch: the user batch, doubled under classifier-free guidance."""
    guidance: bool = False
    causal: bool = False
    tokens_per_frame: int = 0
    block_frames: int = 0
    capacity_frames: int = 0
    rolling: bool = False
    sink_frames: int = 0
    self_k: list[torch.Tensor] = field(default_factory=list)
    self_v: list[torch.Tensor] = field(default_factory=list)
    fill_frames: int = 0
    """Frames currently held in the cache (the fill pointer, in frames)."""
    frames_seen: int = 0
    """Frames finalized so far, evicted ones included: the RoPE frame offset of the next block."""
    autoregressive_index: int | None = None

    # ------------------------------------------------------------------ construction
    @classmethod
    def allocate(
        cls,
        cross_k: list[torch.Tensor],
        cross_v: list[torch.Tensor],
        *,
        guidance: bool,
        causal: bool,
        heads: int,
        head_dim: int,
        tokens_per_frame: int,
        block_frames: int,
        capacity_frames: int,
        rolling: bool = False,
        sink_frames: int = 0,
        dtype: torch.dtype,
        device: torch.device | str,
    ) -> "WanKVCache":
        batch = cross_k[0].shape[0]
        cache = cls(cross_k=cross_k, cross_v=cross_v, batch_size=batch, guidance=guidance, causal=causal)
        if causal:
            slots = (capacity_frames + block_frames) * tokens_per_frame
            shape = (batch, slots, heads, head_dim)
            cache.self_k = [torch.zeros(shape, dtype=dtype, device=device) for _ in cross_k]
            cache.self_v = [torch.zeros(shape, dtype=dtype, device=device) for _ in cross_k]
            cache.tokens_per_frame = tokens_per_frame
            cache.block_frames = block_frames
            cache.capacity_frames = capacity_frames
            cache.rolling = rolling
            cache.sink_frames = sink_frames
        return cache

    # ----------------------------------------------------------------- AR bookkeeping
    def start(self, autoregressive_index: int) -> None:
        self.autoregressive_index = autoregressive_index

    def finalize(self, autoregressive_index: int) -> None:
        """No-op: the cache advances in :meth:`commit`, called by the transformer's finalize."""

    # ------------------------------------------------------------------ self-attention
    @property
    def fill_tokens(self) -> int:
        return self.fill_frames * self.tokens_per_frame

    def attend_kv(self, layer: int, k: torch.Tensor, v: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Keys / values block ``layer`` attends to: the cached frames followed by ``k`` / ``v``.

        ``k`` / ``v`` (the current block, RoPE applied) go into the scratch slot right
        after the fill pointer; the cached frames are not touched.
        """
        n = k.shape[1]
        if n > self.block_frames * self.tokens_per_frame:
            raise ValueError(
                f"block of {n} tokens exceeds the cache's block size {self.block_frames} frames "
                f"x {self.tokens_per_frame} tokens"
            )
        start, end = self.fill_tokens, self.fill_tokens + n
        self.self_k[layer][:, start:end] = k
        self.self_v[layer][:, start:end] = v
        return self.self_k[layer][:, :end], self.self_v[layer][:, :end]

    def commit(self, num_frames: int) -> None:
        """Keep the block just written to the scratch slot (by a finalize forward) as cached context.

        Advances the fill pointer by ``num_frames``; a rolling cache then evicts its
        oldest non-sink frames down to ``capacity_frames``, a non-rolling one raises
        :class:`KVCacheFullError` when the block does not fit.
        """
        new_fill = self.fill_frames + num_frames
        if new_fill > self.capacity_frames:
            if not self.rolling:
                raise KVCacheFullError(
                    f"KV cache full: {self.fill_frames} cached + {num_frames} new frames > kv_cache_frames="
                    f"{self.capacity_frames}; raise kv_cache_frames or enable rolling_kv_cache"
                )
            evict = new_fill - self.capacity_frames
            t = self.tokens_per_frame
            keep_from, keep_to = (self.sink_frames + evict) * t, new_fill * t
            dest = self.sink_frames * t
            for buffers in (self.self_k, self.self_v):
                for buf in buffers:
                    buf[:, dest : dest + keep_to - keep_from] = buf[:, keep_from:keep_to].clone()
            new_fill = self.capacity_frames
        self.fill_frames = new_fill
        self.frames_seen += num_frames

    def reset(self) -> None:
        """Forget every cached frame (the text K/V stay): start a new rollout with the same prompt."""
        self.fill_frames = 0
        self.frames_seen = 0
        self.autoregressive_index = None

    def cached_kv(self, layer: int) -> tuple[torch.Tensor, torch.Tensor]:
        """Views of the cached (finalized) keys / values of ``layer``."""
        return self.self_k[layer][:, : self.fill_tokens], self.self_v[layer][:, : self.fill_tokens]
