"""The Wan 2.1 / 2.2 causal video VAE with explicit caches and static-shape chunking.

:class:`WanVAE`'s ``state_dict`` has exactly the keys and shapes of diffusers'
``AutoencoderKLWan`` for the same :class:`WanVAEArchConfig`. It keeps no stream
state: every call takes a :class:`WanCausalCache`.

Stages (the spatial tiler runs the latent-resolution stages globally and tiles the
high-resolution ones, each tile with its own cache):

- decode: :meth:`WanVAE.decode_head` (post_quant_conv, conv_in, mid_block) then
  :meth:`WanVAE.decode_tail` (up_blocks, norm_out, SiLU, conv_out, unpatchify, clamp);
- encode: :meth:`WanVAE.encode_front` (patchify, conv_in, down_blocks) then
  :meth:`WanVAE.encode_back` (mid_block, norm_out, SiLU, conv_out, quant_conv).

Chunking: :meth:`WanVAE.decode` runs ``chunk_size`` latent frames per call, counted
from the start of the stream (the first chunk contains the first latent frame and
applies the "Rep" first-frame rule inside); :meth:`WanVAE.encode` feeds the stream's
first frame alone, then ``4*chunk_size`` frames per call. A short last chunk is
zero-padded to full size and its output trimmed; only real frames enter the cache,
so the stream can continue exactly. Results do not depend on the chunk size or on how
a video is split across calls (up to float rounding).
"""

from __future__ import annotations

import zlib
from collections.abc import Callable, Iterator
from typing import Any, NamedTuple

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.config import WanVAEArchConfig
from framestream.models.wan.vae.modules import (
    CausalConv3d,
    ChunkRun,
    Decoder,
    Encoder,
    StageHook,
    patchify,
    unpatchify,
)

__all__ = [
    "WanVAE",
    "DECODER_HEAD_PREFIXES",
    "DECODER_TAIL_PREFIXES",
    "ENCODER_FRONT_PREFIXES",
    "ENCODER_BACK_PREFIXES",
    "init_random_weights",
    "padded_latent_chunks",
    "LOGVAR_RANGE",
]

DECODER_HEAD_PREFIXES: tuple[str, ...] = ("post_quant_conv", "decoder.conv_in", "decoder.mid_block")
"""Cache slots (and parameters) of :meth:`WanVAE.decode_head`."""
DECODER_TAIL_PREFIXES: tuple[str, ...] = ("decoder.up_blocks", "decoder.norm_out", "decoder.conv_out")
"""Cache slots (and parameters) of :meth:`WanVAE.decode_tail`."""
ENCODER_FRONT_PREFIXES: tuple[str, ...] = ("encoder.conv_in", "encoder.down_blocks")
"""Cache slots (and parameters) of :meth:`WanVAE.encode_front`."""
ENCODER_BACK_PREFIXES: tuple[str, ...] = ("encoder.mid_block", "encoder.norm_out", "encoder.conv_out", "quant_conv")
"""Cache slots (and parameters) of :meth:`WanVAE.encode_back`."""

LOGVAR_RANGE = (-30.0, 20.0)
"""Clamp applied to the posterior log-variance (as diffusers' DiagonalGaussianDistribution)."""


class _Stages(NamedTuple):
    """The four chunk-stage functions of a :class:`WanVAE` (eager or compiled)."""

    decode_head: Callable[..., torch.Tensor]
    decode_tail: Callable[..., torch.Tensor]
    encode_front: Callable[..., torch.Tensor]
    encode_back: Callable[..., torch.Tensor]


_STAGE_NAMES = ("_decode_head", "_decode_tail", "_encode_front", "_encode_back")


class WanVAE(nn.Module):
    """Wan 2.1 / 2.2 VAE; ``WanVAE(arch, include_encoder=True, include_decoder=True)``.

    Works on the meta device (``with torch.device("meta"): WanVAE(arch)``). The
    compute dtype is the dtype of the input; weights stored in another dtype are cast
    on use. So fp32 latents given to a VAE with bf16 weights compute (and return) fp32,
    with the weights up-cast per call; for bf16 compute, cast the input first
    (``z.to(torch.bfloat16)``). ``framestream decode/encode`` do that cast explicitly with
    ``--dtype`` (compute) and ``--weights-dtype`` (storage), and report the compute dtype.
    """

    def __init__(self, arch: WanVAEArchConfig, include_encoder: bool = True, include_decoder: bool = True) -> None:
        super().__init__()
        if not (include_encoder or include_decoder):
            raise ValueError("WanVAE needs the encoder, the decoder or both")
        self.arch = arch
        self.has_encoder, self.has_decoder = include_encoder, include_decoder
        if include_encoder:
            self.encoder = Encoder(
                in_channels=arch.in_channels,
                dim=arch.base_dim,
                z_dim=arch.z_dim * 2,
                dim_mult=arch.dim_mult,
                num_res_blocks=arch.num_res_blocks,
                attn_scales=arch.attn_scales,
                temperal_downsample=arch.temperal_downsample,
                dropout=arch.dropout,
                is_residual=arch.is_residual,
            )
            self.quant_conv = CausalConv3d(arch.z_dim * 2, arch.z_dim * 2, 1)
        if include_decoder:
            self.post_quant_conv = CausalConv3d(arch.z_dim, arch.z_dim, 1)
            self.decoder = Decoder(
                dim=arch.decoder_dim,
                z_dim=arch.z_dim,
                dim_mult=arch.dim_mult,
                num_res_blocks=arch.num_res_blocks,
                temperal_upsample=arch.temperal_downsample[::-1],
                dropout=arch.dropout,
                out_channels=arch.out_channels,
                is_residual=arch.is_residual,
            )
        for name, module in self.named_modules():
            if isinstance(module, CausalConv3d):
                module.cache_key = name
        self._stats: dict[tuple[torch.device, torch.dtype], tuple[torch.Tensor, torch.Tensor]] = {}
        self._compiled_stages: dict[str, Callable[..., torch.Tensor]] = {}
        self.frame_slice: int | None = 1
        """Frames per slice of the full-frame-rate, full-resolution stages (decoder: after the
        last temporal upsampling; encoder: before the first temporal downsampling). Slicing a
        chunk in time is exact (causal caches) and divides those stages' activations; None
        runs each chunk whole."""

    # ------------------------------------------------------------------ compile
    def compile_chunks(self, *, mode: str | None = None, backend: str = "inductor") -> "WanVAE":
        """Run the chunk stages (decode head / tail, encode front / back) under ``torch.compile``.

        Static shapes: one graph per chunk (or tile) shape. A stream's first chunk runs
        eagerly: its caches are still empty and the first-frame rule changes its graph, so
        compiling it would cost a graph used once. Every later chunk of a stream has the
        same shapes and cache layout, so it reuses one graph (no recompilation).
        """
        from framestream.utils.compile import compile_function

        for name in _STAGE_NAMES:
            self._compiled_stages[name] = compile_function(getattr(self, name), mode=mode, backend=backend)
        return self

    def _stages(self, run: ChunkRun) -> Any:
        """The stage functions for this chunk: compiled ones once the stream has started."""
        if self._compiled_stages and not run.cache.is_empty:
            return _Stages(*(self._compiled_stages[n] for n in _STAGE_NAMES))
        return _Stages(self._decode_head, self._decode_tail, self._encode_front, self._encode_back)

    # ------------------------------------------------------------------ sizes
    @property
    def temporal_ratio(self) -> int:
        return self.arch.scale_factor_temporal

    @property
    def spatial_ratio(self) -> int:
        return self.arch.scale_factor_spatial

    def decoded_frames(self, latent_frames: int, stream_started: bool) -> int:
        """Pixel frames decoded from ``latent_frames`` at the start of a stream or later."""
        r = self.temporal_ratio
        return latent_frames * r if stream_started else 1 + (latent_frames - 1) * r

    # ------------------------------------------------------------------ latent normalisation
    def _latent_stats(self, like: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        key = (like.device, like.dtype)
        stats = self._stats.get(key)
        if stats is None:
            shape = (1, self.arch.z_dim, 1, 1, 1)
            mean = torch.tensor(self.arch.latents_mean, dtype=torch.float32).view(shape).to(like.device)
            std = torch.tensor(self.arch.latents_std, dtype=torch.float32).view(shape).to(like.device)
            stats = self._stats[key] = (mean, std)
        return stats

    def normalize_latents(self, mu: torch.Tensor) -> torch.Tensor:
        """``(mu - latents_mean) / latents_std`` per channel (the diffusion model's latent space)."""
        self._check_latent_channels(mu, "normalize_latents")
        mean, std = self._latent_stats(mu)
        return ((mu.float() - mean) / std).to(mu.dtype)

    def denormalize_latents(self, z: torch.Tensor) -> torch.Tensor:
        """Inverse of :meth:`normalize_latents`: ``z * latents_std + latents_mean``."""
        self._check_latent_channels(z, "denormalize_latents")
        mean, std = self._latent_stats(z)
        return (z.float() * std + mean).to(z.dtype)

    def _check_latent_channels(self, z: torch.Tensor, where: str) -> None:
        if z.dim() != 5 or z.shape[1] != self.arch.z_dim:
            raise ValueError(f"{where}: expected latents (B, {self.arch.z_dim}, T, h, w), got {tuple(z.shape)}")

    # ------------------------------------------------------------------ validation
    def _require(self, part: str) -> None:
        if part == "decoder" and not self.has_decoder:
            raise RuntimeError("this WanVAE was built without the decoder (include_decoder=False)")
        if part == "encoder" and not self.has_encoder:
            raise RuntimeError("this WanVAE was built without the encoder (include_encoder=False)")

    @staticmethod
    def _check_chunk_args(chunk_size: int, num_padded: int | None = None, frames: int | None = None) -> None:
        if not isinstance(chunk_size, int) or isinstance(chunk_size, bool) or chunk_size < 1:
            raise ValueError(f"chunk_size must be a positive int, got {chunk_size!r}")
        if num_padded is not None and frames is not None and not 0 <= num_padded < frames:
            raise ValueError(f"num_padded must be in [0, {frames - 1}] for a {frames}-frame chunk, got {num_padded}")

    @staticmethod
    def _check_against_cache(cache: WanCausalCache, key: str, batch: int, size: tuple[int, int], what: str) -> None:
        """A continuing stream must keep its batch size and spatial size."""
        prev = cache.get(key)
        if prev is None:
            return
        if prev.shape[0] != batch or tuple(prev.shape[-2:]) != tuple(size):
            raise ValueError(
                f"{what} of batch {batch} and size {tuple(size)} does not continue this cache's stream "
                f"(batch {prev.shape[0]}, size {tuple(prev.shape[-2:])}); use a fresh cache for a new stream"
            )

    def _check_latents(self, z: torch.Tensor, cache: WanCausalCache) -> None:
        if not torch.is_tensor(z) or not z.is_floating_point():
            raise ValueError("latents must be a floating-point tensor")
        if z.dim() != 5:
            raise ValueError(f"latents must be (B, C, T, h, w), got shape {tuple(z.shape)}")
        if z.shape[1] != self.arch.z_dim:
            raise ValueError(f"latents must have z_dim={self.arch.z_dim} channels, got {z.shape[1]}")
        if z.shape[2] < 1 or z.shape[3] < 1 or z.shape[4] < 1:
            raise ValueError(f"latents need at least one frame and pixel, got shape {tuple(z.shape)}")
        self._check_against_cache(cache, "decoder.conv_in", z.shape[0], tuple(z.shape[-2:]), "latents")

    def _check_video(self, x: torch.Tensor, cache: WanCausalCache) -> None:
        a = self.arch
        if not torch.is_tensor(x) or not x.is_floating_point():
            raise ValueError("video must be a floating-point tensor")
        if x.dim() != 5:
            raise ValueError(f"video must be (B, C, T, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] != a.pixel_channels:
            raise ValueError(f"video must have {a.pixel_channels} channels, got {x.shape[1]}")
        s = a.scale_factor_spatial
        if x.shape[3] % s or x.shape[4] % s or x.shape[3] < s or x.shape[4] < s:
            raise ValueError(f"video height and width must be positive multiples of {s}, got {tuple(x.shape[3:])}")
        t, r = x.shape[2], self.temporal_ratio
        if cache.started("encoder"):
            if t < r or t % r:
                raise ValueError(f"a continuing stream needs a positive multiple of {r} frames, got {t}")
        elif t < 1 or (t - 1) % r:
            raise ValueError(f"the first call of a stream needs 1 + {r}k frames, got {t}")
        p = a.patch
        patched = (x.shape[3] // p, x.shape[4] // p)
        self._check_against_cache(cache, "encoder.conv_in", x.shape[0], patched, "video (patched)")

    # ------------------------------------------------------------------ decode stages
    def _decode_head(self, z: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        return self.decoder.forward_head(self.post_quant_conv(z), run)

    def _decode_tail(self, h: torch.Tensor, run: ChunkRun, after_block: StageHook | None = None) -> torch.Tensor:
        x = self.decoder.forward_tail(h, run, after_block, self.frame_slice)
        x = unpatchify(x, self.arch.patch).clamp_(-1.0, 1.0)
        real = x.shape[2] - run.num_padded * self.temporal_ratio
        return x[:, :, :real] if run.num_padded else x

    def decode_head(
        self, z: torch.Tensor, cache: WanCausalCache, *, num_padded: int = 0, atomic: bool = True
    ) -> torch.Tensor:
        """Latent-resolution stage: post_quant_conv + conv_in + mid_block.

        Returns features ``(B, C, T, h, w)`` for all ``T`` input frames (padding
        included); ``num_padded`` trailing frames are kept out of the cache.
        """
        self._require("decoder")
        self._check_chunk_args(1, num_padded, z.shape[2])
        run = ChunkRun(cache, num_padded, atomic)
        out = self._stages(run).decode_head(z, run)
        run.commit()
        return out

    def decode_tail(
        self,
        h: torch.Tensor,
        cache: WanCausalCache,
        *,
        num_padded: int = 0,
        after_block: StageHook | None = None,
        atomic: bool = True,
    ) -> torch.Tensor:
        """High-resolution stage: up_blocks + norm_out + SiLU + conv_out + unpatchify + clamp.

        Takes :meth:`decode_head` features (or a spatial crop of them, with the crop's
        own cache) and returns pixels in [-1, 1] for the real frames only. Only
        convolutions and per-pixel norms: no coupling beyond the conv receptive field.
        ``after_block(i, x) -> x`` runs after up block ``i`` (the exact tiler crops there).
        """
        self._require("decoder")
        self._check_chunk_args(1, num_padded, h.shape[2])
        run = ChunkRun(cache, num_padded, atomic)
        out = self._stages(run).decode_tail(h, run, after_block)
        run.commit()
        return out

    def decode_chunk(
        self, z: torch.Tensor, cache: WanCausalCache, *, num_padded: int = 0, atomic: bool = True
    ) -> torch.Tensor:
        """``decode_tail(decode_head(z))`` as one step.

        ``atomic``: the cache changes only if both succeed (old and new slots coexist
        until then); ``False`` writes each slot through as soon as it is read, halving
        the cache's peak, and leaves a failed stream marked broken.
        """
        self._require("decoder")
        self._check_chunk_args(1, num_padded, z.shape[2])
        run = ChunkRun(cache, num_padded, atomic)
        stages = self._stages(run)
        out = stages.decode_tail(stages.decode_head(z, run), run)
        run.commit()
        return out

    def decode(
        self, z: torch.Tensor, *, chunk_size: int = 1, cache: WanCausalCache | None = None, atomic: bool = False
    ) -> torch.Tensor:
        """Decode latents (un-normalised, diffusers' convention) to pixels in [-1, 1].

        ``T`` latent frames give ``1 + 4(T-1)`` frames at the start of a stream, ``4T``
        when ``cache`` continues one. Runs ``chunk_size`` latent frames per model call
        (static shapes: a short last chunk is zero-padded and trimmed). ``cache`` is
        updated in place; ``None`` decodes a self-contained video. ``atomic`` is passed to
        :meth:`decode_chunk` (the default, ``False``, keeps the cache's peak at one copy).
        """
        self._require("decoder")
        self._check_chunk_args(chunk_size)
        cache = WanCausalCache() if cache is None else cache
        self._check_latents(z, cache)
        b, _, t, h, w = z.shape
        n_out = self.decoded_frames(t, cache.started("decoder"))
        s = self.spatial_ratio
        out = z.new_empty(b, self.arch.output_pixel_channels, n_out, h * s, w * s)
        pos = 0
        for _, chunk, pad in padded_latent_chunks(z, chunk_size):
            frames = self.decode_chunk(chunk, cache, num_padded=pad, atomic=atomic)
            out[:, :, pos : pos + frames.shape[2]] = frames
            pos += frames.shape[2]
        assert pos == n_out, (pos, n_out)
        return out

    # ------------------------------------------------------------------ encode stages
    def _encode_front(self, x: torch.Tensor, run: ChunkRun, after_block: StageHook | None = None) -> torch.Tensor:
        return self.encoder.forward_front(patchify(x, self.arch.patch), run, after_block, self.frame_slice)

    def _encode_back(self, h: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        moments = self.quant_conv(self.encoder.forward_back(h, run))
        return moments[:, :, : moments.shape[2] - run.num_padded] if run.num_padded else moments

    def encode_front(
        self,
        x: torch.Tensor,
        cache: WanCausalCache,
        *,
        num_padded: int = 0,
        after_block: StageHook | None = None,
        atomic: bool = True,
    ) -> torch.Tensor:
        """High-resolution stage: patchify + conv_in + down_blocks.

        ``x`` is a pixel chunk (the stream's first frame alone, or ``4k`` frames);
        ``num_padded`` counts trailing zero *latent* frames (``4*num_padded`` pixel
        frames). Returns latent-resolution features for all frames, padding included.
        ``after_block(i, x) -> x`` runs after ``encoder.down_blocks[i]`` (the exact tiler crops there).
        """
        self._require("encoder")
        self._check_chunk_args(1, num_padded, max(1, x.shape[2] // self.temporal_ratio))
        run = ChunkRun(cache, num_padded, atomic)
        out = self._stages(run).encode_front(x, run, after_block)
        run.commit()
        return out

    def encode_back(
        self, h: torch.Tensor, cache: WanCausalCache, *, num_padded: int = 0, atomic: bool = True
    ) -> torch.Tensor:
        """Latent-resolution stage: mid_block + norm_out + SiLU + conv_out + quant_conv.

        Returns the posterior moments ``(B, 2*z_dim, T, h, w)`` (mean, then raw
        log-variance) for the real latent frames only.
        """
        self._require("encoder")
        self._check_chunk_args(1, num_padded, h.shape[2])
        run = ChunkRun(cache, num_padded, atomic)
        out = self._stages(run).encode_back(h, run)
        run.commit()
        return out

    def encode_chunk(
        self, x: torch.Tensor, cache: WanCausalCache, *, num_padded: int = 0, atomic: bool = True
    ) -> torch.Tensor:
        """``encode_back(encode_front(x))`` as one step: the cache changes only if both succeed."""
        self._require("encoder")
        self._check_chunk_args(1, num_padded, max(1, x.shape[2] // self.temporal_ratio))
        run = ChunkRun(cache, num_padded, atomic)
        stages = self._stages(run)
        out = stages.encode_back(stages.encode_front(x, run), run)
        run.commit()
        return out

    def encode_moments(
        self, x: torch.Tensor, *, chunk_size: int = 1, cache: WanCausalCache | None = None, atomic: bool = False
    ) -> torch.Tensor:
        """Posterior moments ``(B, 2*z_dim, T', h, w)`` of a video in [-1, 1] (see :meth:`encode`)."""
        self._require("encoder")
        self._check_chunk_args(chunk_size)
        cache = WanCausalCache() if cache is None else cache
        self._check_video(x, cache)
        r, s = self.temporal_ratio, self.spatial_ratio
        b, _, t, hh, ww = x.shape
        started = cache.started("encoder")
        n_lat = t // r if started else 1 + (t - 1) // r
        out = x.new_empty(b, 2 * self.arch.z_dim, n_lat, hh // s, ww // s)
        pos = 0
        start = 0
        if not started:  # the stream's first frame is encoded alone
            first = self.encode_chunk(x[:, :, :1], cache, atomic=atomic)
            out[:, :, :1] = first
            pos, start = 1, 1
        step = chunk_size * r
        while start < t:
            chunk = x[:, :, start : start + step]
            pad = chunk_size - chunk.shape[2] // r
            if pad:
                chunk = F.pad(chunk, (0, 0, 0, 0, 0, pad * r))
            moments = self.encode_chunk(chunk, cache, num_padded=pad, atomic=atomic)
            out[:, :, pos : pos + moments.shape[2]] = moments
            pos += moments.shape[2]
            start += step
        assert pos == n_lat, (pos, n_lat)
        return out

    def encode(
        self,
        x: torch.Tensor,
        *,
        chunk_size: int = 1,
        cache: WanCausalCache | None = None,
        return_logvar: bool = False,
        atomic: bool = False,
    ) -> torch.Tensor | tuple[torch.Tensor, torch.Tensor]:
        """Encode a video in [-1, 1] to the posterior mean (un-normalised).

        ``1 + 4k`` frames give ``1 + k`` latents at the start of a stream, ``4k``
        frames give ``k`` when ``cache`` continues one. The first frame is encoded
        alone, then ``4*chunk_size`` frames per model call (a short last chunk is
        zero-padded and trimmed). ``return_logvar=True`` also returns the clamped
        log-variance; see :meth:`sample_posterior` for a sample. ``atomic`` as in :meth:`decode`.
        """
        moments = self.encode_moments(x, chunk_size=chunk_size, cache=cache, atomic=atomic)
        z = self.arch.z_dim
        mean = moments[:, :z]
        if not return_logvar:
            return mean.contiguous()
        return mean.contiguous(), moments[:, z:].clamp(*LOGVAR_RANGE)

    @staticmethod
    def sample_posterior(
        mean: torch.Tensor, logvar: torch.Tensor, generator: torch.Generator | None = None
    ) -> torch.Tensor:
        """``mean + exp(logvar / 2) * eps`` with ``eps ~ N(0, 1)`` drawn from ``generator``."""
        device = generator.device if generator is not None else mean.device
        eps = torch.randn(mean.shape, generator=generator, device=device, dtype=torch.float32)
        return (mean.float() + torch.exp(0.5 * logvar.float()) * eps.to(mean.device)).to(mean.dtype)


def padded_latent_chunks(z: torch.Tensor, chunk_size: int) -> Iterator[tuple[int, torch.Tensor, int]]:
    """``(start, chunk, num_padded)`` for each static-shape chunk of ``chunk_size`` latent frames.

    A short last chunk is zero-padded to ``chunk_size`` frames (static shapes); ``num_padded``
    is what the chunk calls must keep out of the cache and trim from their output.
    """
    for start in range(0, z.shape[2], chunk_size):
        chunk = z[:, :, start : start + chunk_size]
        pad = chunk_size - chunk.shape[2]
        yield start, (F.pad(chunk, (0, 0, 0, 0, 0, pad)) if pad else chunk), pad


def init_random_weights(module: nn.Module, seed: int = 0) -> nn.Module:
    """Deterministic default-style init: uniform(+-1/sqrt(fan_in)) conv weights and biases, unit norms.

    Each parameter draws from its own generator seeded by ``seed`` and its name, so an
    encoder-only or decoder-only model gets the same weights as the full one.
    Parameters must not be on the meta device (use ``module.to_empty(device=...)``).
    """
    with torch.no_grad():
        for name, p in module.named_parameters():
            if p.is_meta:
                raise ValueError(f"parameter {name!r} is on the meta device; call to_empty() first")
            if name.endswith("gamma"):
                p.fill_(1.0)
                continue
            g = torch.Generator().manual_seed((seed * 0x9E3779B1 + zlib.crc32(name.encode())) % (2**63))
            weight_name = name[: -len("bias")] + "weight" if name.endswith("bias") else name
            weight = module.get_parameter(weight_name) if weight_name != name else p
            fan_in = weight[0].numel() if weight.dim() > 1 else max(1, weight.numel())
            bound = fan_in**-0.5
            p.copy_(torch.empty(p.shape, dtype=torch.float32).uniform_(-bound, bound, generator=g))
    return module

