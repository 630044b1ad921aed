"""Bytes each rank sends, computed from model shapes: the formulas behind the README's multi-GPU table.

Conventions: "bytes sent" is what one rank puts on the wire for other ranks (its own
share excluded), per DiT forward (one denoising step; CFG batch included) or per VAE
decode chunk (one latent frame -> 4 video frames). The functions mirror what
:mod:`framestream.distributed.wan_dit` / :mod:`framestream.distributed.vae` send, so the
bench's measured counters must equal them on shapes whose rows split evenly.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from framestream.models.wan.transformer.config import WAN21_T2V_1_3B, WAN21_T2V_14B, WanTransformerArchConfig
from framestream.models.wan.vae.config import WAN21_VAE_ARCH, WanVAEArchConfig

__all__ = [
    "dit_tokens",
    "cp_bytes_per_step",
    "gather_bytes_per_step",
    "tile_parallel_bytes_per_chunk",
    "halo_exchange_bytes_per_chunk",
    "decoder_conv_profile",
    "ScalingAssumptions",
    "readme_tables",
]


def dit_tokens(arch: WanTransformerArchConfig, latent_fhw: tuple[int, int, int]) -> int:
    """Tokens of one DiT forward: latent frames x rows x cols after patching."""
    pt, ph, pw = arch.patch_size
    f, h, w = latent_fhw
    return (f // pt) * (h // ph) * (w // pw)


def cp_bytes_per_step(
    arch: WanTransformerArchConfig,
    tokens: int,
    batch: int,
    ulysses: int,
    ring: int,
    elem: int,
    kv_tokens: int | None = None,
) -> float:
    """Per rank and DiT forward, attention traffic of context parallelism ``ulysses x ring`` (P = their product).

    Ulysses (within groups of ``u``): every layer all-to-alls q, k, v in and the output back,
    each time sending (u-1)/u of its ``L/P`` tokens: ``4 B (L/P) C (u-1)/u``. Ring (across
    ``r`` groups, on the head shard ``C/u`` of the group's ``L/r`` tokens): every layer passes
    a K and a V block on ``r-1`` times: ``2 (r-1) B (L_kv/r) (C/u)``. ``kv_tokens``: keys per
    forward (a causal block adds its KV cache), default ``tokens``.
    """
    u, r = ulysses, ring
    p = u * r
    kv = tokens if kv_tokens is None else kv_tokens
    c = arch.inner_dim
    per_layer = 4 * batch * (tokens / p) * c * (u - 1) / u + 2 * (r - 1) * batch * (kv / r) * (c / u)
    return arch.num_layers * per_layer * elem


def gather_bytes_per_step(arch: WanTransformerArchConfig, tokens: int, batch: int, degree: int, elem: int) -> float:
    """Per rank: the output tokens (proj_out width) all-gathered once per forward."""
    p = degree
    width = arch.out_channels * arch.patch_size[0] * arch.patch_size[1] * arch.patch_size[2]
    return (p - 1) * batch * (tokens / p) * width * elem


def tile_parallel_bytes_per_chunk(frame_hw: tuple[int, int], frames: int, degree: int, elem: int, channels: int = 3) -> float:
    """All ranks together: the owned pixels of ranks 1..P-1 gathered to rank 0 (head replicated: no traffic)."""
    h, w = frame_hw
    return (degree - 1) / degree * channels * frames * h * w * elem


@dataclass(frozen=True)
class _Conv:
    channels: int
    frames: int
    scale: int  # output pixels per latent cell at this layer's resolution
    pad: int


def decoder_conv_profile(arch: WanVAEArchConfig = WAN21_VAE_ARCH) -> tuple[list[_Conv], int]:
    """Every spatial conv of the decoder in a steady-state chunk (one latent frame), and the mid-block width.

    Measured by running the real architecture on the meta device (no weights, no compute).
    """
    from framestream.models.wan.vae.cache import WanCausalCache
    from framestream.models.wan.vae.model import WanVAE

    with torch.device("meta"):
        vae = WanVAE(arch)
    convs: list[_Conv] = []
    h_latent = 4

    def hook(module, inputs, _output) -> None:
        weight = module.weight
        kernel_h = weight.shape[-2]
        if kernel_h > 1:
            x = inputs[0]
            convs.append(_Conv(int(x.shape[1]), int(x.shape[2]) if x.dim() == 5 else 1, int(x.shape[-2]) // h_latent, kernel_h // 2))

    handles = [
        m.register_forward_hook(hook)
        for m in vae.decoder.modules()
        if isinstance(getattr(m, "weight", None), torch.Tensor) and m.weight.dim() in (4, 5)
    ]
    cache = WanCausalCache()
    z = torch.empty(1, arch.z_dim, 1, h_latent, h_latent, device="meta")
    vae.decode_tail(vae.decode_head(z, cache), cache)  # first chunk: fills the caches
    convs.clear()
    vae.decode_tail(vae.decode_head(z, cache), cache)  # steady state
    for handle in handles:
        handle.remove()
    mid_width = int(vae.decode_head(z, cache).shape[1])
    return convs, mid_width


def halo_exchange_bytes_per_chunk(
    profile: tuple[list[_Conv], int], latent_hw: tuple[int, int], degree: int, elem: int, out_frames: int = 4
) -> float:
    """All ranks together, for a DistVAE-style row split: every 3x3 conv swaps ``pad`` boundary rows with
    both neighbours (P-1 boundaries), the mid-block attention all-gathers the latent frame, and the
    frames are gathered to rank 0 as ours are."""
    convs, mid_width = profile
    h, w = latent_hw
    p = degree
    halos = sum((p - 1) * 2 * c.pad * (w * c.scale) * c.channels * c.frames for c in convs) * elem
    attention = (p - 1) * mid_width * h * w * elem  # each rank's 1/P share sent to P-1 ranks
    frames = tile_parallel_bytes_per_chunk((h * 8, w * 8), out_frames, p, elem)
    return halos + attention + frames


@dataclass(frozen=True)
class ScalingAssumptions:
    """The model behind the 8-GPU scaling column (all stated in the README)."""

    gpus: int = 8
    flops_per_s: float = 400e12
    """Sustained bf16 dense FLOP/s per GPU (H100 SXM, ~40% of peak)."""
    link_bytes_per_s: float = 300e9
    """Effective per-GPU NVLink bandwidth for all-to-all / ring traffic (NVLink 4: 450 GB/s per direction)."""
    overlap: float = 0.0
    """Fraction of communication hidden behind compute (0: none, the conservative bound)."""


def dit_step_flops(arch: WanTransformerArchConfig, tokens: int, batch: int, text_tokens: int = 512) -> float:
    """Matmul FLOPs of one DiT forward (projections, attention, cross-attention, MLP)."""
    c, f = arch.inner_dim, arch.ffn_dim
    per_layer = (
        2 * tokens * 4 * c * c  # self-attention q, k, v, o
        + 4 * tokens * tokens * c  # scores and weighted sum
        + 2 * tokens * 2 * c * c  # cross-attention q, o
        + 4 * tokens * text_tokens * c
        + 2 * tokens * 2 * c * f  # MLP
    )
    return batch * arch.num_layers * per_layer


_SETTINGS = {"480p": (21, 60, 104), "720p": (21, 90, 160)}
_MODELS = {"1.3B": WAN21_T2V_1_3B, "14B": WAN21_T2V_14B}


def _best_layout(arch: WanTransformerArchConfig, degree: int) -> tuple[int, int]:
    """Largest Ulysses degree dividing both the GPU count and the head count; the ring takes the rest."""
    u = max(d for d in range(1, degree + 1) if degree % d == 0 and arch.num_attention_heads % d == 0)
    return u, degree // u


def readme_tables(degree: int = 8, assumptions: ScalingAssumptions = ScalingAssumptions(), vae_profile=None) -> str:
    """The README's two markdown tables (bf16, CFG batch 2, 81 frames = 21 latent frames)."""
    a = assumptions
    elem, batch = 2, 2
    lines = [
        f"| model | video | tokens | Ulysses {degree} GB/step/rank | ring {degree} GB/step/rank | best layout "
        f"| its GB/step/rank | 1 GPU s/step | {degree} GPUs s/step | speed-up |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    for name, arch in _MODELS.items():
        for res, fhw in _SETTINGS.items():
            tokens = dit_tokens(arch, fhw)
            gather = gather_bytes_per_step(arch, tokens, batch, degree, elem)
            uly = cp_bytes_per_step(arch, tokens, batch, degree, 1, elem) + gather
            ring = cp_bytes_per_step(arch, tokens, batch, 1, degree, elem) + gather
            u, r = _best_layout(arch, degree)
            best = cp_bytes_per_step(arch, tokens, batch, u, r, elem) + gather
            uly_cell = f"{uly / 1e9:.2f}" if u == degree else f"n/a ({arch.num_attention_heads} heads)"
            one = dit_step_flops(arch, tokens, batch) / a.flops_per_s
            many = one / degree + (1 - a.overlap) * best / a.link_bytes_per_s
            lines.append(
                f"| {name} | {res} | {tokens} | {uly_cell} | {ring / 1e9:.2f} | ulysses {u} x ring {r} | {best / 1e9:.2f} "
                f"| {one:.2f} | {many:.3f} | {one / many:.1f}x |"
            )
    profile = vae_profile if vae_profile is not None else decoder_conv_profile()
    lines += [
        "",
        "| video | tile-parallel MB/chunk (frames gathered) | halo exchange MB/chunk | ratio |",
        "|---|---|---|---|",
    ]
    for res, (_, h, w) in _SETTINGS.items():
        ours = tile_parallel_bytes_per_chunk((h * 8, w * 8), 4, degree, elem)
        halo = halo_exchange_bytes_per_chunk(profile, (h, w), degree, elem)
        lines.append(f"| {res} ({h * 8}x{w * 8}) | {ours / 1e6:.1f} | {halo / 1e6:.1f} | {halo / ours:.1f}x |")
    return "\n".join(lines)
