"""TAEHV building blocks and the two ``nn.Sequential`` stacks.

The stacks keep the exact layer order of the public checkpoints, whose keys are
``encoder.<index>.…`` / ``decoder.<index>.…`` of an ``nn.Sequential``: the index of a
layer is its position in the lists built here.
"""

from __future__ import annotations

import torch
import torch.nn as nn

from framestream.models.taehv.config import TAEHVArchConfig

__all__ = ["Clamp", "MemBlock", "TPool", "TGrow", "build_encoder", "build_decoder"]


def _conv3x3(n_in: int, n_out: int, **kwargs: object) -> nn.Conv2d:
    return nn.Conv2d(n_in, n_out, 3, padding=1, **kwargs)  # type: ignore[arg-type]


class Clamp(nn.Module):
    """Soft clamp of the latent input to about (-3, 3): ``tanh(x / 3) * 3``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.tanh(x / 3) * 3


class MemBlock(nn.Module):
    """Residual block that also sees the previous frame of its own input.

    ``forward(x, past)``: ``relu(convs(cat[x, past]) + skip(x))`` where ``past`` holds,
    frame for frame, the block input one frame earlier. This one-frame memory is the
    whole streaming state of a TAEHV stack.
    """

    def __init__(self, n_in: int, n_out: int) -> None:
        super().__init__()
        self.conv = nn.Sequential(
            _conv3x3(n_in * 2, n_out), nn.ReLU(inplace=True), _conv3x3(n_out, n_out), nn.ReLU(inplace=True),
            _conv3x3(n_out, n_out),
        )
        self.skip = nn.Conv2d(n_in, n_out, 1, bias=False) if n_in != n_out else nn.Identity()
        self.act = nn.ReLU(inplace=True)

    def forward(self, x: torch.Tensor, past: torch.Tensor) -> torch.Tensor:
        return self.act(self.conv(torch.cat([x, past], 1)) + self.skip(x))


class TPool(nn.Module):
    """Temporal pooling: ``stride`` consecutive frames, stacked on channels, mixed by a 1x1 conv."""

    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f * stride, n_f, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N*T, C, H, W)`` with T a multiple of the stride -> ``(N*T/stride, C, H, W)``."""
        _, c, h, w = x.shape
        return self.conv(x.reshape(-1, self.stride * c, h, w))


class TGrow(nn.Module):
    """Temporal upsampling: a 1x1 conv to ``stride`` times the channels, split into ``stride`` frames."""

    def __init__(self, n_f: int, stride: int) -> None:
        super().__init__()
        self.stride = stride
        self.conv = nn.Conv2d(n_f, n_f * stride, 1, bias=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(N*T, C, H, W)`` -> ``(N*T*stride, C, H, W)``; each frame's children follow it in order."""
        _, c, h, w = x.shape
        return self.conv(x).reshape(-1, c, h, w)


def build_encoder(arch: TAEHVArchConfig) -> nn.Sequential:
    """Encoder stack: frames (pixel-unshuffled) -> latents, 8x smaller, 4x fewer frames."""
    n = arch.encoder_channels
    layers: list[nn.Module] = [_conv3x3(arch.image_channels * arch.patch_size**2, n), nn.ReLU(inplace=True)]
    for pool in arch.encoder_time_downscale:
        layers += [TPool(n, 2 if pool else 1), _conv3x3(n, n, stride=2, bias=False)]
        layers += [MemBlock(n, n) for _ in range(3)]
    layers.append(_conv3x3(n, arch.latent_channels))
    return nn.Sequential(*layers)


def build_decoder(arch: TAEHVArchConfig) -> nn.Sequential:
    """Decoder stack: latents -> frames (before pixel shuffle and clamp)."""
    n_f = [int(c) for c in arch.decoder_channels]
    layers: list[nn.Module] = [Clamp(), _conv3x3(arch.latent_channels, n_f[0]), nn.ReLU(inplace=True)]
    for stage in range(3):
        width = n_f[stage]
        layers += [MemBlock(width, width) for _ in range(3)]
        layers.append(nn.Upsample(scale_factor=2 if arch.decoder_space_upscale[stage] else 1))
        layers.append(TGrow(width, 2 if arch.decoder_time_upscale[stage] else 1))
        layers.append(_conv3x3(width, n_f[stage + 1], bias=False))
    layers += [nn.ReLU(inplace=True), _conv3x3(n_f[3], arch.image_channels * arch.patch_size**2)]
    return nn.Sequential(*layers)
