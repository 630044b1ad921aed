"""FLOPs of the Wan VAE decoder from its layer shapes, and the machine's dense throughput.

Counting (one multiply-add = 2 FLOPs; biases, norms, SiLU, resizes, adds and the
softmax are not counted: they are memory-bound and small next to the convolutions):

- every 3D convolution (:class:`CausalConv3d` and ``nn.Conv3d``)::

      FLOPs = 2 * B * C_out * T_out * H_out * W_out * (C_in / groups) * k_t * k_h * k_w

  where ``T_out`` is the number of frames the convolution *produces*. A causal conv
  with ``k_t = 3`` sees ``T + 2`` frames (two frames of cached or zero context in
  front) and produces ``T``; the context frames are therefore paid for inside the
  ``k_t`` factor of every output frame, exactly as the hardware does (except a stream's
  zero context in front of a one-frame call, whose taps are skipped: ``k_t = 1`` there);
- every 2D convolution, applied per frame (the resampling convs, ``nn.Conv2d``): the
  same with ``k_t = 1`` and ``T_out`` counting the frames (B*T images);
- the single-head attention block, per frame, with ``N = H * W`` positions and ``C``
  channels: ``2 * N * C * 3C`` (to_qkv) + ``2 * N^2 * C`` (Q K^T) + ``2 * N^2 * C``
  (A V) + ``2 * N * C^2`` (proj) = ``2 * (4 N C^2 + 2 N^2 C)``.

"Per output pixel" divides by ``B * T_out * H * W`` of the decoded video (one pixel =
one spatial position of one frame, all channels). The shapes come from one decode on
the ``meta`` device (no arithmetic, any size, in about a second), so the count is
exactly the decode's, first-chunk rules and chunking included.
:func:`count_flops` agrees with ``torch.utils.flop_counter.FlopCounterMode`` run on the
meta device (tested; on CPU tensors that counter misses the fused attention kernel).

Attainable speed: :func:`conv_shapes` lists the decoder's distinct 3x3x3 conv shapes
with their share of the FLOPs; the ``roofline`` scenario times each as a plain
:func:`framestream.utils.conv.conv3d`, the kernel the decoder runs (the machine's dense
conv3d throughput at the decoder's widths), and
also a square fp32 GEMM. The fraction reported is
``achieved FLOP/s of the decode / FLOP-weighted conv3d throughput``, where the
weighted throughput is ``sum(flops_i) / sum(flops_i / throughput_i)`` (the time the
decoder's 3x3x3 convs alone would take if each ran at its measured speed); it can
exceed 1 where the remaining FLOPs (per-frame 2D convs, wider 3D convs) run faster than
the timed shapes. ``achieved / fastest timed shape`` is reported beside it.
"""

from __future__ import annotations

import math
from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn as nn

__all__ = ["FlopCount", "count_flops", "decoder_flop_count", "conv_shapes", "ConvShape"]


@dataclass
class ConvShape:
    """One conv3d problem: the padded input it convolves and the FLOPs it accounts for."""

    in_channels: int
    out_channels: int
    kernel: tuple[int, int, int]
    input_thw: tuple[int, int, int]
    batch: int
    flops: int = 0
    calls: int = 0


@dataclass
class FlopCount:
    """FLOPs by category and by module name, plus every 3D conv's padded input shape."""

    total: int = 0
    by_kind: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    by_module: dict[str, int] = field(default_factory=lambda: defaultdict(int))
    conv3d: dict[tuple, ConvShape] = field(default_factory=dict)
    output_pixels: int = 0

    def add(self, kind: str, name: str, flops: int) -> None:
        self.total += flops
        self.by_kind[kind] += flops
        self.by_module[name] += flops

    @property
    def per_output_pixel(self) -> float:
        return self.total / self.output_pixels if self.output_pixels else float("nan")


def _conv_flops(out: torch.Tensor, in_channels: int, groups: int, kernel: tuple[int, ...]) -> int:
    return 2 * out.numel() * (in_channels // groups) * math.prod(kernel)


def count_flops(module: nn.Module, fn: Callable[[], torch.Tensor]) -> tuple[FlopCount, torch.Tensor]:
    """Run ``fn()`` (which calls ``module``) with shape hooks; returns the count and ``fn``'s output.

    Counted modules: framestream's ``CausalConv3d``, ``Resample`` (its per-frame 2D
    conv; its ``time_conv`` is a ``CausalConv3d`` counted on its own) and
    ``AttentionBlock``; torch's ``nn.Conv2d`` / ``nn.Conv3d`` / ``nn.Linear``.
    """
    from framestream.models.wan.vae.modules import AttentionBlock, CausalConv3d, Resample

    count = FlopCount()
    no_context: set[int] = set()  # causal convs called without cached frames (the stream's start)

    def before(mod: nn.Module, args: tuple) -> None:
        run = args[1] if len(args) > 1 else None
        if isinstance(mod, CausalConv3d) and mod.context and (run is None or run.read(mod.cache_key) is None):
            no_context.add(id(mod))
        else:
            no_context.discard(id(mod))

    def hook(name: str, mod: nn.Module, args: tuple, out: torch.Tensor) -> None:
        x = args[0]
        if isinstance(mod, CausalConv3d):
            kernel = mod.kernel_size
            if id(mod) in no_context and x.shape[2] == 1 and mod.stride == (1, 1, 1):
                kernel = (1, *kernel[1:])  # only the frame's own tap runs (CausalConv3d._one_frame)
            count.add("conv3d", name, _conv_flops(out, mod.in_channels, 1, kernel))
            t, h, w = x.shape[2:]
            _, ph, pw = mod.spatial_padding
            thw = (t + mod.context, h + 2 * ph, w + 2 * pw)
            key = (mod.in_channels, mod.out_channels, mod.kernel_size, thw, x.shape[0], mod.stride)
            if mod.stride == (1, 1, 1):
                shape = count.conv3d.setdefault(key, ConvShape(mod.in_channels, mod.out_channels, mod.kernel_size, thw, x.shape[0]))
                shape.flops += _conv_flops(out, mod.in_channels, 1, kernel)
                shape.calls += 1
        elif isinstance(mod, Resample) and not mod.mode.startswith("up"):  # up: see upsample_space below
            conv = mod.resample[1]
            # pad right/bottom by one, stride 2: H/2 x W/2 per frame, before any time_conv
            n_out = x.shape[0] * x.shape[2] * conv.out_channels * (x.shape[3] // 2) * (x.shape[4] // 2)
            count.add("conv2d", name, 2 * n_out * conv.in_channels * conv.kernel_size**2)
        elif isinstance(mod, AttentionBlock):
            b, c, t, h, w = x.shape
            n = h * w
            count.add("attention_proj", name, 2 * b * t * 4 * n * c * c)
            count.add("attention_qk_av", name, 2 * b * t * 2 * n * n * c)
        elif isinstance(mod, (nn.Conv2d, nn.Conv3d)):
            count.add(f"conv{mod.weight.dim() - 2}d", name, _conv_flops(out, mod.in_channels, mod.groups, mod.kernel_size))
        elif isinstance(mod, nn.Linear):
            count.add("linear", name, 2 * out.numel() * mod.in_features)

    counted = (CausalConv3d, Resample, AttentionBlock, nn.Conv2d, nn.Conv3d, nn.Linear)
    handles = [
        m.register_forward_hook(lambda mod, args, out, _n=name: hook(_n, mod, args, out))
        for name, m in module.named_modules()
        if isinstance(m, counted)
    ]
    handles += [m.register_forward_pre_hook(before) for m in module.modules() if isinstance(m, CausalConv3d)]
    # An upsampler's spatial half is called on its own (time slices), not through forward.
    ups = [(name, m) for name, m in module.named_modules() if isinstance(m, Resample) and m.mode.startswith("up")]
    for name, m in ups:
        def counted_space(x: torch.Tensor, _m: Resample = m, _n: str = name, _f=m.upsample_space) -> torch.Tensor:
            y = _f(x)
            count.add("conv2d", _n, 2 * y.numel() * _m.resample[1].in_channels * _m.resample[1].kernel_size**2)
            return y

        m.upsample_space = counted_space
    try:
        out = fn()
    finally:
        for h in handles:
            h.remove()
        for _, m in ups:
            del m.upsample_space  # back to the class method
    count.output_pixels = out.shape[0] * math.prod(out.shape[2:])  # (B, C, T, H, W): B*T*H*W
    return count, out


def decoder_flop_count(arch, latent_shape: tuple[int, ...], chunk_size: int = 1) -> FlopCount:
    """FLOPs of ``WanVAE(arch).decode(z, chunk_size)`` for latents of ``latent_shape``, on the meta device."""
    from framestream.models.wan.vae import WanVAE

    with torch.device("meta"):
        vae = WanVAE(arch, include_encoder=False).eval()
        z = torch.empty(*latent_shape)
    with torch.inference_mode():
        count, _ = count_flops(vae, lambda: vae.decode(z, chunk_size=chunk_size))
    return count


def conv_shapes(count: FlopCount, coverage: float = 0.9, limit: int = 6) -> list[ConvShape]:
    """The 3x3x3 conv shapes carrying the most FLOPs: the fewest covering ``coverage`` of them (at most ``limit``)."""
    shapes = sorted((s for s in count.conv3d.values() if s.kernel == (3, 3, 3)), key=lambda s: -s.flops)
    total = sum(s.flops for s in shapes)
    picked, covered = [], 0
    for s in shapes:
        if picked and (covered >= coverage * total or len(picked) >= limit):
            break
        picked.append(s)
        covered += s.flops
    return picked
