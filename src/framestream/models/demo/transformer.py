"""A tiny random-weight causal DiT for the demo recipe and for tests.

It is a real (if small) autoregressive flow transformer, so the pipeline machinery
is exercised end to end:

- patch embedding of the latent chunk ``(B, C, T, H, W)`` into tokens
  ``(B, T*(H/ph)*(W/pw), C*pt*ph*pw)`` (the patchified latent the scheduler sees);
- sinusoidal timestep embedding with adaLN modulation (shift / scale / gate);
- self-attention that is bidirectional inside an AR chunk and causal across chunks:
  each chunk attends to itself and to the KV cache of earlier chunks;
- an explicit, preallocated :class:`DemoKVCache`: per layer, ``window_chunks`` chunks
  of committed context plus one working slot for the chunk being generated.
  ``finalize_kv_cache`` writes the clean chunk's K/V into the working slot and
  ``cache.finalize`` commits it (dropping the oldest chunk once the window is full).

Text conditioning (optional): a prompt becomes a cheap, deterministic "hashed-token"
feature vector (:func:`hashed_prompt_features`: one seeded random vector per word, averaged),
projected by ``text_proj`` and added to the timestep embedding, so it modulates every
block through adaLN. It lives on the cache (``DemoKVCache.text_condition``), so each
rollout has its own prompt; without a prompt the model is exactly the unconditioned one.
Because it modulates every layer, the cached K/V of earlier chunks depend on the prompt
they were computed under: steering a stream to a new prompt must re-cache them (see
:mod:`framestream.serve.steering`), not just swap the condition.

Positions: the frame index is absolute (``autoregressive_index * chunk_frames + t``)
and enters as a sinusoidal embedding, so nothing is tied to a maximum length.

The weights are random (seeded by ``init_seed``): the output is not a meaningful video.
"""

from __future__ import annotations

import math
import re
import zlib
from collections.abc import Callable
from dataclasses import field
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.config import config_dataclass
from framestream.diffusion.transformer import Transformer, TransformerAutoregressiveCache, TransformerConfig

__all__ = ["DemoKVCache", "DemoTransformer", "DemoTransformerConfig", "hashed_prompt_features", "sinusoidal_embedding"]

Attend = Callable[[int, torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]


def sinusoidal_embedding(positions: torch.Tensor, dim: int, max_period: float = 10_000.0) -> torch.Tensor:
    """``(N,) -> (N, dim)`` cos/sin embedding of (possibly fractional) positions, computed in fp32."""
    if dim % 2:
        raise ValueError(f"sinusoidal embedding dim must be even, got {dim}")
    half = dim // 2
    freqs = torch.exp(-math.log(max_period) * torch.arange(half, device=positions.device, dtype=torch.float32) / half)
    angles = positions.to(torch.float32)[:, None] * freqs[None]
    return torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1)


def hashed_prompt_features(prompt: str, dim: int) -> torch.Tensor:
    """``(dim,)`` fp32 features of a prompt: the mean of one fixed random vector per lower-cased word.

    Each word's vector is drawn from a generator seeded by the word's CRC-32, so the
    features are deterministic across processes and independent of torch's global RNG;
    a prompt without words gives zeros.
    """
    words = re.findall(r"\w+", prompt.lower())
    if not words:
        return torch.zeros(dim)
    vectors = [torch.randn(dim, generator=torch.Generator().manual_seed(zlib.crc32(w.encode("utf-8")))) for w in words]
    return torch.stack(vectors).mean(dim=0)


@config_dataclass
class DemoTransformerConfig(TransformerConfig):
    """Config of :class:`DemoTransformer` (sizes are in latent units)."""

    _target: type = field(default_factory=lambda: DemoTransformer)
    latent_channels: int = 4
    """Channels of the latent video."""
    chunk_frames: int = 3
    """Latent frames generated per AR step."""
    height: int = 12
    """Latent height."""
    width: int = 16
    """Latent width."""
    batch_size: int = 1
    """Videos generated in parallel."""
    patch_size: tuple[int, int, int] = (1, 2, 2)
    """Patch size (t, h, w); must divide ``(chunk_frames, height, width)``."""
    dim: int = 64
    """Hidden size."""
    num_heads: int = 4
    """Attention heads; must divide ``dim``."""
    num_layers: int = 2
    """DiT blocks."""
    mlp_ratio: int = 4
    """MLP hidden size / ``dim``."""
    frequency_dim: int = 64
    """Size of the sinusoidal timestep features."""
    window_chunks: int = 8
    """Earlier chunks kept in the KV cache (older ones are dropped)."""
    timestep_scale: float = 1000.0
    """Timestep value that means pure noise (flow-match schedulers use 0..1000)."""
    init_seed: int = 0
    """Seed of the random weights."""
    text_dim: int = 32
    """Size of the hashed-token prompt features (see :func:`hashed_prompt_features`)."""

    def __post_init__(self) -> None:
        pt, ph, pw = self.patch_size
        if len(self.patch_size) != 3 or min(self.patch_size) < 1:
            raise ValueError(f"patch_size must be three positive ints, got {self.patch_size}")
        if self.chunk_frames % pt or self.height % ph or self.width % pw:
            raise ValueError(
                f"patch_size {self.patch_size} must divide (chunk_frames, height, width) = "
                f"({self.chunk_frames}, {self.height}, {self.width})"
            )
        if self.dim % self.num_heads or (self.dim // self.num_heads) % 2:
            raise ValueError(f"num_heads ({self.num_heads}) must divide dim ({self.dim}) into even head sizes")
        if self.dim % 2 or self.frequency_dim % 2:
            raise ValueError("dim and frequency_dim must be even")
        if self.window_chunks < 1:
            raise ValueError(f"window_chunks must be >= 1, got {self.window_chunks}")
        for name in ("latent_channels", "chunk_frames", "height", "width", "batch_size", "num_layers", "mlp_ratio", "text_dim"):
            if getattr(self, name) < 1:
                raise ValueError(f"{name} must be >= 1, got {getattr(self, name)}")


class DemoKVCache(TransformerAutoregressiveCache):
    """Preallocated per-layer K/V buffers for :class:`DemoTransformer`.

    ``keys`` / ``values`` are ``(layers, B, heads, (window_chunks + 1) * tokens_per_chunk,
    head_dim)``. The first :attr:`num_cached_tokens` positions are committed context
    (whole earlier chunks, oldest first); the next ``tokens_per_chunk`` positions are
    the working slot of the chunk being generated, overwritten by every forward of the
    step. :meth:`finalize` commits the working slot, which at that point holds the K/V
    written by ``finalize_kv_cache``.
    """

    def __init__(
        self,
        *,
        num_layers: int,
        batch_size: int,
        num_heads: int,
        head_dim: int,
        tokens_per_chunk: int,
        window_chunks: int,
        device: torch.device,
        dtype: torch.dtype,
        text_condition: torch.Tensor | None = None,
    ) -> None:
        capacity = (window_chunks + 1) * tokens_per_chunk
        shape = (num_layers, batch_size, num_heads, capacity, head_dim)
        self.keys = torch.zeros(shape, device=device, dtype=dtype)
        self.values = torch.zeros(shape, device=device, dtype=dtype)
        self.tokens_per_chunk = tokens_per_chunk
        self.window_chunks = window_chunks
        self.num_cached_tokens = 0
        """Committed context tokens (a multiple of ``tokens_per_chunk``)."""
        self.next_index = 0
        """AR index the next :meth:`start` must use."""
        self.active_index: int | None = None
        """AR index between :meth:`start` and :meth:`finalize`, else None."""
        self.text_condition = text_condition
        """``(B, dim)`` projected prompt features added to the timestep embedding, or None (unconditioned)."""

    @property
    def num_cached_chunks(self) -> int:
        """Earlier chunks visible to the current one."""
        return self.num_cached_tokens // self.tokens_per_chunk

    def start(self, autoregressive_index: int) -> None:
        if autoregressive_index != self.next_index:
            raise ValueError(f"DemoKVCache: expected AR step {self.next_index}, got {autoregressive_index}")
        self.active_index = autoregressive_index

    def finalize(self, autoregressive_index: int) -> None:
        if self.active_index is None or autoregressive_index != self.active_index:
            raise ValueError(f"DemoKVCache: finalize({autoregressive_index}) but the active AR step is {self.active_index}")
        n = self.tokens_per_chunk
        if self.num_cached_chunks == self.window_chunks:
            # Window full: drop the oldest chunk by shifting the context (and the new chunk) left.
            end = self.num_cached_tokens + n
            self.keys[:, :, :, : end - n] = self.keys[:, :, :, n:end].clone()
            self.values[:, :, :, : end - n] = self.values[:, :, :, n:end].clone()
        else:
            self.num_cached_tokens += n
        self.active_index = None
        self.next_index = autoregressive_index + 1

    def write_working_slot(self, layer: int, keys: torch.Tensor, values: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Store this chunk's K/V for ``layer``; return context + chunk K/V to attend over."""
        if self.active_index is None:
            raise RuntimeError("DemoKVCache: call start(autoregressive_index) before running the transformer")
        begin, end = self.num_cached_tokens, self.num_cached_tokens + self.tokens_per_chunk
        self.keys[layer, :, :, begin:end] = keys
        self.values[layer, :, :, begin:end] = values
        return self.keys[layer, :, :, :end], self.values[layer, :, :, :end]


class DemoDiTBlock(nn.Module):
    """Pre-norm DiT block with adaLN modulation: attention then MLP, each gated."""

    def __init__(self, dim: int, num_heads: int, mlp_ratio: int) -> None:
        super().__init__()
        self.num_heads = num_heads
        self.norm1 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.norm2 = nn.LayerNorm(dim, elementwise_affine=False, eps=1e-6)
        self.mlp = nn.Sequential(nn.Linear(dim, mlp_ratio * dim), nn.GELU(approximate="tanh"), nn.Linear(mlp_ratio * dim, dim))
        self.modulation = nn.Linear(dim, 6 * dim)

    def forward(self, x: torch.Tensor, temb: torch.Tensor, attend: Callable[[torch.Tensor, torch.Tensor, torch.Tensor], torch.Tensor]) -> torch.Tensor:
        batch, tokens, dim = x.shape
        shift1, scale1, gate1, shift2, scale2, gate2 = self.modulation(F.silu(temb))[:, None].chunk(6, dim=-1)
        h = self.norm1(x) * (1 + scale1) + shift1
        q, k, v = self.qkv(h).view(batch, tokens, 3, self.num_heads, dim // self.num_heads).permute(2, 0, 3, 1, 4)
        attn = attend(q, k, v).transpose(1, 2).reshape(batch, tokens, dim)
        x = x + gate1 * self.proj(attn)
        h = self.norm2(x) * (1 + scale2) + shift2
        return x + gate2 * self.mlp(h)


class DemoTransformer(Transformer[DemoKVCache]):
    """Tiny causal DiT with an explicit KV cache; see the module doc."""

    config: DemoTransformerConfig

    def __init__(self, config: DemoTransformerConfig) -> None:
        super().__init__(config)
        c = config
        pt, ph, pw = c.patch_size
        self.patch_dim = c.latent_channels * pt * ph * pw
        self.grid = (c.chunk_frames // pt, c.height // ph, c.width // pw)
        self.tokens_per_chunk = self.grid[0] * self.grid[1] * self.grid[2]
        self.head_dim = c.dim // c.num_heads
        # Random weights, reproducible and independent of the global RNG state.
        with torch.random.fork_rng(devices=[]):
            torch.manual_seed(c.init_seed)
            self.patch_embed = nn.Linear(self.patch_dim, c.dim)
            self.spatial_pos = nn.Parameter(0.02 * torch.randn(self.grid[1] * self.grid[2], c.dim))
            self.time_embed = nn.Sequential(nn.Linear(c.frequency_dim, c.dim), nn.SiLU(), nn.Linear(c.dim, c.dim))
            self.blocks = nn.ModuleList(DemoDiTBlock(c.dim, c.num_heads, c.mlp_ratio) for _ in range(c.num_layers))
            self.norm_out = nn.LayerNorm(c.dim, elementwise_affine=False, eps=1e-6)
            self.out_modulation = nn.Linear(c.dim, 2 * c.dim)
            self.out_proj = nn.Linear(c.dim, self.patch_dim)
            # Drawn last so the weights above are the same as before text conditioning existed.
            self.text_proj = nn.Linear(c.text_dim, c.dim)

    # ------------------------------------------------------------------ shapes
    @property
    def latent_shape(self) -> tuple[int, ...]:
        return (self.config.batch_size, self.tokens_per_chunk, self.patch_dim)

    def patchify_and_maybe_split_cp(self, x: Any) -> Any:
        """``(B, C, T, H, W) -> (B, T'*H'*W', C*pt*ph*pw)``, tokens ordered (t, h, w)."""
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"DemoTransformer patchifies tensors only, got {type(x).__name__}")
        b, c, t, h, w = x.shape
        pt, ph, pw = self.config.patch_size
        x = x.reshape(b, c, t // pt, pt, h // ph, ph, w // pw, pw)
        x = x.permute(0, 2, 4, 6, 1, 3, 5, 7)
        return x.reshape(b, (t // pt) * (h // ph) * (w // pw), c * pt * ph * pw)

    def unpatchify_and_maybe_gather_cp(self, x: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`patchify_and_maybe_split_cp` (any whole number of frame groups)."""
        b, tokens = x.shape[0], x.shape[1]
        c = self.config.latent_channels
        pt, ph, pw = self.config.patch_size
        _, gh, gw = self.grid
        if x.ndim != 3 or tokens % (gh * gw) or x.shape[2] != self.patch_dim:
            raise ValueError(f"expected (B, k*{gh * gw}, {self.patch_dim}) tokens, got {tuple(x.shape)}")
        gt = tokens // (gh * gw)
        x = x.reshape(b, gt, gh, gw, c, pt, ph, pw).permute(0, 4, 1, 5, 2, 6, 3, 7)
        return x.reshape(b, c, gt * pt, gh * ph, gw * pw)

    # ------------------------------------------------------------------ network
    def text_condition(self, prompt: str) -> torch.Tensor:
        """``(batch_size, dim)`` conditioning vector of a prompt (see :func:`hashed_prompt_features`)."""
        if not isinstance(prompt, str):
            raise TypeError(f"prompt must be a string, got {type(prompt).__name__}")
        ref = self.text_proj.weight
        features = hashed_prompt_features(prompt, self.config.text_dim).to(device=ref.device, dtype=ref.dtype)
        with torch.no_grad():
            return self.text_proj(features)[None].expand(self.config.batch_size, -1).clone()

    def initialize_autoregressive_cache(self, prompt: str | None = None, **context: Any) -> DemoKVCache:
        """Fresh KV cache; ``prompt`` (optional) conditions the whole rollout."""
        if context:
            raise TypeError(f"DemoTransformer takes only prompt= as per-rollout context, got {sorted(context)}")
        ref = self.patch_embed.weight
        return DemoKVCache(
            num_layers=self.config.num_layers,
            batch_size=self.config.batch_size,
            num_heads=self.config.num_heads,
            head_dim=self.head_dim,
            tokens_per_chunk=self.tokens_per_chunk,
            window_chunks=self.config.window_chunks,
            device=ref.device,
            dtype=ref.dtype,
            text_condition=None if prompt is None else self.text_condition(prompt),
        )

    def _timestep_embedding(self, timestep: torch.Tensor, batch: int) -> torch.Tensor:
        t = torch.as_tensor(timestep, device=self.patch_embed.weight.device).to(torch.float32).reshape(-1)
        if t.numel() == 1:
            t = t.expand(batch)
        elif t.numel() != batch:
            raise ValueError(f"timestep must be a scalar or have one value per batch item, got shape {tuple(timestep.shape)}")
        features = sinusoidal_embedding(t * (1000.0 / self.config.timestep_scale), self.config.frequency_dim)
        return self.time_embed(features.to(self.patch_embed.weight.dtype))

    def _embed(self, tokens: torch.Tensor, first_chunk: int, num_chunks: int) -> torch.Tensor:
        gt, gh, gw = self.grid
        pt = self.config.patch_size[0]
        frames = torch.arange(first_chunk * gt, (first_chunk + num_chunks) * gt, device=tokens.device) * pt
        temporal = sinusoidal_embedding(frames, self.config.dim).to(tokens.dtype)  # (T', dim)
        pos = temporal[:, None, :] + self.spatial_pos[None]  # (T', H'W', dim)
        return self.patch_embed(tokens) + pos.reshape(-1, self.config.dim)[None]

    def _run(
        self,
        tokens: torch.Tensor,
        timestep: torch.Tensor,
        first_chunk: int,
        num_chunks: int,
        attend: Attend,
        head: bool,
        text_condition: torch.Tensor | None,
    ) -> torch.Tensor | None:
        x = self._embed(tokens, first_chunk, num_chunks)
        temb = self._timestep_embedding(timestep, x.shape[0])
        if text_condition is not None:
            temb = temb + text_condition.to(temb.dtype)
        for layer, block in enumerate(self.blocks):
            x = block(x, temb, lambda q, k, v, layer=layer: attend(layer, q, k, v))
        if not head:
            return None
        shift, scale = self.out_modulation(F.silu(temb))[:, None].chunk(2, dim=-1)
        return self.out_proj(self.norm_out(x) * (1 + scale) + shift)

    def _cached_attend(self, cache: DemoKVCache) -> Attend:
        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            keys, values = cache.write_working_slot(layer, k, v)
            return F.scaled_dot_product_attention(q, keys, values)

        return attend

    def _check_chunk(self, noisy_latent: torch.Tensor, cache: DemoKVCache) -> int:
        if tuple(noisy_latent.shape) != self.latent_shape:
            raise ValueError(f"expected a patchified chunk of shape {self.latent_shape}, got {tuple(noisy_latent.shape)}")
        if cache.active_index is None:
            raise RuntimeError("DemoKVCache: call start(autoregressive_index) before running the transformer")
        return cache.active_index

    def predict_flow(self, noisy_latent: torch.Tensor, timestep: torch.Tensor, cache: DemoKVCache, input: Any = None) -> torch.Tensor:  # noqa: A002
        index = self._check_chunk(noisy_latent, cache)
        flow = self._run(noisy_latent, timestep, index, 1, self._cached_attend(cache), head=True, text_condition=cache.text_condition)
        assert flow is not None
        return flow

    def finalize_kv_cache(self, noisy_latent: torch.Tensor, timestep: torch.Tensor, cache: DemoKVCache, input: Any = None) -> None:  # noqa: A002
        """Write the (context-noised) clean chunk's K/V into the cache's working slot; no output head."""
        index = self._check_chunk(noisy_latent, cache)
        self._run(noisy_latent, timestep, index, 1, self._cached_attend(cache), head=False, text_condition=cache.text_condition)

    def predict_flow_block_causal(self, tokens: torch.Tensor, timestep: torch.Tensor, prompt: str | None = None) -> torch.Tensor:
        """Reference forward over ``K`` whole chunks at once with a block-causal mask, no cache.

        ``tokens`` is ``(B, K * tokens_per_chunk, patch_dim)`` (chunks in order, starting
        at AR step 0), all at one ``timestep``. Chunk ``i`` attends to chunks
        ``i - window_chunks .. i``, so this equals running the chunks one by one through
        the KV cache (each finalized at that same timestep) for any ``K``, all under ``prompt``.
        """
        n = self.tokens_per_chunk
        if tokens.ndim != 3 or tokens.shape[1] % n:
            raise ValueError(f"expected (B, K*{n}, {self.patch_dim}) tokens, got {tuple(tokens.shape)}")
        num_chunks = tokens.shape[1] // n
        chunk_of = torch.arange(num_chunks * n, device=tokens.device) // n
        behind = chunk_of[:, None] - chunk_of[None, :]
        mask = (behind >= 0) & (behind <= self.config.window_chunks)

        def attend(layer: int, q: torch.Tensor, k: torch.Tensor, v: torch.Tensor) -> torch.Tensor:
            return F.scaled_dot_product_attention(q, k, v, attn_mask=mask)

        condition = None if prompt is None else self.text_condition(prompt)
        out = self._run(tokens, timestep, 0, num_chunks, attend, head=True, text_condition=condition)
        assert out is not None
        return out
