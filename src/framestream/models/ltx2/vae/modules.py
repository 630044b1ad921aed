"""Building blocks of the LTX-2 video VAE (no hidden state, no attention).

Parameter names and shapes match diffusers' ``AutoencoderKLLTX2Video`` so its state dict
loads unchanged. Tensors are ``(B, C, T, H, W)``. Weights may be stored in another dtype
than the activations: they are cast to the activation dtype on use.

Every operation is local in space and time: 3x3x3 convolutions (time padded with copies
of the first frame, or of the first and last frame when not causal; space padded by the
configured mode), per-pixel RMS / layer norms, SiLU, and space/depth shuffles. The
exact tiler (:mod:`framestream.tiling.ltx2_exact`) relies on that; it walks the
*steps* of :meth:`Encoder.steps` / :meth:`Decoder.steps`, and the forward passes call
their ``after_step(i, x)`` hook after step ``i`` (to crop the halo between steps).
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.models.ltx2.vae.config import BlockPlan, LTX2VAEArchConfig
from framestream.utils.conv import conv3d

__all__ = [
    "StepHook",
    "CausalConv3d",
    "ResnetBlock",
    "Downsampler",
    "Upsampler",
    "TimestepEmbedder",
    "DownBlock",
    "MidBlock",
    "UpBlock",
    "Encoder",
    "Decoder",
    "rms_norm",
    "space_to_depth",
    "depth_to_space",
    "patchify",
    "unpatchify",
]

StepHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``after_step(i, x) -> x``: called with the output of step ``i``; its return value goes on."""

_RMS_EPS = 1e-8


def rms_norm(x: torch.Tensor) -> torch.Tensor:
    """``x / sqrt(mean_c(x^2) + 1e-8)`` at every position (no parameters); half inputs reduce in float32."""
    if x.dtype in (torch.float16, torch.bfloat16):
        xf = x.float()
        return (xf * torch.rsqrt(xf.square().mean(dim=1, keepdim=True) + _RMS_EPS)).to(x.dtype)
    return x / torch.sqrt(x.square().mean(dim=1, keepdim=True) + _RMS_EPS)


def _cast(t: torch.Tensor | None, like: torch.Tensor) -> torch.Tensor | None:
    return None if t is None else t.to(dtype=like.dtype)


def space_to_depth(x: torch.Tensor, st: int, sh: int, sw: int) -> torch.Tensor:
    """(B, C, T*st, H*sh, W*sw) -> (B, C*st*sh*sw, T, H, W); channel ``((c*st + a)*sh + b)*sw + d``."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t // st, st, h // sh, sh, w // sw, sw)
    return x.permute(0, 1, 3, 5, 7, 2, 4, 6).reshape(b, c * st * sh * sw, t // st, h // sh, w // sw)


def depth_to_space(x: torch.Tensor, st: int, sh: int, sw: int) -> torch.Tensor:
    """Inverse of :func:`space_to_depth`."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (st * sh * sw), st, sh, sw, t, h, w)
    return x.permute(0, 1, 5, 2, 6, 3, 7, 4).reshape(b, c // (st * sh * sw), t * st, h * sh, w * sw)


def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """(B, C, T, H*p, W*p) -> (B, C*p*p, T, H, W), channel ``(c*p + w_phase)*p + h_phase`` (LTX-2's order)."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p)
    return x.permute(0, 1, 6, 4, 2, 3, 5).reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    b, c, t, h, w = x.shape
    x = x.reshape(b, c // (p * p), p, p, t, h, w)  # (b, c, w_phase, h_phase, t, h, w)
    return x.permute(0, 1, 4, 5, 3, 6, 2).reshape(b, c // (p * p), t, h * p, w * p)


class CausalConv3d(nn.Module):
    """3D convolution, stride 1, "same" padding: time padded with copies of the edge frames.

    ``causal=True``: ``k-1`` copies of the first frame before; else ``(k-1)/2`` copies of the
    first frame before and of the last frame after. Space is padded by ``padding_mode``.
    The inner ``conv`` holds the parameters (key ``<name>.conv.weight`` as in diffusers).
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int = 3, padding_mode: str = "zeros") -> None:
        super().__init__()
        self.kernel_size = (kernel_size,) * 3
        self.padding_mode = padding_mode
        self.conv = nn.Conv3d(in_channels, out_channels, kernel_size)

    @property
    def spatial_pad(self) -> int:
        return self.kernel_size[1] // 2

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        kt = self.kernel_size[0]
        if kt > 1:
            if causal:
                x = torch.cat([x[:, :, :1].expand(-1, -1, kt - 1, -1, -1), x], dim=2)
            else:
                n = (kt - 1) // 2
                x = torch.cat([x[:, :, :1].expand(-1, -1, n, -1, -1), x, x[:, :, -1:].expand(-1, -1, n, -1, -1)], dim=2)
        p = self.spatial_pad
        padding = (0, p, p)
        if p and self.padding_mode != "zeros":
            x = F.pad(x, (p, p, p, p, 0, 0), mode=self.padding_mode)
            padding = (0, 0, 0)
        return conv3d(x, _cast(self.conv.weight, x), _cast(self.conv.bias, x), padding=padding)


class TimestepEmbedder(nn.Module):
    """Sinusoidal projection (256 channels, cos first) then Linear-SiLU-Linear to ``dim``.

    Module names ``timestep_embedder.linear_1`` / ``linear_2`` follow diffusers'
    ``PixArtAlphaCombinedTimestepSizeEmbeddings`` (without its size conditions).
    """

    def __init__(self, dim: int, frequencies: int = 256) -> None:
        super().__init__()
        self.frequencies = frequencies
        self.timestep_embedder = nn.Module()
        self.timestep_embedder.linear_1 = nn.Linear(frequencies, dim)
        self.timestep_embedder.linear_2 = nn.Linear(dim, dim)

    def forward(self, timestep: torch.Tensor, dtype: torch.dtype) -> torch.Tensor:
        half = self.frequencies // 2
        exponent = -math.log(10000) * torch.arange(half, dtype=torch.float32, device=timestep.device) / half
        angles = timestep.float()[:, None] * torch.exp(exponent)[None]
        proj = torch.cat([torch.cos(angles), torch.sin(angles)], dim=-1).to(dtype)
        l1, l2 = self.timestep_embedder.linear_1, self.timestep_embedder.linear_2
        h = F.silu(F.linear(proj, _cast(l1.weight, proj), _cast(l1.bias, proj)))
        return F.linear(h, _cast(l2.weight, h), _cast(l2.bias, h))


def _embed(embedder: TimestepEmbedder, temb: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """A block's timestep embedding, shaped ``(B, D, 1, 1, 1)`` for broadcasting."""
    return embedder(temb.flatten(), x.dtype).view(x.shape[0], -1, 1, 1, 1)


class ResnetBlock(nn.Module):
    """RMS norm, (scale/shift), SiLU, conv1, RMS norm, (scale/shift), SiLU, conv2, plus the shortcut.

    A channel change adds a LayerNorm (``norm3``) and a 1x1x1 ``conv_shortcut`` on the shortcut.
    """

    def __init__(self, in_channels: int, out_channels: int, eps: float, timestep_conditioning: bool, padding_mode: str) -> None:
        super().__init__()
        self.conv1 = CausalConv3d(in_channels, out_channels, 3, padding_mode)
        self.conv2 = CausalConv3d(out_channels, out_channels, 3, padding_mode)
        self.norm3: nn.LayerNorm | None = None
        self.conv_shortcut: nn.Conv3d | None = None
        if in_channels != out_channels:
            self.norm3 = nn.LayerNorm(in_channels, eps=eps, elementwise_affine=True)
            self.conv_shortcut = nn.Conv3d(in_channels, out_channels, 1)
        self.scale_shift_table = nn.Parameter(torch.empty(4, in_channels)) if timestep_conditioning else None

    def forward(self, x: torch.Tensor, temb: torch.Tensor | None, causal: bool) -> torch.Tensor:
        h = rms_norm(x)
        if self.scale_shift_table is not None:
            if temb is None:
                raise ValueError("this LTX-2 decoder is timestep-conditioned: pass a timestep")
            mod = temb.unflatten(1, (4, -1)) + _cast(self.scale_shift_table, x)[None, ..., None, None, None]
            shift1, scale1, shift2, scale2 = mod.unbind(dim=1)
            h = h * (1 + scale1) + shift1
        h = self.conv1(F.silu(h), causal)
        h = rms_norm(h)
        if self.scale_shift_table is not None:
            h = h * (1 + scale2) + shift2
        h = self.conv2(F.silu(h), causal)
        skip = x
        if self.norm3 is not None:
            n = self.norm3
            skip = F.layer_norm(skip.movedim(1, -1), n.normalized_shape, _cast(n.weight, x), _cast(n.bias, x), n.eps).movedim(-1, 1)
        if self.conv_shortcut is not None:
            skip = conv3d(skip, _cast(self.conv_shortcut.weight, x), _cast(self.conv_shortcut.bias, x))
        return h + skip


class Downsampler(nn.Module):
    """Space-to-depth downsampling by ``stride`` (t, h, w) with a channel-mean shortcut.

    Time stride 2 first prepends a copy of the first frame, so ``1 + 2k`` frames give ``1 + k``.
    """

    def __init__(self, in_channels: int, out_channels: int, stride: tuple[int, int, int], padding_mode: str) -> None:
        super().__init__()
        self.stride = stride
        volume = stride[0] * stride[1] * stride[2]
        if out_channels % volume or (in_channels * volume) % out_channels:
            raise ValueError(f"downsampler {in_channels}->{out_channels} channels does not fit stride {stride}")
        self.group_size = in_channels * volume // out_channels
        self.conv = CausalConv3d(in_channels, out_channels // volume, 3, padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        st, sh, sw = self.stride
        if st > 1:
            x = torch.cat([x[:, :, : st - 1], x], dim=2)
        skip = space_to_depth(x, st, sh, sw)
        skip = skip.unflatten(1, (-1, self.group_size)).mean(dim=2)
        return space_to_depth(self.conv(x, causal), st, sh, sw) + skip


class Upsampler(nn.Module):
    """Depth-to-space upsampling by ``stride`` (the first ``st-1`` frames dropped), with an optional
    depth-to-space shortcut repeated over channels; the output has ``in/upscale_factor`` channels."""

    def __init__(self, in_channels: int, stride: tuple[int, int, int], residual: bool, upscale_factor: int, padding_mode: str) -> None:
        super().__init__()
        self.stride, self.residual, self.upscale_factor = stride, residual, upscale_factor
        volume = stride[0] * stride[1] * stride[2]
        self.conv = CausalConv3d(in_channels, in_channels * volume // upscale_factor, 3, padding_mode)

    def forward(self, x: torch.Tensor, causal: bool) -> torch.Tensor:
        st, sh, sw = self.stride
        out = depth_to_space(self.conv(x, causal), st, sh, sw)[:, :, st - 1 :]
        if self.residual:
            repeats = st * sh * sw // self.upscale_factor
            out = out + depth_to_space(x, st, sh, sw).repeat(1, repeats, 1, 1, 1)[:, :, st - 1 :]
        return out


class DownBlock(nn.Module):
    """Residual blocks, then one downsampler (``downsamplers.0``) when the block resamples."""

    def __init__(self, plan: BlockPlan, eps: float, padding_mode: str) -> None:
        super().__init__()
        c = plan.in_channels
        self.resnets = nn.ModuleList(ResnetBlock(c, c, eps, False, padding_mode) for _ in range(plan.layers))
        self.downsamplers = None
        if plan.resample is not None:
            stride = LTX2VAEArchConfig.resample_stride(plan.resample)
            self.downsamplers = nn.ModuleList([Downsampler(c, plan.out_channels, stride, padding_mode)])

    def steps(self) -> list[nn.Module]:
        return [*self.resnets, *(self.downsamplers or [])]


class MidBlock(nn.Module):
    """Residual blocks at the latent resolution, with a time embedder when conditioned."""

    def __init__(self, channels: int, layers: int, eps: float, timestep_conditioning: bool, padding_mode: str) -> None:
        super().__init__()
        self.time_embedder = TimestepEmbedder(channels * 4) if timestep_conditioning else None
        self.resnets = nn.ModuleList(
            ResnetBlock(channels, channels, eps, timestep_conditioning, padding_mode) for _ in range(layers)
        )

    def steps(self) -> list[nn.Module]:
        return list(self.resnets)


class UpBlock(nn.Module):
    """Optional channel-changing resnet (``conv_in``), one upsampler, residual blocks."""

    def __init__(self, plan: BlockPlan, eps: float, timestep_conditioning: bool, padding_mode: str) -> None:
        super().__init__()
        c = plan.out_channels
        self.time_embedder = TimestepEmbedder(plan.in_channels * 4) if timestep_conditioning else None
        self.conv_in = None
        if plan.in_channels != c:
            self.conv_in = ResnetBlock(plan.in_channels, c, eps, timestep_conditioning, padding_mode)
        self.upsamplers = None
        if plan.resample is not None:
            stride = LTX2VAEArchConfig.resample_stride(plan.resample)
            self.upsamplers = nn.ModuleList([Upsampler(c * plan.factor, stride, plan.residual, plan.factor, padding_mode)])
        self.resnets = nn.ModuleList(ResnetBlock(c, c, eps, timestep_conditioning, padding_mode) for _ in range(plan.layers))

    def steps(self) -> list[nn.Module]:
        return [*([self.conv_in] if self.conv_in is not None else []), *(self.upsamplers or []), *self.resnets]


class _Stepper:
    """Counts steps and applies the hook (a local object per forward call: no state on modules)."""

    def __init__(self, hook: StepHook | None) -> None:
        self.hook, self.index = hook, 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.hook is not None:
            x = self.hook(self.index, x)
        self.index += 1
        return x


class Encoder(nn.Module):
    """patchify, conv_in, down blocks, mid block, RMS norm, SiLU, conv_out (latent + 1 channels)."""

    def __init__(self, arch: LTX2VAEArchConfig) -> None:
        super().__init__()
        self.patch_size, self.causal = arch.patch_size, arch.encoder_causal
        mode, eps = arch.encoder_spatial_padding_mode, arch.resnet_norm_eps
        self.conv_in = CausalConv3d(arch.in_channels * arch.patch_size**2, arch.latent_channels, 3, mode)
        self.down_blocks = nn.ModuleList(DownBlock(plan, eps, mode) for plan in arch.encoder_blocks())
        width = arch.block_out_channels[-1] if arch.block_out_channels else arch.latent_channels
        self.mid_block = MidBlock(width, arch.layers_per_block[-1], eps, False, mode)
        self.conv_out = CausalConv3d(width, arch.latent_channels + 1, 3, mode)

    def steps(self) -> list[nn.Module]:
        """Modules in execution order, one per ``after_step`` call."""
        out: list[nn.Module] = [self.conv_in]
        for block in self.down_blocks:
            out += block.steps()
        return out + self.mid_block.steps() + [self.conv_out]

    def forward(self, x: torch.Tensor, after_step: StepHook | None = None) -> torch.Tensor:
        """Pixels in [-1, 1] -> ``latent + 1`` channels (means, then the shared log-variance)."""
        step, causal = _Stepper(after_step), self.causal
        h = step(self.conv_in(patchify(x, self.patch_size), causal))
        for block in self.down_blocks:
            for resnet in block.resnets:
                h = step(resnet(h, None, causal))
            for down in block.downsamplers or []:
                h = step(down(h, causal))
        for resnet in self.mid_block.resnets:
            h = step(resnet(h, None, causal))
        return step(self.conv_out(F.silu(rms_norm(h)), causal))


class Decoder(nn.Module):
    """conv_in, mid block, up blocks, RMS norm, (scale/shift), SiLU, conv_out, unpatchify."""

    def __init__(self, arch: LTX2VAEArchConfig) -> None:
        super().__init__()
        self.patch_size, self.causal = arch.patch_size, arch.decoder_causal
        mode, eps, tc = arch.decoder_spatial_padding_mode, arch.resnet_norm_eps, arch.timestep_conditioning
        width = arch.decoder_width
        self.conv_in = CausalConv3d(arch.latent_channels, width, 3, mode)
        self.mid_block = MidBlock(width, arch.decoder_mid_layers, eps, tc, mode)
        plans = arch.decoder_blocks()
        self.up_blocks = nn.ModuleList(UpBlock(plan, eps, tc, mode) for plan in plans)
        last = plans[-1].out_channels if plans else width
        self.conv_out = CausalConv3d(last, arch.out_channels * arch.patch_size**2, 3, mode)
        self.timestep_scale_multiplier = self.time_embedder = self.scale_shift_table = None
        if tc:
            self.timestep_scale_multiplier = nn.Parameter(torch.empty(()))
            self.time_embedder = TimestepEmbedder(last * 2)
            self.scale_shift_table = nn.Parameter(torch.empty(2, last))

    def steps(self) -> list[nn.Module]:
        """Modules in execution order, one per ``after_step`` call."""
        out: list[nn.Module] = [self.conv_in, *self.mid_block.steps()]
        for block in self.up_blocks:
            out += block.steps()
        return out + [self.conv_out]

    def forward(self, z: torch.Tensor, temb: torch.Tensor | None = None, after_step: StepHook | None = None) -> torch.Tensor:
        """Latents -> pixels (not clamped, as diffusers). ``temb``: per-sample timestep ``(B,)`` when conditioned."""
        step, causal = _Stepper(after_step), self.causal
        h = step(self.conv_in(z, causal))
        if self.timestep_scale_multiplier is not None:
            if temb is None:
                raise ValueError("this LTX-2 decoder is timestep-conditioned: pass a timestep")
            temb = temb.to(h.dtype) * _cast(self.timestep_scale_multiplier, h)
        block_temb = _embed(self.mid_block.time_embedder, temb, h) if self.mid_block.time_embedder is not None else None
        for resnet in self.mid_block.resnets:
            h = step(resnet(h, block_temb, causal))
        for block in self.up_blocks:
            if block.conv_in is not None:
                h = step(block.conv_in(h, temb, causal))  # diffusers feeds conv_in the raw timestep
            block_temb = _embed(block.time_embedder, temb, h) if block.time_embedder is not None else None
            for up in block.upsamplers or []:
                h = step(up(h, causal))
            for resnet in block.resnets:
                h = step(resnet(h, block_temb, causal))
        h = rms_norm(h)
        if self.time_embedder is not None:
            mod = _embed(self.time_embedder, temb, h).unflatten(1, (2, -1))
            shift, scale = (mod + _cast(self.scale_shift_table, h)[None, ..., None, None, None]).unbind(dim=1)
            h = h * (1 + scale) + shift
        h = step(self.conv_out(F.silu(h), causal))
        return unpatchify(h, self.patch_size)
