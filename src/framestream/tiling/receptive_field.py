"""Spatial receptive fields of the Wan VAE's local stages: derived from the modules, and measured.

The decoder tail (up blocks, norm_out, conv_out, unpatchify) and the encoder front
(patchify, conv_in, down blocks) hold only convolutions, per-pixel RMS norms, nearest
resampling and parameter-free space/channel shuffles. An output position therefore
depends on a bounded window of input positions, and the exact tiler
(:mod:`framestream.tiling.wan_exact`) gives each tile exactly the context that window
needs.

Derivation. :func:`tail_needs` / :func:`front_needs` propagate an interval of output
positions backwards through the actual modules of a model (one spatial axis; kernels
are square) and return the input interval it needs, plus the interval needed after
every block (used to crop the halo between stages). The rules, per module:

- ``CausalConv3d`` (kernel ``k``, stride ``s``, spatial padding ``p``): ``[lo*s-p, hi*s-p+k-1]``;
- ``Resample`` up: a 3x3 "same" conv after a nearest 2x resize: ``[(lo-1)//2, (hi+1)//2]``;
  down: right/bottom zero pad by one then a stride-2 3x3 conv: ``[2*lo, 2*hi+2]``;
- ``DupUp3D`` / nearest resize by ``f``: ``[lo//f, hi//f]``; ``AvgDown3D``: ``[lo*f, hi*f+f-1]``;
- residual blocks: the union of the main path and the shortcut; norms and SiLU: identity;
- (un)patchify by ``p``: like ``DupUp3D`` / ``AvgDown3D``;
- an attention block is global: the stage cannot be tiled exactly (``ValueError``).

Measurement. :func:`measure_decoder_receptive_field` / :func:`measure_encoder_receptive_field`
build a probe model with the same layout (narrow, float32, seeded random weights, **all
biases zero**) and run the real forward on an input that is zero except at one position.
With zero biases, zero stays zero through every layer (RMS norm of a zero vector is
zero, SiLU(0) = 0), so the output is non-zero exactly where the perturbation reaches:
the support *is* the dependency cone, however small the influence at its edge. (A
random-input perturbation test would miss the cone's edge: the farthest pixel is
reached by a single path of corner taps, an influence far below float rounding. Here
nothing drowns it, and it cannot underflow: every RMS norm rescales small vectors by
up to 1e12, its epsilon.) Zero padding at the frame borders is then
indistinguishable from the zero background, so thin strips (one latent row or column)
measure each axis. The probe runs several chunks through the causal cache, with the
perturbation in the first chunk and (a separate batch row) in a later one, so the
reach through cached frames is measured too: it is the same as within a chunk, since a
path through the cache still crosses each layer once.

Units: a :class:`ReceptiveField` counts *fine* pixels (decoder output pixels, encoder
input pixels) around the ``scale x scale`` pixel block of one latent cell.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.config import WanVAEArchConfig, reduced_width
from framestream.models.wan.vae.model import WanVAE, init_random_weights
from framestream.models.wan.vae.modules import (
    AttentionBlock,
    AvgDown3D,
    CausalConv3d,
    Decoder,
    DupUp3D,
    Encoder,
    Resample,
    ResidualBlock,
    ResidualDownBlock,
    ResidualUpBlock,
    UpBlock,
)

__all__ = [
    "NotLocalError",
    "ReceptiveField",
    "tail_needs",
    "tail_resnet_needs",
    "front_needs",
    "decoder_block_scales",
    "encoder_block_scales",
    "derive_decoder_receptive_field",
    "derive_encoder_receptive_field",
    "measure_decoder_receptive_field",
    "measure_encoder_receptive_field",
]

_PROBE_DTYPE = torch.float32

Interval = tuple[int, int]
"""Inclusive ``(lo, hi)`` positions along one spatial axis, in a stage's own grid."""


class NotLocalError(ValueError):
    """A stage contains a global operator (attention) and cannot be tiled exactly."""


def _union(a: Interval, b: Interval) -> Interval:
    return (min(a[0], b[0]), max(a[1], b[1]))


def _need(m: nn.Module | None, iv: Interval) -> Interval:
    """Input interval that output interval ``iv`` of module ``m`` depends on (one spatial axis)."""
    lo, hi = iv
    if m is None:
        return iv
    if isinstance(m, CausalConv3d):
        (_, kh, kw), (_, sh, sw), (_, ph, pw) = m.kernel_size, m.stride, m.spatial_padding
        if (kh, sh, ph) != (kw, sw, pw):
            raise ValueError(f"{m.cache_key or 'conv'}: non-square spatial kernel/stride/padding is not supported")
        return (lo * sh - ph, hi * sh - ph + kh - 1)
    if isinstance(m, ResidualBlock):
        main = _need(m.conv1, _need(m.conv2, iv))
        return _union(main, _need(m.conv_shortcut, iv))
    if isinstance(m, Resample):
        k = m.resample[1].kernel_size
        if m.mode.startswith("up"):
            p = k // 2  # "same" conv after the nearest 2x resize
            return ((lo - p) // 2, (hi - p + k - 1) // 2)
        return (2 * lo, 2 * hi + k - 1)  # ZeroPad2d(0, 1, 0, 1), then stride 2, no padding
    if isinstance(m, DupUp3D):
        f = m.factor_s
        return (lo // f, hi // f)
    if isinstance(m, AvgDown3D):
        f = m.factor_s
        return (lo * f, hi * f + f - 1)
    if isinstance(m, UpBlock):
        for u in reversed(list(m.upsamplers or [])):
            iv = _need(u, iv)
        for r in reversed(list(m.resnets)):
            iv = _need(r, iv)
        return iv
    if isinstance(m, ResidualUpBlock):
        main = _need(m.upsampler, iv)
        for r in reversed(list(m.resnets)):
            main = _need(r, main)
        return _union(main, _need(m.avg_shortcut, iv))
    if isinstance(m, ResidualDownBlock):
        main = _need(m.downsampler, iv)
        for r in reversed(list(m.resnets)):
            main = _need(r, main)
        return _union(main, _need(m.avg_shortcut, iv))
    if isinstance(m, AttentionBlock):
        raise NotLocalError("an attention block couples every position of a frame: this stage cannot be tiled exactly")
    raise TypeError(f"no receptive-field rule for {type(m).__name__}")


def _block_up(m: nn.Module) -> int:
    if isinstance(m, UpBlock):
        return 2 if m.upsamplers is not None else 1
    if isinstance(m, ResidualUpBlock):
        return 2 if m.upsampler is not None else 1
    raise TypeError(f"unexpected decoder block {type(m).__name__}")


def _block_down(m: nn.Module) -> int:
    if isinstance(m, Resample):
        return 2
    if isinstance(m, ResidualDownBlock):
        return 2 if m.downsampler is not None else 1
    if isinstance(m, (ResidualBlock, AttentionBlock)):
        return 1
    raise TypeError(f"unexpected encoder block {type(m).__name__}")


def _decoder(vae: WanVAE) -> Decoder:
    if not getattr(vae, "has_decoder", False):
        raise ValueError("this WanVAE has no decoder")
    return vae.decoder


def _encoder(vae: WanVAE) -> Encoder:
    if not getattr(vae, "has_encoder", False):
        raise ValueError("this WanVAE has no encoder")
    return vae.encoder


def decoder_block_scales(vae: WanVAE) -> tuple[int, ...]:
    """Spatial upsampling factor (1 or 2) of each decoder up block."""
    return tuple(_block_up(b) for b in _decoder(vae).up_blocks)


def encoder_block_scales(vae: WanVAE) -> tuple[int, ...]:
    """Spatial downsampling factor (1 or 2) of each element of the encoder's ``down_blocks``."""
    return tuple(_block_down(b) for b in _encoder(vae).down_blocks)


def tail_needs(vae: WanVAE, iv: Interval) -> tuple[Interval, tuple[Interval, ...]]:
    """Decoder tail: output pixels ``iv`` (after unpatchify) -> (tail input interval in latents,
    interval needed at the output of every up block)."""
    cur, after, _ = tail_resnet_needs(vae, iv)
    return cur, after


def tail_resnet_needs(
    vae: WanVAE, iv: Interval
) -> tuple[Interval, tuple[Interval, ...], tuple[tuple[Interval, ...], ...]]:
    """:func:`tail_needs` plus, per up block, the interval needed at the output of each of its
    residual blocks (in the block's input grid). Empty for blocks whose shortcut reads the
    block's input (Wan 2.2's ``ResidualUpBlock``): cropping inside them would misalign it."""
    dec = _decoder(vae)
    p = vae.arch.patch
    cur = (iv[0] // p, iv[1] // p)
    cur = _need(dec.conv_out, cur)  # norm_out and SiLU are per pixel
    after: list[Interval] = []
    inner: list[tuple[Interval, ...]] = []
    for block in reversed(list(dec.up_blocks)):
        after.append(cur)
        if isinstance(block, UpBlock):
            for u in reversed(list(block.upsamplers or [])):
                cur = _need(u, cur)
            needs = []
            for r in reversed(list(block.resnets)):
                needs.append(cur)
                cur = _need(r, cur)
            inner.append(tuple(reversed(needs)))
        else:
            inner.append(())
            cur = _need(block, cur)
    return cur, tuple(reversed(after)), tuple(reversed(inner))


def front_needs(vae: WanVAE, iv: Interval) -> tuple[Interval, tuple[Interval, ...]]:
    """Encoder front: latent cells ``iv`` of the front's output -> (input pixel interval,
    interval needed at the output of every element of ``down_blocks``)."""
    enc = _encoder(vae)
    p = vae.arch.patch
    cur = iv
    after: list[Interval] = []
    for block in reversed(list(enc.down_blocks)):
        after.append(cur)
        cur = _need(block, cur)
    cur = _need(enc.conv_in, cur)
    return (cur[0] * p, cur[1] * p + p - 1), tuple(reversed(after))


@dataclass(frozen=True)
class ReceptiveField:
    """Reach of a local stage in fine pixels around one latent cell's ``scale x scale`` block.

    - ``kind="decoder"``: a latent cell of the tail input changes output pixels up to
      ``before`` pixels above/left of its block and ``after`` pixels below/right of it;
    - ``kind="encoder"``: a latent cell of the front output depends on input pixels up to
      ``before`` pixels above/left of its block and ``after`` below/right.

    ``before``/``after`` are (height, width) pairs. ``chunks`` is how many chunks the
    measurement ran through the causal cache (0 for a derived field).
    """

    kind: str
    scale: int
    before: tuple[int, int]
    after: tuple[int, int]
    chunks: int = 0

    @property
    def radius_px(self) -> int:
        """Largest reach in fine pixels."""
        return max(*self.before, *self.after)

    @property
    def radius_latents(self) -> float:
        """Largest reach in latent units (e.g. 12.25 for the Wan 2.1 decoder tail)."""
        return self.radius_px / self.scale

    def halo_cells(self) -> tuple[tuple[int, int], tuple[int, int]]:
        """Latent cells of context a tile needs on each side: ((top, bottom), (left, right)).

        For the decoder a cell *above* a tile reaches down into it (``after``); for the
        encoder a tile's cells reach up into the pixels above it (``before``).
        """
        s = self.scale
        if self.kind == "decoder":
            return tuple((math.ceil(a / s), math.ceil(b / s)) for a, b in zip(self.after, self.before))  # type: ignore[return-value]
        return tuple((math.ceil(b / s), math.ceil(a / s)) for b, a in zip(self.before, self.after))  # type: ignore[return-value]

    def __str__(self) -> str:
        return (
            f"{self.kind} receptive field: before {self.before} px, after {self.after} px "
            f"(radius {self.radius_latents:g} latents at {self.scale} px/latent), halo cells {self.halo_cells()}"
        )


def _as_vae(vae_or_arch: WanVAE | WanVAEArchConfig, part: str) -> WanVAE:
    if isinstance(vae_or_arch, WanVAE):
        return vae_or_arch
    if isinstance(vae_or_arch, WanVAEArchConfig):
        with torch.device("meta"):
            return WanVAE(vae_or_arch, include_encoder=part == "encoder", include_decoder=part == "decoder")
    raise TypeError(f"expected a WanVAE or a WanVAEArchConfig, got {type(vae_or_arch).__name__}")


def derive_decoder_receptive_field(vae_or_arch: WanVAE | WanVAEArchConfig) -> ReceptiveField:
    """The decoder tail's receptive field by interval propagation through its modules (no compute)."""
    vae = _as_vae(vae_or_arch, "decoder")
    s = vae.arch.scale_factor_spatial
    c = 256  # any cell far from the borders: the rules are translation invariant up to the grid phase
    lo, hi = tail_needs(vae, (s * c, s * c + s - 1))[0]
    reach = s * max(c - lo, hi - c, 1)  # a cell reaches no farther than a cell's block needs
    ys = []
    for y in range(s * c - reach - s, s * c + s + reach + s):
        (a, b), _ = tail_needs(vae, (y, y))
        if a <= c <= b:
            ys.append(y)
    before, after = s * c - min(ys), max(ys) - (s * c + s - 1)
    return ReceptiveField("decoder", s, (before, before), (after, after))


def derive_encoder_receptive_field(vae_or_arch: WanVAE | WanVAEArchConfig) -> ReceptiveField:
    """The encoder front's receptive field by interval propagation through its modules (no compute)."""
    vae = _as_vae(vae_or_arch, "encoder")
    s = vae.arch.scale_factor_spatial
    c = 256
    (lo, hi), _ = front_needs(vae, (c, c))
    before, after = s * c - lo, hi - (s * c + s - 1)
    return ReceptiveField("encoder", s, (before, before), (after, after))


# ---------------------------------------------------------------------------- measurement
def _probe(arch: WanVAEArchConfig, part: str, probe_base_dim: int | None, seed: int) -> WanVAE:
    """Same layout, narrow, float32, random weights, zero biases (zero stays zero)."""
    if probe_base_dim is not None:
        arch = reduced_width(arch, probe_base_dim)
    probe = WanVAE(arch, include_encoder=part == "encoder", include_decoder=part == "decoder")
    init_random_weights(probe, seed)
    probe = probe.to(_PROBE_DTYPE).eval()
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return probe


def _span(mask: torch.Tensor) -> tuple[int, int] | None:
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        return None
    return int(idx.min()), int(idx.max())


def _arch_of(vae_or_arch: WanVAE | WanVAEArchConfig) -> WanVAEArchConfig:
    if isinstance(vae_or_arch, WanVAE):
        return vae_or_arch.arch
    if isinstance(vae_or_arch, WanVAEArchConfig):
        return vae_or_arch
    raise TypeError(f"expected a WanVAE or a WanVAEArchConfig, got {type(vae_or_arch).__name__}")


def measure_decoder_receptive_field(
    vae_or_arch: WanVAE | WanVAEArchConfig,
    *,
    chunks: int = 3,
    chunk_size: int = 1,
    probe_base_dim: int | None = 8,
    seed: int = 0,
) -> ReceptiveField:
    """Measure the decoder tail's reach by perturbing one latent cell of its input (see module doc).

    Runs ``chunks`` chunks of ``chunk_size`` latent frames through the tail's causal
    cache on a probe model of the same layout (width ``probe_base_dim``; ``None`` keeps
    the model's width). Batch row 0 is perturbed in the first frame of the first chunk,
    row 1 in the first frame of the second chunk; the reach is the union over every
    output frame of every chunk.
    """
    if chunks < 1 or chunk_size < 1:
        raise ValueError("chunks and chunk_size must be >= 1")
    arch = _arch_of(vae_or_arch)
    probe = _probe(arch, "decoder", probe_base_dim, seed)
    derived = derive_decoder_receptive_field(probe)
    s = arch.scale_factor_spatial
    span = math.ceil(derived.radius_px / s) + 4  # latent cells each side: the cone never hits the strip ends
    length, c = 2 * span + 1, span
    channels = probe.decoder.up_blocks[0].resnets[0].in_dim
    g = torch.Generator().manual_seed(seed)
    before, after = [0, 0], [0, 0]
    with torch.no_grad():
        for axis in (0, 1):  # 0: a column strip measures the height reach, 1: a row strip the width reach
            hw = (length, 1) if axis == 0 else (1, length)
            cache = WanCausalCache()
            for k in range(chunks):
                h = torch.zeros(2, channels, chunk_size, *hw, dtype=_PROBE_DTYPE)
                value = torch.randn(channels, generator=g, dtype=_PROBE_DTYPE)
                if k == 0:
                    h[0, :, 0, c if axis == 0 else 0, c if axis == 1 else 0] = value
                if k == min(1, chunks - 1):
                    h[1, :, 0, c if axis == 0 else 0, c if axis == 1 else 0] = value
                out = probe.decode_tail(h, cache)
                changed = out.ne(0).any(dim=1).any(dim=1).any(dim=0)  # (H, W)
                sp = _span(changed.any(dim=1 - axis))
                if sp is None:
                    continue
                lo, hi = sp
                before[axis] = max(before[axis], s * c - lo)
                after[axis] = max(after[axis], hi - (s * c + s - 1))
                if lo == 0 or hi == length * s - 1:
                    raise RuntimeError("receptive-field probe: the cone reached the strip end; the derivation is off")
    return ReceptiveField("decoder", s, (before[0], before[1]), (after[0], after[1]), chunks)


def measure_encoder_receptive_field(
    vae_or_arch: WanVAE | WanVAEArchConfig,
    *,
    chunks: int = 3,
    chunk_size: int = 1,
    probe_base_dim: int | None = 8,
    seed: int = 0,
) -> ReceptiveField:
    """Measure the encoder front's reach by perturbing single input pixels (see module doc).

    One batch row per pixel phase within a latent cell (``scale`` of them), each
    perturbed in the stream's first frame, plus as many rows perturbed in the first
    frame of the second chunk; ``chunks`` chunks (the first frame alone, then
    ``4*chunk_size`` frames each) run through the front's causal cache.
    """
    if chunks < 1 or chunk_size < 1:
        raise ValueError("chunks and chunk_size must be >= 1")
    arch = _arch_of(vae_or_arch)
    probe = _probe(arch, "encoder", probe_base_dim, seed)
    derived = derive_encoder_receptive_field(probe)
    s, r = arch.scale_factor_spatial, arch.scale_factor_temporal
    span = math.ceil(derived.radius_px / s) + 4
    length, c = 2 * span + 1, span
    rows = 2 * s
    g = torch.Generator().manual_seed(seed)
    before, after = [0, 0], [0, 0]
    with torch.no_grad():
        for axis in (0, 1):
            hw = (length * s, s) if axis == 0 else (s, length * s)
            cache = WanCausalCache()
            for k in range(chunks):
                frames = 1 if k == 0 else r * chunk_size
                x = torch.zeros(rows, arch.pixel_channels, frames, *hw, dtype=_PROBE_DTYPE)
                for j in range(s):
                    value = torch.randn(arch.pixel_channels, generator=g, dtype=_PROBE_DTYPE)
                    pos = s * c + j
                    where = (pos, slice(None)) if axis == 0 else (slice(None), pos)
                    if k == 0:
                        x[(j, slice(None), 0, *where)] = value[:, None]
                    if k == min(1, chunks - 1):
                        x[(s + j, slice(None), 0, *where)] = value[:, None]
                feats = probe.encode_front(x, cache)
                for j in range(s):
                    pos = s * c + j
                    for row in (j, s + j):
                        changed = feats[row].ne(0).any(dim=0).any(dim=0)  # (h, w) latent cells
                        sp = _span(changed.any(dim=1 - axis))
                        if sp is None:
                            continue
                        lo, hi = sp
                        if lo == 0 or hi == length - 1:
                            raise RuntimeError("receptive-field probe: the cone reached the strip end; the derivation is off")
                        before[axis] = max(before[axis], s * hi - pos)
                        after[axis] = max(after[axis], pos - (s * lo + s - 1))
    return ReceptiveField("encoder", s, (before[0], before[1]), (after[0], after[1]), chunks)
