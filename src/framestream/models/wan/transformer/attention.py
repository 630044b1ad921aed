"""Attention pieces of the Wan DiT: norms, 3D RoPE, the attention module, block-causal masks.

Layout conventions: token sequences are ``[B, L, C]``; per-head tensors are
``[B, L, H, D]`` (heads after tokens, as Wan and flash-attention use), transposed to
``[B, H, L, D]`` only for :func:`torch.nn.functional.scaled_dot_product_attention`.
"""

from __future__ import annotations

import math

import torch
import torch.nn as nn
import torch.nn.functional as F

__all__ = [
    "RMSNorm",
    "FP32LayerNorm",
    "WanAttention",
    "rope_cos_sin",
    "apply_rope",
    "attention",
    "local_self_attention",
    "block_causal_mask",
]


class RMSNorm(nn.Module):
    """RMS norm with a learned scale, computed in fp32 and cast back (Wan's ``WanRMSNorm``)."""

    def __init__(self, dim: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.eps = eps
        self.weight = nn.Parameter(torch.ones(dim))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        xf = x.float()
        xf = xf * torch.rsqrt(xf.pow(2).mean(dim=-1, keepdim=True) + self.eps)
        return xf.type_as(x) * self.weight.to(x.dtype)


class FP32LayerNorm(nn.LayerNorm):
    """LayerNorm computed in fp32 whatever the input / weight dtype, cast back to the input dtype."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        weight = self.weight.float() if self.weight is not None else None
        bias = self.bias.float() if self.bias is not None else None
        return F.layer_norm(x.float(), self.normalized_shape, weight, bias, self.eps).to(x.dtype)


# ------------------------------------------------------------------------------ RoPE
def _axis_angles(positions: torch.Tensor, dim: int, theta: float) -> torch.Tensor:
    """``[n, dim/2]`` rotation angles of one axis (float64, as Wan's ``rope_params``)."""
    inv_freq = 1.0 / torch.pow(theta, torch.arange(0, dim, 2, dtype=torch.float64, device=positions.device) / dim)
    return torch.outer(positions.to(torch.float64), inv_freq)


def rope_cos_sin(
    grid: tuple[int, int, int],
    split: tuple[int, int, int],
    start_frame: int = 0,
    max_seq_len: int = 1024,
    theta: float = 10000.0,
    device: torch.device | str | None = None,
) -> tuple[torch.Tensor, torch.Tensor]:
    """cos / sin of Wan's 3D RoPE for a ``(frames, rows, cols)`` patch grid, ``[L, D/2]`` fp32.

    The head dim is split into ``split = (t, h, w)`` channels (Wan: ``d - 4*(d//6)``,
    ``2*(d//6)``, ``2*(d//6)``); each axis rotates its channel pairs by its own position.
    Frame positions start at ``start_frame`` (the block's offset in causal mode); tokens
    are ordered frame-major, then row, then column, as the patch embedding flattens them.
    """
    f, h, w = grid
    if start_frame + f > max_seq_len or h > max_seq_len or w > max_seq_len:
        raise ValueError(
            f"RoPE positions exceed rope_max_seq_len={max_seq_len}: frames {start_frame}..{start_frame + f - 1}, "
            f"grid {h}x{w}"
        )
    st, sh, sw = split
    at = _axis_angles(torch.arange(start_frame, start_frame + f, device=device), st, theta)
    ah = _axis_angles(torch.arange(h, device=device), sh, theta)
    aw = _axis_angles(torch.arange(w, device=device), sw, theta)
    angles = torch.cat(
        [
            at[:, None, None, :].expand(f, h, w, -1),
            ah[None, :, None, :].expand(f, h, w, -1),
            aw[None, None, :, :].expand(f, h, w, -1),
        ],
        dim=-1,
    ).reshape(f * h * w, -1)
    return angles.cos().float(), angles.sin().float()


def apply_rope(x: torch.Tensor, cos: torch.Tensor, sin: torch.Tensor) -> torch.Tensor:
    """Rotate interleaved channel pairs ``(x[2i], x[2i+1])`` of ``x: [B, L, H, D]`` (fp32 math)."""
    xf = x.float().unflatten(-1, (-1, 2))
    x1, x2 = xf[..., 0], xf[..., 1]
    c, s = cos[None, :, None, :], sin[None, :, None, :]
    out = torch.stack([x1 * c - x2 * s, x1 * s + x2 * c], dim=-1).flatten(-2)
    return out.type_as(x)


# -------------------------------------------------------------------------- attention
def attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """Softmax attention on ``[B, L, H, D]`` tensors; ``mask`` is boolean, True = may attend."""
    out = F.scaled_dot_product_attention(q.transpose(1, 2), k.transpose(1, 2), v.transpose(1, 2), attn_mask=mask)
    return out.transpose(1, 2)


def local_self_attention(
    q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, self_kv=None, mask: torch.Tensor | None = None
) -> torch.Tensor:
    """One-process self-attention: ``self_kv(k, v)`` (causal KV cache) supplies the keys when given."""
    if self_kv is not None:
        k, v = self_kv(k, v)
    return attention(q, k, v, mask)


class WanAttention(nn.Module):
    """Wan self- or cross-attention: q/k/v/out projections and RMS q/k norm across heads.

    Submodule names follow diffusers (``to_q``, ``to_k``, ``to_v``, ``to_out.0``,
    ``norm_q``, ``norm_k``); the original Wan names are ``q``, ``k``, ``v``, ``o``.
    The caller decides where keys / values come from (a KV cache, precomputed text
    keys), so the module exposes the projection steps rather than one fused forward.
    """

    def __init__(self, dim: int, heads: int, eps: float = 1e-6) -> None:
        super().__init__()
        self.heads = heads
        self.head_dim = dim // heads
        self.to_q = nn.Linear(dim, dim)
        self.to_k = nn.Linear(dim, dim)
        self.to_v = nn.Linear(dim, dim)
        self.to_out = nn.ModuleList([nn.Linear(dim, dim)])
        self.norm_q = RMSNorm(dim, eps)
        self.norm_k = RMSNorm(dim, eps)

    def query(self, x: torch.Tensor) -> torch.Tensor:
        """``[B, L, C] -> [B, L, H, D]`` normalised queries."""
        return self.norm_q(self.to_q(x)).unflatten(-1, (self.heads, self.head_dim))

    def key_value(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``[B, L, C] ->`` normalised keys and values, each ``[B, L, H, D]``."""
        k = self.norm_k(self.to_k(x)).unflatten(-1, (self.heads, self.head_dim))
        v = self.to_v(x).unflatten(-1, (self.heads, self.head_dim))
        return k, v

    def output(self, x: torch.Tensor, like: torch.Tensor) -> torch.Tensor:
        """Merge heads of ``[B, L, H, D]`` and apply the output projection."""
        return self.to_out[0](x.flatten(-2).type_as(like))


# ------------------------------------------------------------------------------- masks
def block_causal_mask(
    num_frames: int,
    frames_per_block: int,
    tokens_per_frame: int,
    kv_cache_frames: int | None = None,
    sink_frames: int = 0,
    device: torch.device | str | None = None,
) -> torch.Tensor:
    """Boolean ``[L, L]`` self-attention mask of block-causal AR generation (True = attend).

    A query in block ``b`` (frames ``[b*n, (b+1)*n)``) sees every frame of its own block
    and the frames an AR rollout with a KV cache would hold when generating it: all
    earlier frames, or with a rolling cache of ``kv_cache_frames`` the ``sink_frames``
    first frames plus the most recent ``kv_cache_frames - sink_frames`` earlier frames.
    One forward with this mask equals the block-by-block rollout (the tests check it).
    """
    frame = torch.arange(num_frames, device=device)
    q_block = frame // frames_per_block
    block_start = q_block * frames_per_block  # first frame of each query frame's block
    same_block = q_block[:, None] == q_block[None, :]
    earlier = frame[None, :] < block_start[:, None]
    if kv_cache_frames is None:
        visible = earlier
    else:
        recent = frame[None, :] >= (block_start[:, None] - (kv_cache_frames - sink_frames))
        sink = frame[None, :] < sink_frames
        visible = earlier & (recent | sink)
    frame_mask = same_block | visible
    return frame_mask.repeat_interleave(tokens_per_frame, 0).repeat_interleave(tokens_per_frame, 1)


def scaled_init_(table: torch.Tensor) -> None:
    """diffusers' init of the modulation tables: ``randn / sqrt(dim)``."""
    with torch.no_grad():
        table.normal_().div_(math.sqrt(table.shape[-1]))
