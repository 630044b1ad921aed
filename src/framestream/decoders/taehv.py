"""TAEHV as a pipeline decoder: the tiny streaming decoder for Wan latents.

``TAEHVDecoder(latents, autoregressive_index, cache)`` decodes one AR step of normalised
Wan latents ``(B, C, n, h, w)`` (the DiT's output, as Self-Forcing feeds TAEHV) into
frames ``(B, 3, frames, H, W)`` in [-1, 1]: AR 0 gives ``1 + 4(n-1)`` frames, later steps
``4n``, like the full Wan VAE. The cache is a
:class:`~framestream.models.taehv.state.TAEHVDecodeState`.
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.decoders.base import DecoderConfig, StreamingVideoDecoder
from framestream.models.taehv.checkpoint import load_taehv
from framestream.models.taehv.config import TAEW2_1_ARCH, TAEHVArchConfig
from framestream.models.taehv.model import TAEHV, init_taehv_random
from framestream.models.taehv.state import TAEHVDecodeState
from framestream.utils.dtypes import parse_dtype

__all__ = ["TAEHVDecoder", "TAEHVDecoderConfig", "build_taehv"]

_FLOAT_TYPES = (torch.float32, torch.bfloat16, torch.float16)


def build_taehv(
    arch: TAEHVArchConfig,
    *,
    checkpoint_path: str | None,
    dtype: torch.dtype,
    device: torch.device | str | None,
    seed: int = 0,
    include_encoder: bool = False,
    include_decoder: bool = True,
) -> TAEHV:
    """A TAEHV loaded from ``checkpoint_path`` (checked against ``arch``) or seeded random."""
    device = torch.device("cpu") if device is None else torch.device(device)
    if checkpoint_path is not None:
        return load_taehv(
            checkpoint_path, arch=arch, dtype=dtype, device=device,
            include_encoder=include_encoder, include_decoder=include_decoder,
        )
    model = TAEHV(arch, include_encoder=include_encoder, include_decoder=include_decoder)
    init_taehv_random(model, seed)
    return model.to(device=device, dtype=dtype).eval().requires_grad_(False)


class TAEHVDecoder(StreamingVideoDecoder[TAEHVDecodeState]):
    """Streaming TAEHV decoder: normalised Wan latents of one AR step -> pixels in [-1, 1]."""

    config: "TAEHVDecoderConfig"

    def __init__(self, config: "TAEHVDecoderConfig", device: torch.device | str | None = None) -> None:
        super().__init__(config)
        self.dtype = parse_dtype(config.dtype)
        self.taehv = build_taehv(config.arch, checkpoint_path=config.checkpoint_path, dtype=self.dtype, device=device, seed=config.seed)
        if config.compile:
            self.taehv.compile_chunks()

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.arch.spatial_ratio

    @property
    def temporal_compression_ratio(self) -> int:
        return self.config.arch.temporal_ratio

    def initialize_autoregressive_cache(self, **context: Any) -> TAEHVDecodeState:
        """A fresh decoder stream."""
        return TAEHVDecodeState()

    @torch.no_grad()
    def forward(  # noqa: D401
        self,
        input: torch.Tensor,  # noqa: A002 - the pipeline's call shape
        autoregressive_index: int = 0,
        cache: TAEHVDecodeState | None = None,
    ) -> torch.Tensor:
        """Decode ``(B, C, n, h, w)`` latents; returns ``(B, 3, frames, h*s, w*s)`` in [-1, 1]."""
        if autoregressive_index < 0:
            raise ValueError(f"autoregressive_index must be >= 0, got {autoregressive_index}")
        if cache is not None and not isinstance(cache, TAEHVDecodeState):
            raise TypeError(f"expected a TAEHVDecodeState from initialize_autoregressive_cache(), got {type(cache).__name__}")
        started = cache is not None and cache.started
        if autoregressive_index == 0 and started:
            raise ValueError("autoregressive_index=0 starts a new stream but the cache has already been used")
        if autoregressive_index > 0 and not started:
            raise ValueError(f"autoregressive_index={autoregressive_index} continues a stream but the cache is missing or fresh")
        if not torch.is_tensor(input) or not input.is_floating_point() or input.dim() != 5:
            raise ValueError("TAEHVDecoder expects floating-point latents (B, C, n, h, w)")
        state = TAEHVDecodeState() if cache is None else cache
        frames = self.taehv.decode(input.to(self.dtype).transpose(1, 2), state)  # (B, T, 3, H, W) in [0, 1]
        return frames.transpose(1, 2).mul(2).sub(1)


@config_dataclass
class TAEHVDecoderConfig(DecoderConfig):
    """Config of :class:`TAEHVDecoder`."""

    _target: type = field(default_factory=lambda: TAEHVDecoder)
    arch: TAEHVArchConfig = TAEW2_1_ARCH
    """TAEHV architecture (TAEW2_1_ARCH, TAEW2_2_ARCH or a tiny one)."""
    checkpoint_path: str | None = None
    """``taew2_1.pth`` / ``taew2_2.pth`` (public layout); ``None`` = seeded random weights."""
    dtype: torch.dtype = torch.float32
    """Dtype of the weights, activations and the returned frames."""
    seed: int = 0
    """Seed of the random weights used when ``checkpoint_path`` is None."""
    compile: bool = False
    """Run each chunk under ``torch.compile`` (one graph per chunk shape; CUDA-graph replay on CUDA)."""

    def __post_init__(self) -> None:
        if parse_dtype(self.dtype) not in _FLOAT_TYPES:
            raise ValueError(f"TAEHVDecoderConfig.dtype must be fp32, bf16 or fp16, got {self.dtype}")
