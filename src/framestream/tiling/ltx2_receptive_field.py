"""Dependency rules of the LTX-2 VAE's layers, per axis: derived from the modules, and measured.

The LTX-2 VAE has no attention: every step of its encoder and decoder (see
:meth:`~framestream.models.ltx2.vae.modules.Encoder.steps`) is a composition of

- ``conv``: a stride-1 convolution, output ``y`` reads input ``[y - before, y + after]``
  (space: ``before = after = k//2``; time: ``k-1`` frames before when causal, ``(k-1)/2``
  each side when not);
- ``down(s)``: space-to-depth (and patchify), output ``y`` reads ``[s*y, s*y + s - 1]``;
- ``up(s, drop)``: depth-to-space (and unpatchify) dropping the first ``drop`` outputs,
  output ``j`` reads input ``(j + drop) // s``; a window ``[a, b)`` yields ``[s*a, s*b - drop)``;

and pointwise operations (RMS norm, LayerNorm, SiLU, timestep scale/shift, 1x1 shortcuts).
:func:`encoder_program` / :func:`decoder_program` turn a model into one :class:`AxisProgram`
per axis (time or space), from its actual modules; :mod:`framestream.tiling.ltx2_exact` plans
exact tiles with them.

Measurement (:func:`measure_ltx2_receptive_field`) builds a probe with the same layout
(float32, seeded random weights, **all biases zero**, no timestep conditioning) and feeds a
strip that is zero except at one latent cell (decoder) or one pixel (encoder): zero stays
zero through every layer (RMS norm of a zero vector is zero, SiLU(0) = 0, reflect or
replicate padding of zeros is zero), so the output's support *is* the dependency cone.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass

import torch
import torch.nn as nn

from framestream.models.ltx2.vae.config import LTX2VAEArchConfig
from framestream.models.ltx2.vae.model import LTX2VAE, init_random_weights
from framestream.models.ltx2.vae.modules import CausalConv3d, Downsampler, ResnetBlock, Upsampler

__all__ = [
    "Op",
    "AxisProgram",
    "encoder_program",
    "decoder_program",
    "LTX2ReceptiveField",
    "derive_ltx2_receptive_field",
    "measure_ltx2_receptive_field",
]


@dataclass(frozen=True)
class Op:
    """One primitive along one axis: ``kind`` is ``conv`` (``a``/``b``: reach before/after),
    ``down`` (``a``: factor) or ``up`` (``a``: factor, ``b``: outputs dropped at the start)."""

    kind: str
    a: int
    b: int = 0

    def need(self, lo: int, hi: int, window: bool = True) -> tuple[int, int]:
        """Input interval (inclusive) that outputs ``[lo, hi]`` depend on; with ``window`` (the default),
        the interval a window must hold to *produce* them: an ``up`` that drops its first outputs
        only yields output ``lo`` from a window starting at ``lo // s`` or before."""
        if self.kind == "conv":
            return lo - self.a, hi + self.b
        if self.kind == "down":
            return lo * self.a, hi * self.a + self.a - 1
        return (lo if window else lo + self.b) // self.a, (hi + self.b) // self.a

    def forward(self, start: int, end: int) -> tuple[int, int]:
        """Output window ``[start, end)`` of an input window (same-padded convs keep their size)."""
        if self.kind == "conv":
            return start, end
        if self.kind == "down":
            if start % self.a or end % self.a:
                raise ValueError(f"window [{start}, {end}) is not aligned to the downsampling {self.a}")
            return start // self.a, end // self.a
        return start * self.a, end * self.a - self.b

    def length(self, n: int) -> int:
        """Output length of an input of length ``n``."""
        return self.forward(0, n)[1]


@dataclass(frozen=True)
class AxisProgram:
    """The primitives of every step along one axis; ``hooked[i]``: the step's output passes
    the model's ``after_step`` hook (index ``hook_index[i]``) and may be cropped there."""

    steps: tuple[tuple[Op, ...], ...]
    hook_index: tuple[int | None, ...]

    def lengths(self, n: int) -> tuple[int, ...]:
        """Axis length at the input and after every step."""
        out = [n]
        for ops in self.steps:
            for op in ops:
                n = op.length(n)
            out.append(n)
        return tuple(out)

    def step_need(self, k: int, lo: int, hi: int, window: bool = True) -> tuple[int, int]:
        for op in reversed(self.steps[k]):
            lo, hi = op.need(lo, hi, window)
        return lo, hi

    def step_forward(self, k: int, start: int, end: int) -> tuple[int, int]:
        for op in self.steps[k]:
            start, end = op.forward(start, end)
        return start, end

    def alignment(self) -> tuple[int, ...]:
        """Downsampling still ahead at the input and after every step (windows must be multiples of it)."""
        out, f = [], 1
        for ops in reversed(self.steps):
            out.append(f)
            for op in ops:
                if op.kind == "down":
                    f *= op.a
        out.append(f)
        return tuple(reversed(out))

    def needs(
        self, lo: int, hi: int, lengths: tuple[int, ...], window: bool = True
    ) -> tuple[tuple[int, int], ...]:
        """Needed interval (inclusive, clipped to the axis) at the input and after every step for final
        outputs ``[lo, hi]`` (``window``: see :meth:`Op.need`)."""
        out = [(max(lo, 0), min(hi, lengths[-1] - 1))]
        for k in reversed(range(len(self.steps))):
            lo, hi = self.step_need(k, lo, hi, window)
            out.append((max(lo, 0), min(hi, lengths[k] - 1)))
        return tuple(reversed(out))


def _conv_ops(conv: CausalConv3d, axis: str, causal: bool) -> tuple[Op, ...]:
    kt, kh, kw = conv.kernel_size
    if axis == "space":
        if kh != kw:
            raise ValueError("non-square spatial kernels are not supported")
        return (Op("conv", kh // 2, kh // 2),)
    if causal:
        return (Op("conv", kt - 1, 0),)
    return (Op("conv", (kt - 1) // 2, (kt - 1) // 2),)


def _step_ops(m: nn.Module, axis: str, causal: bool) -> tuple[Op, ...]:
    if isinstance(m, CausalConv3d):
        return _conv_ops(m, axis, causal)
    if isinstance(m, ResnetBlock):
        return _conv_ops(m.conv1, axis, causal) + _conv_ops(m.conv2, axis, causal)  # the shortcut is 1x1
    if isinstance(m, Downsampler):
        st, sh, _ = m.stride
        if axis == "time" and st > 1:
            raise NotImplementedError("the encoder is not tiled in time (its temporal downsamplers prepend the first frame)")
        s = sh if axis == "space" else st
        return _conv_ops(m.conv, axis, causal) + ((Op("down", s),) if s > 1 else ())
    if isinstance(m, Upsampler):
        st, sh, _ = m.stride
        s = sh if axis == "space" else st
        drop = 0 if axis == "space" else st - 1
        return _conv_ops(m.conv, axis, causal) + ((Op("up", s, drop),) if s > 1 or drop else ())
    raise TypeError(f"no dependency rule for {type(m).__name__}")


def _check_axis(axis: str) -> None:
    if axis not in ("space", "time"):
        raise ValueError(f"axis must be 'space' or 'time', got {axis!r}")


def encoder_program(vae: LTX2VAE, axis: str = "space") -> AxisProgram:
    """The encoder along one axis, patchify first (no hook), then one step per module of ``encoder.steps()``."""
    _check_axis(axis)
    if not vae.has_encoder:
        raise ValueError("this LTX2VAE has no encoder")
    causal = vae.arch.encoder_causal
    steps = [(Op("down", vae.arch.patch_size),) if axis == "space" else ()]
    steps += [_step_ops(m, axis, causal) for m in vae.encoder.steps()]
    return AxisProgram(tuple(steps), (None, *range(len(steps) - 1)))


def decoder_program(vae: LTX2VAE, axis: str = "space") -> AxisProgram:
    """The decoder along one axis: one step per module of ``decoder.steps()``, then unpatchify (no hook)."""
    _check_axis(axis)
    if not vae.has_decoder:
        raise ValueError("this LTX2VAE has no decoder")
    causal = vae.arch.decoder_causal
    steps = [_step_ops(m, axis, causal) for m in vae.decoder.steps()]
    steps.append((Op("up", vae.arch.patch_size),) if axis == "space" else ())
    return AxisProgram(tuple(steps), (*range(len(steps) - 1), None))


@dataclass(frozen=True)
class LTX2ReceptiveField:
    """Reach of one latent cell, in latent units (fractions where a fine unit is part of a cell).

    ``kind="decoder"``: a latent cell changes output pixels/frames up to ``before`` latents before it
    and ``after`` after it (output units / ratio). ``kind="encoder"``: a latent cell depends on input
    pixels up to ``before`` / ``after`` latents away. ``space`` and ``time`` are (before, after) pairs;
    ``time`` is None for the encoder (not tiled in time).
    """

    kind: str
    space: tuple[float, float]
    time: tuple[float, float] | None
    measured: bool = False

    def halo_cells(self) -> tuple[int, int]:
        """Whole latent cells of spatial context a tile needs on each side."""
        return math.ceil(self.space[0]), math.ceil(self.space[1])

    def __str__(self) -> str:
        how = "measured" if self.measured else "derived"
        t = "" if self.time is None else f", time {self.time[0]:g}/{self.time[1]:g} latent frames"
        return f"LTX-2 {self.kind} receptive field ({how}): space {self.space[0]:g}/{self.space[1]:g} latents{t}"


def _vae_of(vae_or_arch: LTX2VAE | LTX2VAEArchConfig, part: str) -> LTX2VAE:
    if isinstance(vae_or_arch, LTX2VAE):
        return vae_or_arch
    if isinstance(vae_or_arch, LTX2VAEArchConfig):
        with torch.device("meta"):
            return LTX2VAE(vae_or_arch, include_encoder=part == "encoder", include_decoder=part == "decoder")
    raise TypeError(f"expected an LTX2VAE or an LTX2VAEArchConfig, got {type(vae_or_arch).__name__}")


def _decoder_reach(program: AxisProgram, scale_out: int, first: int, n_latents: int, center: int) -> tuple[float, float]:
    """Output positions whose need contains latent ``center``: reach before/after its own outputs, in latents."""
    lengths = program.lengths(n_latents)
    hit = []
    for y in range(lengths[-1]):
        lo, hi = program.needs(y, y, lengths, window=False)[0]
        if lo <= center <= hi:
            hit.append(y)
    own_lo = max(0, center * scale_out - first)
    own_hi = center * scale_out - first + scale_out - 1
    return (own_lo - min(hit)) / scale_out, (max(hit) - own_hi) / scale_out


def derive_ltx2_receptive_field(vae_or_arch: LTX2VAE | LTX2VAEArchConfig, part: str = "decoder") -> LTX2ReceptiveField:
    """The receptive field from the layers (interval propagation, no compute)."""
    if part not in ("decoder", "encoder"):
        raise ValueError(f"part must be 'decoder' or 'encoder', got {part!r}")
    vae = _vae_of(vae_or_arch, part)
    s, r = vae.spatial_ratio, vae.temporal_ratio
    if part == "decoder":
        space = decoder_program(vae, "space")
        n = 2 * _radius(space, s, True) + 9
        sp = _decoder_reach(space, s, 0, n, n // 2)
        time = decoder_program(vae, "time")
        nt = 2 * _radius(time, r, True) + 9
        tm = _decoder_reach(time, r, r - 1, nt, nt // 2)
        return LTX2ReceptiveField("decoder", sp, tm)
    space = encoder_program(vae, "space")
    c = _radius(space, s, False) + 8
    lengths = space.lengths(s * (2 * c + 1))
    lo, hi = space.needs(c, c, lengths)[0]
    return LTX2ReceptiveField("encoder", ((s * c - lo) / s, (hi - (s * c + s - 1)) / s), None)


def _radius(program: AxisProgram, scale: int, decoder: bool) -> int:
    """A bound on the reach in input latents / cells, from the need of one far-away output."""
    big = 10**5
    lengths = (10**9,) * (len(program.steps) + 1)
    if decoder:
        lo, hi = program.needs(big * scale, big * scale, lengths)[0]
        return max(big - lo, hi - big) + 1
    lo, hi = program.needs(big, big, lengths)[0]
    return max(big * scale - lo, hi - big * scale) // scale + 1


def _probe(arch: LTX2VAEArchConfig, part: str, seed: int) -> LTX2VAE:
    arch = dataclasses.replace(arch, timestep_conditioning=False)
    probe = LTX2VAE(arch, include_encoder=part == "encoder", include_decoder=part == "decoder")
    init_random_weights(probe, seed).float().eval()
    with torch.no_grad():
        for name, p in probe.named_parameters():
            if name.endswith("bias"):
                p.zero_()
    return probe


def _span(mask: torch.Tensor) -> tuple[int, int]:
    idx = torch.nonzero(mask).flatten()
    if idx.numel() == 0:
        raise RuntimeError("receptive-field probe: the perturbation vanished")
    return int(idx.min()), int(idx.max())


@torch.no_grad()
def measure_ltx2_receptive_field(arch: LTX2VAEArchConfig, part: str = "decoder", seed: int = 0) -> LTX2ReceptiveField:
    """Measure the reach on a probe of the same layout (see the module doc); compare with
    :func:`derive_ltx2_receptive_field`. The strip is sized from the derived field plus a margin,
    and a cone reaching the strip's end raises ``RuntimeError``."""
    derived = derive_ltx2_receptive_field(arch, part)
    probe = _probe(arch, part, seed)
    s, r = probe.spatial_ratio, probe.temporal_ratio
    g = torch.Generator().manual_seed(seed)
    span = math.ceil(max(derived.space)) + 3
    n, c = 2 * span + 1, span
    if part == "decoder":
        # two columns: reflect padding needs more than one position
        z = torch.zeros(1, probe.latent_channels, 1, n, 2)
        z[0, :, 0, c, :] = torch.randn(probe.latent_channels, generator=g)[:, None]
        lo, hi = _span(probe.decode_raw(z).ne(0).any(dim=(0, 1, 2, 4)))
        if lo == 0 or hi == n * s - 1:
            raise RuntimeError("receptive-field probe: the cone reached the strip end; the derivation is off")
        space = ((s * c - lo) / s, (hi - (s * c + s - 1)) / s)
        tspan = math.ceil(max(derived.time)) + 3
        nt, ct = 2 * tspan + 1, tspan
        z = torch.zeros(1, probe.latent_channels, nt, 2, 2)
        z[0, :, ct] = torch.randn(probe.latent_channels, generator=g)[:, None, None]
        lo, hi = _span(probe.decode_raw(z).ne(0).any(dim=(0, 1, 3, 4)))
        if lo == 0 or hi == probe.decoded_frames(nt) - 1:
            raise RuntimeError("receptive-field probe: the temporal cone reached the clip end; the derivation is off")
        own_lo, own_hi = r * ct - (r - 1), r * ct
        return LTX2ReceptiveField("decoder", space, ((own_lo - lo) / r, (hi - own_hi) / r), measured=True)
    # encoder: one batch row per pixel phase within a latent cell
    x = torch.zeros(s, probe.arch.in_channels, 1, n * s, s)
    for j in range(s):
        x[j, :, 0, s * c + j, :] = torch.randn(probe.arch.in_channels, generator=g)[:, None]
    out = probe.encode_moments(x)
    before = after = 0.0
    for j in range(s):
        lo, hi = _span(out[j].ne(0).any(dim=(0, 1, 3)))
        if lo == 0 or hi == n - 1:
            raise RuntimeError("receptive-field probe: the cone reached the strip end; the derivation is off")
        pos = s * c + j
        before = max(before, (s * hi - pos) / s)  # cell hi reads this pixel: it lies before cell hi's block
        after = max(after, (pos - (s * lo + s - 1)) / s)
    return LTX2ReceptiveField("encoder", (before, after), None, measured=True)
