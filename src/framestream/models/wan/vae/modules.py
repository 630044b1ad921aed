"""Building blocks of the Wan 2.1 / 2.2 causal video VAE, without hidden state.

Every block that needs context from earlier frames takes a :class:`ChunkRun` (the
per-call view of a :class:`~framestream.models.wan.vae.cache.WanCausalCache`) and
reads / writes slots named by its ``cache_key`` (the module path, set by
:class:`~framestream.models.wan.vae.model.WanVAE`). Parameter names and shapes match
diffusers' ``AutoencoderKLWan`` so its state dict loads unchanged.

Tensors are ``(B, C, T, H, W)`` throughout. Weights may be stored in another dtype
than the activations: they are cast to the activation dtype on use.

Padded chunks: a chunk may end with ``num_padded`` zero latent frames (static shapes).
Every layer knows ``time_scale``, its input frames per latent frame, so it can tell
which of its input frames are real and keep only those in the cache; because all
temporal operators are causal, the real outputs never see the padding.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn as nn
import torch.nn.functional as F

from framestream.models.wan.vae.cache import CACHE_T, WanCausalCache
from framestream.utils.conv import conv3d

__all__ = [
    "ChunkRun",
    "CausalConv3d",
    "Conv2dParams",
    "RMSNorm",
    "AttentionBlock",
    "ResidualBlock",
    "Resample",
    "MidBlock",
    "AvgDown3D",
    "DupUp3D",
    "ResidualDownBlock",
    "UpBlock",
    "ResidualUpBlock",
    "Encoder",
    "Decoder",
    "patchify",
    "unpatchify",
    "StageHook",
    "ResnetHook",
]

_HALF_TYPES = (torch.float16, torch.bfloat16)

StageHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(block_index, x) -> x``: called between the blocks of a stage (e.g. to crop a tile's halo).
A decoder-tail hook may also have ``after_resnet(block_index, resnet_index, x) -> x``."""
ResnetHook = Callable[[int, torch.Tensor], torch.Tensor]
"""``hook(resnet_index, x) -> x``: called after each residual block of one up block."""


def _like(t: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
    """``t`` in ``x``'s dtype (no copy when it already is)."""
    return t if t.dtype == x.dtype else t.to(x.dtype)


class ChunkRun:
    """What one forward over a chunk knows: the stream cache, the padding, how to write.

    Atomic runs buffer their writes and land them in the cache on :meth:`commit`, so
    an exception mid-chunk leaves the stream where it was; old and new slots coexist
    until then (twice the cache memory at the peak). Write-through runs replace each
    slot as soon as its layer has read it (each slot is read once per chunk, before
    it is written), so an old slot is freed right away; the cache is marked broken
    until :meth:`commit`, so a stream interrupted mid-chunk refuses to continue.
    """

    __slots__ = ("cache", "num_padded", "pending", "atomic")

    def __init__(self, cache: WanCausalCache, num_padded: int = 0, atomic: bool = True) -> None:
        if cache.broken:
            raise ValueError(
                "this stream's cache was left mid-chunk by a failure (atomic=False); start a new stream with a fresh cache"
            )
        self.cache = cache
        self.num_padded = int(num_padded)
        self.pending: dict[str, torch.Tensor] = {}
        self.atomic = atomic
        if not atomic:
            cache.broken = True

    def read(self, key: str) -> torch.Tensor | None:
        # A slot written earlier in this chunk (a later time slice reads what the earlier one wrote).
        if self.atomic and key in self.pending:
            return self.pending[key]
        return self.cache.get(key)

    def write(self, key: str, value: torch.Tensor) -> None:
        if self.atomic:
            self.pending[key] = value
        else:
            self.cache.slots[key] = value

    def write_last_frames(self, key: str, prev: torch.Tensor | None, x: torch.Tensor, real: int, n: int) -> None:
        """Keep the last ``n`` frames of ``cat(prev, x[:, :, :real])`` in slot ``key``.

        Write-through runs shift them into the slot's own tensor when ``prev`` is that tensor
        and ``x`` matches it: no allocation per chunk (CUDA graphs need fixed slots, and the
        host allocator fragments under the churn). Atomic runs keep the old slot intact.
        """
        reusable = (
            not self.atomic
            and prev is not None
            and prev is self.cache.slots.get(key)
            and prev.shape[2] == n
            and prev.shape[:2] + prev.shape[3:] == x.shape[:2] + x.shape[3:]
        )
        if not reusable:
            self.write(key, _last_frames(prev, x, real, n))
            return
        if real >= n:
            prev.copy_(x[:, :, real - n : real])
            return
        for j in range(n - real):  # ascending: each source frame is read before it is overwritten
            prev[:, :, j].copy_(prev[:, :, j + real])
        if real:
            prev[:, :, n - real :].copy_(x[:, :, :real])

    def real_frames(self, frames: int, time_scale: int) -> int:
        """How many leading frames of a ``frames``-long input at ``time_scale`` are real."""
        return frames - self.num_padded * time_scale

    def commit(self) -> None:
        self.cache.update(self.pending)
        self.pending = {}
        self.cache.broken = False


class SliceRun:
    """A :class:`ChunkRun` seen by one time slice of a chunk: the same cache, the slice's own
    count of real (unpadded) frames. Valid for layers that all run at the slice's frame rate."""

    __slots__ = ("run", "real")

    def __init__(self, run: "ChunkRun | SliceRun", real: int) -> None:
        self.run, self.real = run, real

    def read(self, key: str) -> torch.Tensor | None:
        return self.run.read(key)

    def write(self, key: str, value: torch.Tensor) -> None:
        self.run.write(key, value)

    def write_last_frames(self, key: str, prev: torch.Tensor | None, x: torch.Tensor, real: int, n: int) -> None:
        self.run.write_last_frames(key, prev, x, real, n)

    def real_frames(self, frames: int, time_scale: int) -> int:
        return max(0, min(frames, self.real))


def run_time_sliced(
    x: torch.Tensor,
    run: ChunkRun,
    time_scale: int,
    frame_slice: int | None,
    stage: Callable[[torch.Tensor, "ChunkRun | SliceRun"], torch.Tensor],
) -> torch.Tensor:
    """``stage(x, run)``, run on slices of ``frame_slice`` frames in order, outputs concatenated in time.

    Exact for stages of causal convolutions and per-frame layers: a slice continues the
    stream through the same caches, as a smaller chunk would. The activations held at once
    shrink with the slice (a chunk of 4 full-resolution frames: 4x less at slice 1).
    """
    frames = x.shape[2]
    if frame_slice is None or frames <= frame_slice:
        return stage(x, run)
    real = run.real_frames(frames, time_scale)
    outs = []
    for t0 in range(0, frames, frame_slice):
        part = x[:, :, t0 : t0 + frame_slice]
        outs.append(stage(part, SliceRun(run, max(0, min(part.shape[2], real - t0)))))
    return torch.cat(outs, dim=2)


def _last_frames(prev: torch.Tensor | None, x: torch.Tensor, real: int, n: int) -> torch.Tensor:
    """Last ``n`` frames of ``cat(prev, x[:, :, :real])`` as a fresh contiguous tensor.

    ``prev`` (at least ``n - real`` frames) or ``None``, which stands for zeros: the context
    of a stream that has not started.
    """
    if real >= n:
        return x[:, :, real - n : real].clone(memory_format=torch.contiguous_format)
    keep = n - real
    if prev is None:
        b, c, _, h, w = x.shape
        head = x.new_zeros(b, c, keep, h, w)
    else:
        head = _like(prev[:, :, prev.shape[2] - keep :], x)
    return torch.cat([head, x[:, :, :real]], dim=2)


# ---------------------------------------------------------------------------- primitives
class CausalConv3d(nn.Module):
    """3D convolution, causal in time: ``2*pad_t`` frames of context in front, none behind.

    The context comes from the cache slot ``cache_key`` (zeros for a new stream); the
    slot then keeps the last ``2*pad_t`` real input frames. With ``pad_t == 0`` the
    conv is frame-local and uses no slot.
    """

    def __init__(
        self,
        in_channels: int,
        out_channels: int,
        kernel_size: int | tuple[int, int, int],
        stride: int | tuple[int, int, int] = 1,
        padding: int | tuple[int, int, int] = 0,
        time_scale: int = 1,
    ) -> None:
        super().__init__()
        k = (kernel_size,) * 3 if isinstance(kernel_size, int) else tuple(kernel_size)
        s = (stride,) * 3 if isinstance(stride, int) else tuple(stride)
        p = (padding,) * 3 if isinstance(padding, int) else tuple(padding)
        self.in_channels, self.out_channels = in_channels, out_channels
        self.kernel_size, self.stride = k, s
        self.context = 2 * p[0]
        self.spatial_padding = (0, p[1], p[2])
        self.time_scale = time_scale
        self.cache_key = ""
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, *k))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def extra_repr(self) -> str:
        return (
            f"{self.in_channels}, {self.out_channels}, kernel={self.kernel_size}, "
            f"stride={self.stride}, context={self.context}"
        )

    def conv(self, x: torch.Tensor) -> torch.Tensor:
        """The plain convolution (spatial zero padding, no temporal padding)."""
        return conv3d(x, _like(self.weight, x), _like(self.bias, x), self.stride, self.spatial_padding)

    def forward(self, x: torch.Tensor, run: ChunkRun | None = None) -> torch.Tensor:
        if self.context == 0:
            return self.conv(x)
        prev = run.read(self.cache_key) if run is not None else None
        if prev is not None:
            prev = _like(prev, x)
        y = self._conv_after(prev, x)
        if run is not None:
            run.write_last_frames(self.cache_key, prev, x, run.real_frames(x.shape[2], self.time_scale), self.context)
        return y

    def _conv_after(self, prev: torch.Tensor | None, x: torch.Tensor) -> torch.Tensor:
        """Convolve ``x`` behind ``context`` frames of ``prev`` (zeros when ``None``).

        The temporal context and the spatial zero halo go into one buffer (one copy of
        ``x``, like a plain concatenation; only the borders are zero-filled), then the
        convolution runs unpadded: PyTorch's native CPU kernel (used under
        ``torch.compile`` and for half types) is several times slower with built-in
        padding; oneDNN runs both forms equally fast (GPU timing not measured yet).
        """
        b, c, t, h, w = x.shape
        ctx, (_, ph, pw) = self.context, self.spatial_padding
        weight, bias = _like(self.weight, x), _like(self.bias, x)
        if t == 1 and self.kernel_size[0] == ctx + 1 and self.stride == (1, 1, 1):
            return self._one_frame(prev, x, weight, bias).unsqueeze(2)
        buf = x.new_empty(b, c, ctx + t, h + 2 * ph, w + 2 * pw)
        if ph:
            buf[:, :, :, :ph].zero_()
            buf[:, :, :, ph + h :].zero_()
        if pw:
            buf[:, :, :, ph : ph + h, :pw].zero_()
            buf[:, :, :, ph : ph + h, pw + w :].zero_()
        inner = buf[:, :, :, ph : ph + h, pw : pw + w]
        if prev is None:
            inner[:, :, :ctx].zero_()
        else:
            inner[:, :, :ctx].copy_(prev[:, :, prev.shape[2] - ctx :])
        inner[:, :, ctx:].copy_(x)
        return conv3d(buf, weight, bias, self.stride)

    def _one_frame(
        self, prev: torch.Tensor | None, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor
    ) -> torch.Tensor:
        """One output frame (time slices, a stream's first frame) as a sum of 2D convs, one per
        temporal tap: no three-frame context buffer, as fast on the CPU as oneDNN's conv3d on
        such a buffer (measured), and zero context frames (a stream's start) are skipped."""
        ctx, (_, ph, pw) = self.context, self.spatial_padding
        taps = [None if prev is None else prev[:, :, prev.shape[2] - ctx + k] for k in range(ctx)]
        taps.append(x[:, :, 0])
        y: torch.Tensor | None = None
        for k in range(ctx, -1, -1):  # the newest frame first: it carries the bias
            if taps[k] is None:
                continue
            term = F.conv2d(taps[k], weight[:, :, k], bias if y is None else None, padding=(ph, pw))
            y = term if y is None else y.add_(term)
        assert y is not None
        return y


class Conv2dParams(nn.Module):
    """Weights of a 2D convolution (``weight (O, I, kh, kw)``, ``bias (O,)``), applied per frame."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int) -> None:
        super().__init__()
        self.in_channels, self.out_channels, self.kernel_size = in_channels, out_channels, kernel_size
        self.weight = nn.Parameter(torch.empty(out_channels, in_channels, kernel_size, kernel_size))
        self.bias = nn.Parameter(torch.empty(out_channels))

    def extra_repr(self) -> str:
        return f"{self.in_channels}, {self.out_channels}, kernel={self.kernel_size}"

    def per_frame(self, x: torch.Tensor, stride: int = 1, padding: int = 0) -> torch.Tensor:
        """Apply to every frame of a 5D tensor as a 2D convolution over ``B*T`` images.

        2D kernels are much faster than (1, k, k) 3D ones on CPU (oneDNN) and usually on
        GPU; a single-frame batch-1 chunk needs no copies at all.
        """
        b, c, t, h, w = x.shape
        weight, bias = _like(self.weight, x), _like(self.bias, x)
        if t == 1:
            return F.conv2d(x[:, :, 0], weight, bias, stride, padding).unsqueeze(2)
        y = F.conv2d(x.transpose(1, 2).reshape(b * t, c, h, w), weight, bias, stride, padding)
        return y.reshape(b, t, *y.shape[1:]).transpose(1, 2).contiguous()


class RMSNorm(nn.Module):
    """``x / ||x||_C * sqrt(C) * gamma`` over the channel dim; the norm runs in fp32 for half types.

    ``images=True`` only changes the stored ``gamma`` shape (``(C, 1, 1)`` instead of
    ``(C, 1, 1, 1)``), to match the checkpoint layout of the attention block's norm.
    """

    def __init__(self, dim: int, images: bool = False) -> None:
        super().__init__()
        self.dim = dim
        self.scale = math.sqrt(dim)
        self.gamma = nn.Parameter(torch.ones(dim, 1, 1) if images else torch.ones(dim, 1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if x.dtype in _HALF_TYPES:
            norm = torch.linalg.vector_norm(x, dim=1, keepdim=True, dtype=torch.float32).clamp_min_(1e-12)
            y = (x / norm).to(x.dtype)
        else:
            y = F.normalize(x, dim=1)
        gamma = self.gamma.reshape(self.dim, *([1] * (x.dim() - 2)))
        return y.mul_(_like(gamma, x) * self.scale)


# ---------------------------------------------------------------------------- blocks
class AttentionBlock(nn.Module):
    """Single-head self-attention over all H*W positions of each frame, with a residual."""

    def __init__(self, dim: int) -> None:
        super().__init__()
        self.dim = dim
        self.norm = RMSNorm(dim, images=True)
        self.to_qkv = Conv2dParams(dim, dim * 3, 1)
        self.proj = Conv2dParams(dim, dim, 1)

    def forward(self, x: torch.Tensor, run: ChunkRun | None = None) -> torch.Tensor:
        b, c, t, h, w = x.shape
        y = self.norm(x).permute(0, 2, 3, 4, 1)  # (B, T, H, W, C)
        qkv = F.linear(y, _like(self.to_qkv.weight, x).reshape(3 * c, c), _like(self.to_qkv.bias, x))
        q, k, v = qkv.reshape(b * t, 1, h * w, 3 * c).chunk(3, dim=-1)
        y = F.scaled_dot_product_attention(q, k, v)
        y = F.linear(y, _like(self.proj.weight, x).reshape(c, c), _like(self.proj.bias, x))
        return y.reshape(b, t, h, w, c).permute(0, 4, 1, 2, 3) + x


class ResidualBlock(nn.Module):
    """norm -> SiLU -> causal conv 3^3 -> norm -> SiLU -> dropout -> causal conv 3^3, plus shortcut."""

    def __init__(self, in_dim: int, out_dim: int, dropout: float = 0.0, time_scale: int = 1) -> None:
        super().__init__()
        self.in_dim, self.out_dim, self.dropout = in_dim, out_dim, dropout
        self.norm1 = RMSNorm(in_dim)
        self.conv1 = CausalConv3d(in_dim, out_dim, 3, padding=1, time_scale=time_scale)
        self.norm2 = RMSNorm(out_dim)
        self.conv2 = CausalConv3d(out_dim, out_dim, 3, padding=1, time_scale=time_scale)
        self.conv_shortcut = CausalConv3d(in_dim, out_dim, 1) if in_dim != out_dim else None

    def forward(self, x: torch.Tensor, run: ChunkRun | None = None) -> torch.Tensor:
        shortcut = x if self.conv_shortcut is None else self.conv_shortcut(x)
        y = self.conv1(F.silu(self.norm1(x), inplace=True), run)
        y = F.silu(self.norm2(y), inplace=True)
        if self.dropout and self.training:
            y = F.dropout(y, self.dropout, training=True)
        y = self.conv2(y, run)
        return y.add_(shortcut)


class Resample(nn.Module):
    """Spatial 2x up/down sampling, optionally with 2x temporal up/down sampling.

    - ``upsample2d``: nearest 2x, 3x3 conv to ``upsample_out_dim``.
    - ``upsample3d``: first a causal ``time_conv`` (3,1,1) to 2*dim channels whose halves
      become two consecutive frames; the stream's very first frame skips it (the "Rep"
      rule, keyed on the absence of the ``time_conv`` slot); then as ``upsample2d``.
    - ``downsample2d``: pad right/bottom by one, stride-2 3x3 conv.
    - ``downsample3d``: as ``downsample2d``, then a stride-2 ``time_conv`` (3,1,1) over
      (last frame of the previous chunk, chunk); the stream's first frame passes through.
    """

    MODES = ("upsample2d", "upsample3d", "downsample2d", "downsample3d")

    def __init__(self, dim: int, mode: str, upsample_out_dim: int | None = None, time_scale: int = 1) -> None:
        super().__init__()
        if mode not in self.MODES:
            raise ValueError(f"unknown resample mode {mode!r}; expected one of {self.MODES}")
        self.dim, self.mode, self.time_scale = dim, mode, time_scale
        out_dim = dim // 2 if upsample_out_dim is None else upsample_out_dim
        if mode.startswith("up"):
            self.resample = nn.Sequential(nn.Identity(), Conv2dParams(dim, out_dim, 3))
        else:
            self.resample = nn.Sequential(nn.Identity(), Conv2dParams(dim, dim, 3))
        if mode == "upsample3d":
            self.time_conv = CausalConv3d(dim, dim * 2, (3, 1, 1), padding=(1, 0, 0), time_scale=time_scale)
        elif mode == "downsample3d":
            self.time_conv = CausalConv3d(dim, dim, (3, 1, 1), stride=(2, 1, 1), time_scale=time_scale)
        else:
            self.time_conv = None

    @property
    def temporal(self) -> bool:
        return self.time_conv is not None

    def is_first_chunk(self, run: ChunkRun) -> bool:
        """True while the stream has not passed through this temporal resampler yet."""
        return self.time_conv is not None and run.read(self.time_conv.cache_key) is None

    def _double_frames(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        y = self.time_conv(x, run)  # (B, 2C, T, H, W): channel half j becomes sub-frame j
        b, c2, t, h, w = y.shape
        return y.reshape(b, 2, c2 // 2, t, h, w).permute(0, 2, 3, 1, 4, 5).reshape(b, c2 // 2, 2 * t, h, w)

    def upsample_time(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        """The temporal half of ``upsample3d`` (frames doubled, "Rep" rule); identity for ``upsample2d``."""
        if self.mode != "upsample3d":
            return x
        if not self.is_first_chunk(run):
            return self._double_frames(x, run)
        first, rest = x[:, :, :1], x[:, :, 1:]
        if rest.shape[2]:
            return torch.cat([first, self._double_frames(rest, run)], dim=2)
        b, c, _, h, w = x.shape
        run.write(self.time_conv.cache_key, x.new_zeros(b, c, CACHE_T, h, w))
        return first

    def upsample_space(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial half of an upsampler: nearest 2x, then the 3x3 conv, frame by frame."""
        b, c, t, h, w = x.shape
        # Nearest 2x: a plain copy, bit-identical to an fp32 "nearest-exact" resize.
        x = x[:, :, :, :, None, :, None].expand(b, c, t, h, 2, w, 2).reshape(b, c, t, 2 * h, 2 * w)
        return self.resample[1].per_frame(x, padding=1)

    def forward(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        if self.mode.startswith("up"):
            return self.upsample_space(self.upsample_time(x, run))
        conv = self.resample[1]
        x = conv.per_frame(F.pad(x, (0, 1, 0, 1)), stride=2)
        if self.mode == "downsample2d":
            return x
        key = self.time_conv.cache_key
        prev = run.read(key)
        real = run.real_frames(x.shape[2], self.time_scale)
        if prev is None:  # first frame of the stream passes through untouched
            head, rest, prev = x[:, :, :1], x[:, :, 1:], x[:, :, :1]
        else:
            head, rest, prev = None, x, _like(prev, x)
        run.write(key, _last_frames(prev, x, real, 1))
        parts = [] if head is None else [head]
        if rest.shape[2]:
            parts.append(self.time_conv.conv(torch.cat([prev, rest], dim=2)))
        return parts[0] if len(parts) == 1 else torch.cat(parts, dim=2)


class MidBlock(nn.Module):
    """Residual block, per-frame attention, residual block."""

    def __init__(self, dim: int, dropout: float = 0.0, time_scale: int = 1) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            [ResidualBlock(dim, dim, dropout, time_scale), ResidualBlock(dim, dim, dropout, time_scale)]
        )
        self.attentions = nn.ModuleList([AttentionBlock(dim)])

    def forward(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        x = self.resnets[0](x, run)
        x = self.attentions[0](x)
        return self.resnets[1](x, run)


class AvgDown3D(nn.Module):
    """Parameter-free shortcut: space/time-to-channel fold then group mean (Wan 2.2 encoder).

    Time is zero-padded in front to a multiple of ``factor_t``, which keeps the grouping
    aligned across chunks (a stream's odd first frame pairs with a zero).
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if (in_channels * factor) % out_channels:
            raise ValueError(f"AvgDown3D: in_channels*factor ({in_channels}*{factor}) must divide by {out_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        self.group = in_channels * factor // out_channels

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        pad_t = (-x.shape[2]) % ft
        if pad_t:
            x = F.pad(x, (0, 0, 0, 0, pad_t, 0))
        b, c, t, h, w = x.shape
        x = x.reshape(b, c, t // ft, ft, h // fs, fs, w // fs, fs).permute(0, 1, 3, 5, 7, 2, 4, 6)
        x = x.reshape(b, self.out_channels, self.group, t // ft, h // fs, w // fs)
        return x.mean(dim=2)


class DupUp3D(nn.Module):
    """Parameter-free shortcut: channel-to-space/time unfold of repeated channels (Wan 2.2 decoder).

    On the stream's first chunk the first ``factor_t - 1`` output frames are dropped,
    mirroring the temporal upsampler's first-frame rule.
    """

    def __init__(self, in_channels: int, out_channels: int, factor_t: int, factor_s: int = 1) -> None:
        super().__init__()
        factor = factor_t * factor_s * factor_s
        if (out_channels * factor) % in_channels:
            raise ValueError(f"DupUp3D: out_channels*factor ({out_channels}*{factor}) must divide by {in_channels}")
        self.in_channels, self.out_channels = in_channels, out_channels
        self.factor_t, self.factor_s = factor_t, factor_s
        self.repeats = out_channels * factor // in_channels

    def forward(self, x: torch.Tensor, first_chunk: bool = False) -> torch.Tensor:
        ft, fs = self.factor_t, self.factor_s
        b, c, t, h, w = x.shape
        x = x[:, :, None].expand(b, c, self.repeats, t, h, w)
        x = x.reshape(b, self.out_channels, ft, fs, fs, t, h, w).permute(0, 1, 5, 2, 6, 3, 7, 4)
        x = x.reshape(b, self.out_channels, t * ft, h * fs, w * fs)
        if first_chunk and ft > 1:
            x = x[:, :, ft - 1 :]
        return x


class ResidualDownBlock(nn.Module):
    """Wan 2.2 encoder stage: residual blocks (+ resample) plus an AvgDown3D shortcut."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        dropout: float,
        num_res_blocks: int,
        temporal: bool,
        down: bool,
        time_scale: int,
    ) -> None:
        super().__init__()
        self.avg_shortcut = AvgDown3D(in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2 if down else 1)
        blocks = []
        for i in range(num_res_blocks):
            blocks.append(ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout, time_scale))
        self.resnets = nn.ModuleList(blocks)
        self.downsampler = (
            Resample(out_dim, "downsample3d" if temporal else "downsample2d", time_scale=time_scale) if down else None
        )

    def forward(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        y = x
        for block in self.resnets:
            y = block(y, run)
        if self.downsampler is not None:
            y = self.downsampler(y, run)
        return y.add_(self.avg_shortcut(x))


class UpBlock(nn.Module):
    """Wan 2.1 decoder stage: ``num_res_blocks + 1`` residual blocks, then an optional resample."""

    def __init__(
        self, in_dim: int, out_dim: int, num_res_blocks: int, dropout: float, mode: str | None, time_scale: int
    ) -> None:
        super().__init__()
        self.resnets = nn.ModuleList(
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout, time_scale)
            for i in range(num_res_blocks + 1)
        )
        self.upsamplers = nn.ModuleList([Resample(out_dim, mode, time_scale=time_scale)]) if mode else None

    def forward(self, x: torch.Tensor, run: ChunkRun, after_resnet: ResnetHook | None = None) -> torch.Tensor:
        return self.forward_space(self.forward_time(x, run, after_resnet))

    def forward_time(self, x: torch.Tensor, run: ChunkRun, after_resnet: ResnetHook | None = None) -> torch.Tensor:
        """The residual blocks and the temporal half of the upsampler (frames final in number).
        ``after_resnet(j, x) -> x`` runs after residual block ``j`` (the exact tiler crops there)."""
        for j, block in enumerate(self.resnets):
            x = block(x, run)
            if after_resnet is not None:
                x = after_resnet(j, x)
        return x if self.upsamplers is None else self.upsamplers[0].upsample_time(x, run)

    def forward_space(self, x: torch.Tensor) -> torch.Tensor:
        """The spatial half of the upsampler: frame-local, so it can run on time slices."""
        return x if self.upsamplers is None else self.upsamplers[0].upsample_space(x)


class ResidualUpBlock(nn.Module):
    """Wan 2.2 decoder stage: residual blocks (+ resample) plus a DupUp3D shortcut."""

    def __init__(
        self,
        in_dim: int,
        out_dim: int,
        num_res_blocks: int,
        dropout: float,
        temporal: bool,
        up: bool,
        time_scale: int,
    ) -> None:
        super().__init__()
        self.avg_shortcut = DupUp3D(in_dim, out_dim, factor_t=2 if temporal else 1, factor_s=2) if up else None
        self.resnets = nn.ModuleList(
            ResidualBlock(in_dim if i == 0 else out_dim, out_dim, dropout, time_scale)
            for i in range(num_res_blocks + 1)
        )
        mode = "upsample3d" if temporal else "upsample2d"
        self.upsampler = Resample(out_dim, mode, upsample_out_dim=out_dim, time_scale=time_scale) if up else None

    def forward(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        first = self.upsampler is not None and self.upsampler.is_first_chunk(run)
        y = x
        for block in self.resnets:
            y = block(y, run)
        if self.upsampler is not None:
            y = self.upsampler(y, run)
        if self.avg_shortcut is not None:
            y = y.add_(self.avg_shortcut(x, first_chunk=first))
        return y


# ---------------------------------------------------------------------------- encoder / decoder
class Encoder(nn.Module):
    """Wan VAE encoder, split in a high-resolution front and a latent-resolution back.

    front: conv_in + down_blocks; back: mid_block + norm_out + SiLU + conv_out.
    """

    def __init__(
        self,
        in_channels: int,
        dim: int,
        z_dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        attn_scales: tuple[float, ...],
        temperal_downsample: tuple[bool, ...],
        dropout: float,
        is_residual: bool,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (1, *dim_mult)]
        ts = 2 ** sum(bool(t) for t in temperal_downsample)  # input frames per latent frame
        self.conv_in = CausalConv3d(in_channels, dims[0], 3, padding=1, time_scale=ts)
        blocks: list[nn.Module] = []
        scale = 1.0
        last = len(dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            temporal = bool(temperal_downsample[i]) if i != last else False
            if is_residual:
                blocks.append(ResidualDownBlock(in_dim, out_dim, dropout, num_res_blocks, temporal, i != last, ts))
            else:
                for _ in range(num_res_blocks):
                    blocks.append(ResidualBlock(in_dim, out_dim, dropout, ts))
                    if scale in attn_scales:
                        blocks.append(AttentionBlock(out_dim))
                    in_dim = out_dim
                if i != last:
                    blocks.append(Resample(out_dim, "downsample3d" if temporal else "downsample2d", time_scale=ts))
                    scale /= 2.0
            if temporal:
                ts //= 2
        self.down_blocks = nn.ModuleList(blocks)
        self.full_rate_until = next((i for i, b in enumerate(blocks) if _downsamples_time(b)), len(blocks))
        """Index of the first down block that downsamples time (all before it run at the input frame rate)."""
        self.input_time_scale = self.conv_in.time_scale
        self.mid_block = MidBlock(dims[-1], dropout, ts)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], z_dim, 3, padding=1, time_scale=ts)

    def forward_front(
        self, x: torch.Tensor, run: ChunkRun, after_block: StageHook | None = None, frame_slice: int | None = None
    ) -> torch.Tensor:
        """``after_block(i, x) -> x`` (optional) runs after ``down_blocks[i]`` (the exact tiler crops there).

        ``frame_slice``: conv_in and the blocks before the first temporal downsampling (full
        resolution, full frame rate) run on slices of that many frames (:func:`run_time_sliced`).
        """
        split = self.full_rate_until

        def full_rate(y: torch.Tensor, sub: ChunkRun | SliceRun) -> torch.Tensor:
            y = self.conv_in(y, sub)
            for i, block in enumerate(self.down_blocks[:split]):
                y = block(y, sub)
                if after_block is not None:
                    y = after_block(i, y)
            return y

        x = run_time_sliced(x, run, self.input_time_scale, frame_slice, full_rate)
        for i, block in enumerate(self.down_blocks[split:], split):
            x = block(x, run)
            if after_block is not None:
                x = after_block(i, x)
        return x

    def forward_back(self, x: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        x = self.mid_block(x, run)
        return self.conv_out(F.silu(self.norm_out(x), inplace=True), run)


def _downsamples_time(block: nn.Module) -> bool:
    """True for a down block (or a Resample) with a temporal downsampler."""
    return any(isinstance(m, Resample) and m.mode == "downsample3d" for m in block.modules())


class Decoder(nn.Module):
    """Wan VAE decoder, split in a latent-resolution head and a high-resolution tail.

    head: conv_in + mid_block (per-frame global attention); tail: up_blocks + norm_out
    + SiLU + conv_out (convolutions and per-pixel norms only).
    """

    def __init__(
        self,
        dim: int,
        z_dim: int,
        dim_mult: tuple[int, ...],
        num_res_blocks: int,
        temperal_upsample: tuple[bool, ...],
        dropout: float,
        out_channels: int,
        is_residual: bool,
    ) -> None:
        super().__init__()
        dims = [dim * m for m in (dim_mult[-1], *dim_mult[::-1])]
        ts = 1
        self.conv_in = CausalConv3d(z_dim, dims[0], 3, padding=1, time_scale=ts)
        self.mid_block = MidBlock(dims[0], dropout, ts)
        blocks: list[nn.Module] = []
        last = len(dim_mult) - 1
        for i, (in_dim, out_dim) in enumerate(zip(dims[:-1], dims[1:])):
            up = i != last
            temporal = bool(temperal_upsample[i]) if up else False
            if is_residual:
                blocks.append(ResidualUpBlock(in_dim, out_dim, num_res_blocks, dropout, temporal, up, ts))
            else:
                if i > 0:
                    in_dim //= 2  # the previous stage's resample conv halved the channels
                mode = ("upsample3d" if temporal else "upsample2d") if up else None
                blocks.append(UpBlock(in_dim, out_dim, num_res_blocks, dropout, mode, ts))
            if temporal:
                ts *= 2
        self.up_blocks = nn.ModuleList(blocks)
        self.norm_out = RMSNorm(dims[-1])
        self.conv_out = CausalConv3d(dims[-1], out_channels, 3, padding=1, time_scale=ts)
        temporal_blocks = [i for i in range(len(dim_mult)) if i != last and temperal_upsample[i]]
        self.full_rate_from = (max(temporal_blocks) + 1) if temporal_blocks else 0
        """Index of the first up block after the last temporal upsampling (frames are final from there)."""
        self.full_rate_time_scale = ts

    def forward_head(self, z: torch.Tensor, run: ChunkRun) -> torch.Tensor:
        return self.mid_block(self.conv_in(z, run), run)

    def forward_tail(
        self, x: torch.Tensor, run: ChunkRun, after_block: StageHook | None = None, frame_slice: int | None = None
    ) -> torch.Tensor:
        """``after_block(i, x) -> x`` (optional) runs after ``up_blocks[i]`` (the exact tiler crops there).

        ``frame_slice``: the up blocks after the last temporal upsampling (the largest
        activations) run on slices of that many frames (:func:`run_time_sliced`).
        """
        split = self.full_rate_from
        fine = getattr(after_block, "after_resnet", None)

        def inner(i: int) -> ResnetHook | None:
            return None if fine is None else (lambda j, y: fine(i, j, y))

        def run_block(i: int, block: nn.Module, y: torch.Tensor, sub: ChunkRun | SliceRun) -> torch.Tensor:
            return block(y, sub, inner(i)) if isinstance(block, UpBlock) else block(y, sub)

        # The last temporal upsampler's spatial half is frame-local: it joins the time slices,
        # so its 2x-upsampled input never exists for a whole chunk (Wan 2.1 up blocks).
        last = self.up_blocks[split - 1] if split else None
        space_in_slices = isinstance(last, UpBlock)
        for i, block in enumerate(self.up_blocks[:split]):
            if space_in_slices and i == split - 1:
                x = block.forward_time(x, run, inner(i))  # its spatial half and its crop run in the slices
                continue
            x = run_block(i, block, x, run)
            if after_block is not None:
                x = after_block(i, x)

        def full_rate(y: torch.Tensor, sub: ChunkRun | SliceRun) -> torch.Tensor:
            if space_in_slices:
                y = last.forward_space(y)
                if after_block is not None:
                    y = after_block(split - 1, y)
            for i, block in enumerate(self.up_blocks[split:], split):
                y = run_block(i, block, y, sub)
                if after_block is not None:
                    y = after_block(i, y)
            return self.conv_out(F.silu(self.norm_out(y), inplace=True), sub)

        return run_time_sliced(x, run, self.full_rate_time_scale, frame_slice, full_rate)


# ---------------------------------------------------------------------------- patching
def patchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """``(B, C, T, H, W) -> (B, C*p*p, T, H/p, W/p)``; channel ``c*p*p + pw*p + ph``."""
    if p == 1:
        return x
    b, c, t, h, w = x.shape
    x = x.reshape(b, c, t, h // p, p, w // p, p).permute(0, 1, 6, 4, 2, 3, 5)
    return x.reshape(b, c * p * p, t, h // p, w // p)


def unpatchify(x: torch.Tensor, p: int) -> torch.Tensor:
    """Inverse of :func:`patchify`."""
    if p == 1:
        return x
    b, cpp, t, h, w = x.shape
    c = cpp // (p * p)
    x = x.reshape(b, c, p, p, t, h, w).permute(0, 1, 4, 5, 3, 6, 2)
    return x.reshape(b, c, t, h * p, w * p)
