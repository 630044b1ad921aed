"""The Wan VAE as a pipeline's per-AR-step encoder (pixels in [-1, 1] -> latents).

See :mod:`framestream.decoders.wan` for the shared adapter rules (stream state, tiling, dtypes).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.decoders.wan import _check_common, _wan_exact, _WanVAEAdapter
from framestream.encoders.base import EncoderConfig, StreamingVideoEncoder
from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.config import WAN21_VAE_ARCH, WanVAEArchConfig
from framestream.tiling.planner import TilingConfig

__all__ = ["WanVAEEncoderConfig", "WanVAEEncoder"]


class WanVAEEncoder(_WanVAEAdapter, StreamingVideoEncoder[WanCausalCache]):
    """Streaming Wan VAE encoder: pixels in [-1, 1] of one AR step -> posterior-mean latents."""

    config: "WanVAEEncoderConfig"
    _part = "encoder"
    _tiled_state_name = "WanTiledEncodeState"

    def __init__(self, config: "WanVAEEncoderConfig", device: torch.device | str | None = None) -> None:
        super().__init__(config)
        self._build(config, device)

    @torch.no_grad()
    def forward(  # noqa: D401
        self,
        input: torch.Tensor,  # noqa: A002 - the pipeline's call shape
        autoregressive_index: int = 0,
        cache: Any = None,
    ) -> torch.Tensor:
        """Encode ``(B, 3, frames, H, W)``: AR 0 takes ``1 + 4k`` frames, later steps ``4k``."""
        cache = self._stream_state(cache, autoregressive_index)
        if not torch.is_tensor(input) or not input.is_floating_point():
            raise ValueError("WanVAEEncoder expects a floating-point video in [-1, 1]")
        if input.dim() == 5:  # AR-aware frame rule, before any work
            self.get_output_temporal_size(autoregressive_index, input.shape[2])
        x = input.to(self.compute_dtype)
        if self.config.tiling is not None:
            mu = _wan_exact().encode_tiled(self.vae, x, self._encode_plan(x, cache), chunk_size=self.config.chunk_size, state=cache)
        else:
            mu = self.vae.encode(x, chunk_size=self.config.chunk_size, cache=cache)
        return self.vae.normalize_latents(mu) if self.config.normalize_latents else mu

    def _encode_plan(self, x: torch.Tensor, cache: Any) -> Any:
        """The stream's tile plan; a new one is never a loss (:func:`plan_exact_encode_safe`: tiles
        enlarged until the halo overhead is capped and the estimated peak is below the untiled
        encode's, else one tile), with a warning when the configured tiles were changed."""
        if getattr(cache, "started", False) and cache.plan is not None:
            return cache.plan
        import warnings

        from framestream.tiling.wan_encode_budget import plan_exact_encode_safe

        safe = plan_exact_encode_safe(
            self.vae,
            (int(x.shape[3]), int(x.shape[4])),
            self.config.tiling,
            batch_size=int(x.shape[0]),
            chunk_size=self.config.chunk_size,
            dtype=self.compute_dtype,
        )
        if safe.message:
            warnings.warn(safe.message, stacklevel=2)
        return safe.plan


@config_dataclass
class WanVAEEncoderConfig(EncoderConfig):
    """Config of :class:`WanVAEEncoder`."""

    _target: type = field(default_factory=lambda: WanVAEEncoder)
    arch: WanVAEArchConfig = WAN21_VAE_ARCH
    """VAE architecture (WAN21_VAE_ARCH, WAN22_VAE_ARCH or a reduced one)."""
    checkpoint_path: str | None = None
    """Original ``.pth``, diffusers folder / safetensors or hub id; ``None`` = seeded random weights."""
    weights_dtype: torch.dtype = torch.float32
    """Dtype the weights are stored in."""
    compute_dtype: torch.dtype = torch.float32
    """Dtype of activations, caches and the returned latents (weights are cast on use if different)."""
    chunk_size: int = 1
    """Latent frames per model call after the first frame (4x as many pixel frames; zero-padded tail)."""
    normalize_latents: bool = True
    """Return normalised latents ((mu - mean) / std) instead of the raw posterior mean."""
    seed: int = 0
    """Seed of the random weights used when ``checkpoint_path`` is None."""
    tiling: TilingConfig | None = None
    """Exact spatial tiling (:mod:`framestream.tiling.wan_exact`; same result, less memory); None = untiled."""
    compile: bool = False
    """Run the chunk (and tile) calls under ``torch.compile``: one graph per chunk shape, reused for the stream."""

    def __post_init__(self) -> None:
        _check_common(self)
