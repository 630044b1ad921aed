"""The Wan 2.1 text-to-video DiT and its pipeline adapter.

:class:`WanDiT` is the network. Parameter names are those of diffusers'
``WanTransformer3DModel`` (so its safetensors load as is; the original Wan layout goes
through :mod:`~framestream.models.wan.transformer.checkpoint`'s key map). Data flow:

1. ``patch_embedding`` (Conv3d, kernel = stride = ``patch_size``) turns the latent
   ``[B, 16, F, H, W]`` into ``F * H/2 * W/2`` tokens of width ``inner_dim``.
2. ``condition_embedder``: the timestep's sinusoidal features (cos half first) go
   through ``time_embedder`` (Linear-SiLU-Linear) to ``temb``, then ``time_proj``
   (SiLU-Linear) to six modulation vectors; the text features go through
   ``text_embedder`` (Linear-GELU(tanh)-Linear).
3. Each block: LayerNorm + modulation (shift, scale) -> self-attention with RMS q/k norm
   and 3D RoPE -> gated residual; LayerNorm (affine) -> text cross-attention ->
   residual; LayerNorm + modulation -> GELU(tanh) MLP -> gated residual. Each block adds
   its learned ``scale_shift_table`` to the six vectors.
4. Head: LayerNorm, modulation by ``scale_shift_table + temb`` (shift, scale), ``proj_out``,
   unpatchify back to ``[B, 16, F, H, W]``.

Modulation, norms and residual sums run in fp32 whatever the weight dtype (as diffusers
and the original code do).

Causal AR mode (Self-Forcing / CausVid): a block of frames attends to itself and to the
keys / values of earlier blocks held in a :class:`~framestream.models.wan.transformer.cache.WanKVCache`;
its RoPE frame positions start at the number of frames already generated.

:class:`WanTransformer` adapts the network to the pipeline's
:class:`~framestream.diffusion.transformer.Transformer` interface. The patchify hooks
are the identity: the network patchifies internally (its Conv3d patch embedding needs
the 5D latent), and there is no context parallelism, so the pipeline sees plain
``[B, 16, F, H, W]`` latents.
"""

from __future__ import annotations

import math
from typing import Any

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.diffusion.transformer import Transformer
from framestream.models.wan.transformer.attention import (
    FP32LayerNorm,
    WanAttention,
    apply_rope,
    attention,
    local_self_attention,
    rope_cos_sin,
    scaled_init_,
)
from framestream.models.wan.transformer.cache import WanKVCache
from framestream.models.wan.transformer.config import WanTransformerArchConfig, WanTransformerConfig

__all__ = ["WanDiT", "WanTransformer", "sinusoidal_timestep_embedding", "modulate", "gated_residual"]


def sinusoidal_timestep_embedding(timestep: torch.Tensor, dim: int, dtype: torch.dtype = torch.float64) -> torch.Tensor:
    """``[B] -> [B, dim]`` features ``cat(cos(t*f), sin(t*f))``, ``f_i = 10000^(-i/(dim/2))``.

    Wan computes them in float64; diffusers in float32 (pass ``dtype=torch.float32``
    for bit-level parity with it).
    """
    half = dim // 2
    exponent = -math.log(10000.0) * torch.arange(half, dtype=dtype, device=timestep.device)
    freqs = torch.exp(exponent / half)
    args = timestep.to(dtype)[:, None] * freqs[None, :]
    return torch.cat([torch.cos(args), torch.sin(args)], dim=-1)


class _MLP2(nn.Module):
    """``linear_1 -> act -> linear_2`` (diffusers' TimestepEmbedding / PixArtAlphaTextProjection names)."""

    def __init__(self, in_dim: int, dim: int, act: nn.Module) -> None:
        super().__init__()
        self.linear_1 = nn.Linear(in_dim, dim)
        self.act = act
        self.linear_2 = nn.Linear(dim, dim)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear_2(self.act(self.linear_1(x)))


class _ConditionEmbedder(nn.Module):
    def __init__(self, arch: WanTransformerArchConfig) -> None:
        super().__init__()
        d = arch.inner_dim
        self.time_embedder = _MLP2(arch.freq_dim, d, nn.SiLU())
        self.time_proj = nn.Linear(d, 6 * d)
        self.text_embedder = _MLP2(arch.text_dim, d, nn.GELU(approximate="tanh"))


class _GELUProj(nn.Module):
    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.proj = nn.Linear(dim, hidden)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return F.gelu(self.proj(x), approximate="tanh")


class _FeedForward(nn.Module):
    """``net.0.proj`` (Linear + GELU tanh) -> ``net.2`` (Linear): diffusers' FeedForward names."""

    def __init__(self, dim: int, hidden: int) -> None:
        super().__init__()
        self.net = nn.ModuleList([_GELUProj(dim, hidden), nn.Identity(), nn.Linear(hidden, dim)])

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        for layer in self.net:
            x = layer(x)
        return x


def modulate(x: torch.Tensor, scale: torch.Tensor, shift: torch.Tensor) -> torch.Tensor:
    """``x * (1 + scale) + shift`` with one (scale, shift) row per run of tokens.

    ``x: [B, L, C]``; ``scale``, ``shift: [B, G, C]`` where ``G`` divides ``L``: row ``g``
    applies to tokens ``[g*L/G, (g+1)*L/G)``. ``G = 1`` is one timestep per sample,
    ``G = frames`` one per latent frame (Wan 2.2 TI2V's clean first frame), ``G = L``
    one per token. Runs are broadcast, never materialised per token.
    """
    groups = scale.shape[1]
    out = x.unflatten(1, (groups, -1)) * (1 + scale[:, :, None]) + shift[:, :, None]
    return out.flatten(1, 2)


def gated_residual(x: torch.Tensor, out: torch.Tensor, gate: torch.Tensor) -> torch.Tensor:
    """``x + out * gate`` in fp32 (``gate: [B, G, C]`` per token run as in :func:`modulate`), cast to ``x``'s dtype."""
    groups = gate.shape[1]
    summed = x.float().unflatten(1, (groups, -1)) + out.float().unflatten(1, (groups, -1)) * gate[:, :, None]
    return summed.flatten(1, 2).type_as(x)


class WanBlock(nn.Module):
    """One Wan transformer block (self-attention, text cross-attention, MLP, 6-way modulation)."""

    def __init__(self, arch: WanTransformerArchConfig) -> None:
        super().__init__()
        d = arch.inner_dim
        self.norm1 = FP32LayerNorm(d, arch.eps, elementwise_affine=False)
        self.attn1 = WanAttention(d, arch.num_attention_heads, arch.eps)
        self.attn2 = WanAttention(d, arch.num_attention_heads, arch.eps)
        self.norm2 = FP32LayerNorm(d, arch.eps, elementwise_affine=True) if arch.cross_attn_norm else nn.Identity()
        self.ffn = _FeedForward(d, arch.ffn_dim)
        self.norm3 = FP32LayerNorm(d, arch.eps, elementwise_affine=False)
        self.scale_shift_table = nn.Parameter(torch.empty(1, 6, d))
        scaled_init_(self.scale_shift_table)

    def forward(
        self,
        x: torch.Tensor,
        modulation: torch.Tensor,
        rope: tuple[torch.Tensor, torch.Tensor],
        cross_kv: tuple[torch.Tensor, torch.Tensor],
        self_kv: Any = None,
        mask: torch.Tensor | None = None,
        self_attention: Any = None,
    ) -> torch.Tensor:
        """``x: [B, L, C]``; ``modulation: [B, G, 6, C]`` fp32, one row per run of ``L / G`` tokens
        (see :func:`modulate`); ``self_kv(k, v) -> (k_all, v_all)`` for causal mode.

        ``self_attention(q, k, v, self_kv, mask)`` replaces the local attention (context parallelism).
        """
        shift, scale, gate, c_shift, c_scale, c_gate = (self.scale_shift_table.float()[:, None] + modulation).unbind(2)

        # 1. self-attention
        h = modulate(self.norm1(x.float()), scale, shift).type_as(x)
        q = apply_rope(self.attn1.query(h), *rope)
        k, v = self.attn1.key_value(h)
        k = apply_rope(k, *rope)
        out = self.attn1.output((self_attention or local_self_attention)(q, k, v, self_kv, mask), like=x)
        x = gated_residual(x, out, gate)

        # 2. text cross-attention (keys / values precomputed per rollout)
        h = self.norm2(x.float()).type_as(x)
        out = self.attn2.output(attention(self.attn2.query(h), *cross_kv), like=x)
        x = x + out

        # 3. feed-forward
        h = modulate(self.norm3(x.float()), c_scale, c_shift).type_as(x)
        out = self.ffn(h)
        return gated_residual(x, out, c_gate)


class WanDiT(nn.Module):
    """Wan 2.1 T2V diffusion transformer with diffusers-compatible parameter names.

    ``forward(latent, timestep, text)`` matches ``diffusers.WanTransformer3DModel``
    (the tests check it to 1e-5 in fp32). ``cache`` switches on the per-rollout text
    K/V and, for a causal cache, block-causal attention over the cached frames.
    """

    def __init__(self, arch: WanTransformerArchConfig, time_embedding_fp64: bool = True) -> None:
        super().__init__()
        self.arch = arch
        self.time_embedding_fp64 = time_embedding_fp64
        d = arch.inner_dim
        self.patch_embedding = nn.Conv3d(arch.in_channels, d, kernel_size=arch.patch_size, stride=arch.patch_size)
        self.condition_embedder = _ConditionEmbedder(arch)
        self.blocks = nn.ModuleList([WanBlock(arch) for _ in range(arch.num_layers)])
        self.norm_out = FP32LayerNorm(d, arch.eps, elementwise_affine=False)
        self.proj_out = nn.Linear(d, arch.out_channels * math.prod(arch.patch_size))
        self.scale_shift_table = nn.Parameter(torch.empty(1, 2, d))
        scaled_init_(self.scale_shift_table)

    # ---------------------------------------------------------------- conditioning
    @property
    def dtype(self) -> torch.dtype:
        return self.patch_embedding.weight.dtype

    @property
    def device(self) -> torch.device:
        return self.patch_embedding.weight.device

    def time_embedding(
        self, timestep: torch.Tensor, batch: int, tokens: int | None = None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """``temb [B, G, C]`` and block modulation ``[B, G, 6, C]``, both fp32.

        ``timestep`` is a scalar, ``[B]`` (one per sample: ``G = 1``) or ``[B, G]`` (one per
        run of ``tokens / G`` consecutive tokens; Wan 2.2 TI2V gives its clean first frame
        timestep 0 this way). A leading batch of 1 is broadcast to ``batch``.
        """
        t = torch.as_tensor(timestep)
        if t.ndim <= 1:
            t = t.reshape(-1, 1)
            if t.shape[0] not in (1, batch):
                raise ValueError(f"timestep has {t.shape[0]} values for a batch of {batch}")
        elif t.ndim != 2 or t.shape[0] not in (1, batch):
            raise ValueError(f"timestep must be a scalar, [B] or [B, G] for a batch of {batch}, got {tuple(t.shape)}")
        if tokens is not None and tokens % t.shape[1]:
            raise ValueError(f"{t.shape[1]} timesteps per sample do not split {tokens} tokens into equal runs")
        t = t.expand(batch, -1)
        groups = t.shape[1]
        dtype = torch.float64 if self.time_embedding_fp64 else torch.float32
        if t.device.type == "mps":
            dtype = torch.float32
        feats = sinusoidal_timestep_embedding(t.reshape(-1).to(self.device), self.arch.freq_dim, dtype)
        emb = self.condition_embedder
        weight_dtype = emb.time_embedder.linear_1.weight.dtype
        temb = emb.time_embedder(feats.to(weight_dtype)).float()
        proj = emb.time_proj(F.silu(temb).to(emb.time_proj.weight.dtype)).float()
        return temb.unflatten(0, (batch, groups)), proj.unflatten(0, (batch, groups)).unflatten(2, (6, -1))

    def embed_text(self, text: torch.Tensor) -> torch.Tensor:
        """``[B, L, text_dim] -> [B, L, C]`` (``text_embedder``)."""
        if text.ndim != 3 or text.shape[-1] != self.arch.text_dim:
            raise ValueError(f"text embeddings must be [B, L, {self.arch.text_dim}], got {tuple(text.shape)}")
        return self.condition_embedder.text_embedder(text.to(self.dtype))

    def cross_attention_kv(self, text: torch.Tensor) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
        """Per-layer text keys / values ``[B, L, H, D]``: computed once per rollout."""
        context = self.embed_text(text)
        ks, vs = [], []
        for block in self.blocks:
            k, v = block.attn2.key_value(context)
            ks.append(k)
            vs.append(v)
        return ks, vs

    # --------------------------------------------------------------------- forward
    def forward(
        self,
        hidden_states: torch.Tensor,
        timestep: torch.Tensor,
        encoder_hidden_states: torch.Tensor | None = None,
        *,
        cache: WanKVCache | None = None,
        self_attn_mask: torch.Tensor | None = None,
        start_frame: int | None = None,
        parallel: Any = None,
    ) -> torch.Tensor:
        """Predicted flow ``[B, out_channels, F, H, W]`` for a latent ``[B, in_channels, F, H, W]``.

        Args:
            hidden_states: noisy latent.
            timestep: scalar or ``[B]`` diffusion timestep (0..1000), or ``[B, G]`` per run of
                ``L / G`` tokens (per latent frame or per token, as Wan 2.2 TI2V uses them).
            encoder_hidden_states: text features ``[B, L, text_dim]``; not needed with ``cache``.
            cache: per-rollout cache with the text K/V; a causal cache also supplies the
                earlier blocks' self-attention K/V and the RoPE frame offset. The forward
                writes this block's K/V only into the cache's scratch slot; call
                ``cache.commit`` to keep them (the finalize step).
            self_attn_mask: optional boolean ``[L, L]`` self-attention mask
                (see :func:`~framestream.models.wan.transformer.attention.block_causal_mask`).
            start_frame: RoPE frame offset (defaults to ``cache.frames_seen`` or 0).
            parallel: context parallelism (a
                :class:`~framestream.models.wan.transformer.parallel.DiTParallel`): this rank
                runs the blocks on its token shard and the output is gathered; None = one process.
        """
        b, _, f, h, w = hidden_states.shape
        pt, ph, pw = self.arch.patch_size
        if f % pt or h % ph or w % pw:
            raise ValueError(f"latent {tuple(hidden_states.shape)} is not divisible by patch_size {self.arch.patch_size}")
        grid = (f // pt, h // ph, w // pw)

        if cache is not None:
            cross_k, cross_v = cache.cross_k, cache.cross_v
            if cache.batch_size != b:
                raise ValueError(f"cache was built for batch {cache.batch_size}, latent has batch {b}")
        else:
            if encoder_hidden_states is None:
                raise ValueError("pass encoder_hidden_states or a cache holding the text keys / values")
            cross_k, cross_v = self.cross_attention_kv(encoder_hidden_states)
        causal = cache is not None and cache.causal
        if start_frame is None:
            start_frame = cache.frames_seen if causal else 0
        shards = parallel.shard(grid) if parallel is not None else None
        frame_tokens = shards.cache_tokens_per_frame if shards is not None else grid[1] * grid[2]
        if causal and frame_tokens != cache.tokens_per_frame:
            raise ValueError(f"latent frame has {frame_tokens} tokens, the cache expects {cache.tokens_per_frame}")

        rope = rope_cos_sin(
            grid,
            self.arch.rope_split,
            start_frame=start_frame,
            max_seq_len=self.arch.rope_max_seq_len,
            device=hidden_states.device,
        )
        x = self.patch_embedding(hidden_states.to(self.dtype)).flatten(2).transpose(1, 2).contiguous()
        temb, modulation = self.time_embedding(timestep, b, tokens=x.shape[1])
        if shards is not None:  # context parallelism: this rank's tokens and their RoPE positions only
            x, rope = shards.split(x), shards.split_rope(*rope)

        for index, block in enumerate(self.blocks):
            self_kv = None
            if causal:
                self_kv = (lambda k, v, layer=index: cache.attend_kv(layer, k, v))
            attend = shards.self_attention if shards is not None else None
            x = block(x, modulation, rope, (cross_k[index], cross_v[index]), self_kv, self_attn_mask, attend)

        shift, scale = (self.scale_shift_table.float()[:, None] + temb[:, :, None]).unbind(2)
        x = modulate(self.norm_out(x.float()), scale, shift).type_as(x)
        x = self.proj_out(x)
        if shards is not None:
            x = shards.gather(x)
        return self.unpatchify(x, grid)

    def unpatchify(self, x: torch.Tensor, grid: tuple[int, int, int]) -> torch.Tensor:
        """``[B, L, C*pt*ph*pw] -> [B, C, F*pt, H*ph, W*pw]`` (patch dims before channels in each token)."""
        b = x.shape[0]
        f, h, w = grid
        pt, ph, pw = self.arch.patch_size
        x = x.reshape(b, f, h, w, pt, ph, pw, -1)
        x = x.permute(0, 7, 1, 4, 2, 5, 3, 6)
        return x.reshape(b, -1, f * pt, h * ph, w * pw)


# =============================================================================== adapter
class WanTransformer(Transformer[WanKVCache]):
    """Wan DiT behind the pipeline's :class:`~framestream.diffusion.transformer.Transformer` interface.

    - ``latent_shape``: ``(batch_size, in_channels, num_frames, height, width)`` from the config.
    - Patchify hooks: identity (the DiT patchifies internally; no context parallelism).
    - ``initialize_autoregressive_cache(text_embeddings=..., negative_text_embeddings=...,
      prompt=..., negative_prompt=...)``: builds a :class:`WanKVCache` with the text K/V
      (prompts go through ``context_encoder``) and, when causal, the preallocated
      self-attention KV buffers.
    - ``predict_flow`` never modifies cached frames; ``finalize_kv_cache`` runs the clean
      (context-noise) block through the DiT and commits its K/V to the cache.
    - ``guidance_scale > 1``: cond and uncond rows are batched in one forward and combined
      as ``uncond + g * (cond - uncond)``.
    """

    config: WanTransformerConfig

    def __init__(self, config: WanTransformerConfig) -> None:
        super().__init__(config)
        if config.causal and config.arch.patch_size[0] != 1:
            raise ValueError("causal mode needs a temporal patch size of 1 (one latent frame per token frame)")
        self.dit = build_wan_dit(config)
        self.parallel: Any = None
        """Context / CFG parallelism hooks (:class:`~framestream.models.wan.transformer.parallel.DiTParallel`),
        set once by :mod:`framestream.distributed`; None = one process."""
        if config.compile:
            from framestream.utils.compile import compile_module_forward

            for block in self.dit.blocks:
                compile_module_forward(block)

    # ------------------------------------------------------------------ interface
    @property
    def latent_shape(self) -> tuple[int, ...]:
        c = self.config
        return (c.batch_size, c.arch.in_channels, c.num_frames, c.height, c.width)

    @property
    def tokens_per_frame(self) -> int:
        _, ph, pw = self.config.arch.patch_size
        return (self.config.height // ph) * (self.config.width // pw)

    @property
    def guidance(self) -> bool:
        return self.config.guidance_scale != 1.0

    def patchify_and_maybe_split_cp(self, x: Any) -> Any:
        return x

    def unpatchify_and_maybe_gather_cp(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def _encode(self, prompt: Any) -> torch.Tensor:
        if self.context_encoder is None:
            raise ValueError(
                "this WanTransformer has no context_encoder: pass text_embeddings= (and negative_text_embeddings= "
                "under guidance) to initialize_autoregressive_cache, or configure a text encoder"
            )
        return self.context_encoder(prompt)

    def _batched(self, emb: torch.Tensor, what: str) -> torch.Tensor:
        if emb.ndim == 2:
            emb = emb[None]
        b = self.config.batch_size
        if emb.shape[0] == 1 and b > 1:
            emb = emb.expand(b, -1, -1)
        if emb.shape[0] != b:
            raise ValueError(f"{what} has batch {emb.shape[0]}, the transformer is configured for batch_size={b}")
        return emb

    def initialize_autoregressive_cache(
        self,
        text_embeddings: torch.Tensor | None = None,
        negative_text_embeddings: torch.Tensor | None = None,
        prompt: str | list[str] | None = None,
        negative_prompt: str | list[str] | None = None,
        **context: Any,
    ) -> WanKVCache:
        """Fresh per-rollout cache from text embeddings ``[B, L, text_dim]`` or prompts."""
        if context:
            raise TypeError(f"unexpected rollout context {sorted(context)} for WanTransformer")
        if text_embeddings is None:
            if prompt is None:
                raise ValueError("initialize_autoregressive_cache needs text_embeddings= or prompt=")
            text_embeddings = self._encode(prompt)
        cond = self._batched(text_embeddings, "text_embeddings")
        if self.guidance:
            if negative_text_embeddings is None:
                if negative_prompt is None:
                    negative_prompt = getattr(getattr(self.context_encoder, "config", None), "negative_prompt", "")
                if isinstance(negative_prompt, str):
                    negative_prompt = [negative_prompt] * cond.shape[0]
                negative_text_embeddings = self._encode(negative_prompt)
            uncond = self._batched(negative_text_embeddings, "negative_text_embeddings")
            if uncond.shape[1] != cond.shape[1]:
                raise ValueError(f"text lengths differ: cond {cond.shape[1]} vs uncond {uncond.shape[1]}")
            cond = torch.cat([cond, uncond.to(cond.dtype)], dim=0)
        heads, tokens_per_frame = self.config.arch.num_attention_heads, self.tokens_per_frame
        if self.parallel is not None:  # this rank's CFG rows; its heads / token rows of the KV cache
            cond = self.parallel.split_cfg(cond)
            _, ph, pw = self.config.arch.patch_size
            heads, tokens_per_frame = self.parallel.cache_layout((self.config.height // ph, self.config.width // pw), heads)
        dit = self.dit
        with torch.no_grad():
            cross_k, cross_v = dit.cross_attention_kv(cond.to(dit.device))
        c = self.config
        return WanKVCache.allocate(
            cross_k,
            cross_v,
            guidance=self.guidance,
            causal=c.causal,
            heads=heads,
            head_dim=c.arch.attention_head_dim,
            tokens_per_frame=tokens_per_frame,
            block_frames=c.num_frames,
            capacity_frames=c.kv_cache_frames,
            rolling=c.rolling_kv_cache,
            sink_frames=c.sink_frames,
            dtype=dit.dtype,
            device=dit.device,
        )

    def _forward(self, noisy_latent: torch.Tensor, timestep: torch.Tensor, cache: WanKVCache) -> torch.Tensor:
        x = noisy_latent
        t = torch.as_tensor(timestep, device=x.device)
        if t.ndim < 2:  # [B, G] per-token-run timesteps keep their shape
            t = t.reshape(-1)
        if cache.guidance:
            x = torch.cat([x, x], dim=0)
            if t.shape and t.shape[0] > 1:
                t = torch.cat([t, t], dim=0)
            if self.parallel is not None:
                x, t = self.parallel.split_cfg(x), (self.parallel.split_cfg(t) if t.numel() > 1 else t)
        flow = self.dit(x, t, cache=cache, parallel=self.parallel).float()
        if cache.guidance:
            if self.parallel is not None:
                flow = self.parallel.gather_cfg(flow)
            cond, uncond = flow.chunk(2, dim=0)
            flow = uncond + self.config.guidance_scale * (cond - uncond)
        return flow.to(noisy_latent.dtype)

    def predict_flow(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: WanKVCache,
        input: Any = None,  # noqa: A002
    ) -> torch.Tensor:
        """Flow for this AR step's latent; cached frames are read, never written."""
        if input is not None:
            raise ValueError("WanTransformer (T2V) takes no per-step encoder input")
        with torch.no_grad():
            return self._forward(noisy_latent, timestep, cache)

    def finalize_kv_cache(
        self,
        noisy_latent: torch.Tensor,
        timestep: torch.Tensor,
        cache: WanKVCache,
        input: Any = None,  # noqa: A002
    ) -> None:
        """Causal: run the clean block (at the context noise) and commit its K/V. Bidirectional: no-op."""
        if not cache.causal:
            return
        with torch.no_grad():
            self._forward(noisy_latent, timestep, cache)
        cache.commit(noisy_latent.shape[2] // self.config.arch.patch_size[0])


def build_wan_dit(config: WanTransformerConfig) -> WanDiT:
    """Load the configured checkpoint, or build seeded random weights when allowed."""
    if config.checkpoint_path is not None:
        from framestream.models.wan.transformer.checkpoint import load_wan_transformer

        return load_wan_transformer(
            config.checkpoint_path,
            arch=config.arch,
            dtype=config.dtype,
            layout=config.checkpoint_layout,
            use_ema=config.use_ema,
            time_embedding_fp64=config.time_embedding_fp64,
        )
    if not config.allow_random_init:
        raise ValueError(
            "WanTransformerConfig.checkpoint_path is not set; point it at the DiT weights "
            "(or set allow_random_init=True for a randomly initialised network)"
        )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(config.init_seed)
        dit = WanDiT(config.arch, time_embedding_fp64=config.time_embedding_fp64)
    from framestream.models.wan.transformer.checkpoint import cast_wan_dit

    return cast_wan_dit(dit, config.dtype)
