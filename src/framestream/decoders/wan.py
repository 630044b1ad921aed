"""The Wan VAE as a pipeline's per-AR-step decoder (the encoder is in :mod:`framestream.encoders.wan`).

``decoder(latents, autoregressive_index, cache)`` decodes one AR step's latent frames
and updates ``cache`` (a :class:`WanCausalCache` from
``initialize_autoregressive_cache()``) in place: AR 0 gives ``1 + 4(n-1)`` frames,
later steps ``4n``. The encoder mirrors it. These adapters sit above both the model
(:mod:`framestream.models.wan.vae`) and the exact tiler (:mod:`framestream.tiling`), which
the model itself must not import. Weights dtype and compute dtype are
separate settings; without a checkpoint the weights are seeded random (tests,
benchmarks).

With ``tiling`` set (a :class:`~framestream.tiling.planner.TilingConfig`), the
high-resolution stages run on spatial tiles through the exact tiler
(:mod:`framestream.tiling.wan_exact`): the result equals the untiled one up to float
rounding, with less peak memory. The cache is then a
:class:`~framestream.tiling.wan_exact.WanTiledDecodeState` /
:class:`~framestream.tiling.wan_exact.WanTiledEncodeState` (what
``initialize_autoregressive_cache()`` returns).
"""

from __future__ import annotations

from dataclasses import field
from typing import Any

import torch

from framestream.config import config_dataclass
from framestream.decoders.base import DecoderConfig, StreamingVideoDecoder
from framestream.models.wan.vae.build import build_wan_vae
from framestream.models.wan.vae.cache import WanCausalCache
from framestream.models.wan.vae.config import WAN21_VAE_ARCH, WanVAEArchConfig
from framestream.tiling.planner import TilingConfig
from framestream.utils.dtypes import parse_dtype

__all__ = ["WanVAEDecoderConfig", "WanVAEDecoder"]

_FLOAT_TYPES = (torch.float32, torch.bfloat16, torch.float16)


def _check_common(config: Any) -> None:
    for name in ("weights_dtype", "compute_dtype"):
        if parse_dtype(getattr(config, name)) not in _FLOAT_TYPES:
            raise ValueError(f"{type(config).__name__}.{name} must be fp32, bf16 or fp16, got {getattr(config, name)}")
    if not isinstance(config.compile, bool):
        raise ValueError(f"{type(config).__name__}.compile must be a bool, got {config.compile!r}")
    if not isinstance(config.chunk_size, int) or config.chunk_size < 1:
        raise ValueError(f"{type(config).__name__}.chunk_size must be a positive int, got {config.chunk_size!r}")
    tiling = config.tiling
    if tiling is not None:
        name = f"{type(config).__name__}.tiling"
        if not isinstance(tiling, TilingConfig):
            raise ValueError(f"{name} must be a TilingConfig or None, got {type(tiling).__name__}")
        if tiling.temporal_tile_frames is not None:
            raise ValueError(f"{name}: the exact tiler streams time in chunks; set temporal_tile_frames=None")
        tiling.in_latents(config.arch.scale_factor_spatial)  # sizes must be multiples of the spatial scale


def _wan_exact() -> Any:
    from framestream.tiling import wan_exact

    return wan_exact


def _checked_stream_state(cache: Any, autoregressive_index: int, state_type: type, started: bool) -> None:
    """Raise unless ``cache`` is at the right point of its stream for this AR step."""
    if autoregressive_index < 0:
        raise ValueError(f"autoregressive_index must be >= 0, got {autoregressive_index}")
    if cache is not None and not isinstance(cache, state_type):
        raise TypeError(
            f"expected a {state_type.__name__} from initialize_autoregressive_cache(), got {type(cache).__name__}"
        )
    if autoregressive_index == 0 and started:
        raise ValueError(
            "autoregressive_index=0 starts a new stream but the cache has already been used; "
            "pass a fresh initialize_autoregressive_cache()"
        )
    if autoregressive_index > 0 and not started:
        raise ValueError(
            f"autoregressive_index={autoregressive_index} continues a stream but the cache is "
            f"{'missing' if cache is None else 'fresh'}; pass the cache used for the earlier steps"
        )


class _WanVAEAdapter:
    """What the streaming decoder and encoder share: the VAE half they build, the
    compression ratios, and their per-rollout state (a :class:`WanCausalCache`, or the
    exact tiler's state when ``config.tiling`` is set)."""

    _part: str
    """``"decoder"`` or ``"encoder"``: the half of the VAE this adapter runs."""
    _tiled_state_name: str
    """Name of the exact tiler's state class for this half."""

    def _build(self, config: Any, device: torch.device | str | None) -> None:
        _check_common(config)
        self.compute_dtype = parse_dtype(config.compute_dtype)
        self.vae = build_wan_vae(
            config.arch,
            checkpoint_path=config.checkpoint_path,
            weights_dtype=config.weights_dtype,
            device=device,
            include_encoder=self._part == "encoder",
            include_decoder=self._part == "decoder",
            seed=config.seed,
        )
        if config.compile:
            self.vae.compile_chunks()

    @property
    def spatial_compression_ratio(self) -> int:
        return self.config.arch.scale_factor_spatial  # type: ignore[attr-defined]

    @property
    def temporal_compression_ratio(self) -> int:
        return self.config.arch.scale_factor_temporal  # type: ignore[attr-defined]

    def _state_type(self) -> type:
        if self.config.tiling is None:  # type: ignore[attr-defined]
            return WanCausalCache
        return getattr(_wan_exact(), self._tiled_state_name)

    def initialize_autoregressive_cache(self, **context: Any) -> Any:
        """A fresh :class:`WanCausalCache`, or the exact tiler's stream state when ``config.tiling`` is set."""
        return self._state_type()()

    def _stream_state(self, cache: Any, autoregressive_index: int) -> Any:
        """The state to use for this AR step, checked against where its stream is."""
        state_type = self._state_type()
        if cache is None:
            started = False
        elif isinstance(cache, WanCausalCache):
            started = cache.started(self._part)
        else:
            started = bool(getattr(cache, "started", False))
        _checked_stream_state(cache, autoregressive_index, state_type, started)
        return state_type() if cache is None else cache


# ---------------------------------------------------------------------------- decoder
class WanVAEDecoder(_WanVAEAdapter, StreamingVideoDecoder[WanCausalCache]):
    """Streaming Wan VAE decoder: latents of one AR step -> pixels in [-1, 1]."""

    config: "WanVAEDecoderConfig"
    _part = "decoder"
    _tiled_state_name = "WanTiledDecodeState"

    def __init__(self, config: "WanVAEDecoderConfig", device: torch.device | str | None = None) -> None:
        super().__init__(config)
        self._build(config, device)

    @torch.no_grad()
    def forward(  # noqa: D401
        self,
        input: torch.Tensor,  # noqa: A002 - the pipeline's call shape
        autoregressive_index: int = 0,
        cache: Any = None,
    ) -> torch.Tensor:
        """Decode ``(B, z_dim, n, h, w)`` latents; returns ``(B, 3, frames, h*s, w*s)`` in the compute dtype."""
        cache = self._stream_state(cache, autoregressive_index)
        if not torch.is_tensor(input) or not input.is_floating_point():
            raise ValueError("WanVAEDecoder expects floating-point latents")
        z = input.to(self.compute_dtype)
        if self.config.normalize_latents:
            z = self.vae.denormalize_latents(z)
        if self.config.tiling is not None:
            return _wan_exact().decode_tiled(self.vae, z, self.config.tiling, chunk_size=self.config.chunk_size, state=cache)
        return self.vae.decode(z, chunk_size=self.config.chunk_size, cache=cache)


@config_dataclass
class WanVAEDecoderConfig(DecoderConfig):
    """Config of :class:`WanVAEDecoder`."""

    _target: type = field(default_factory=lambda: WanVAEDecoder)
    arch: WanVAEArchConfig = WAN21_VAE_ARCH
    """VAE architecture (WAN21_VAE_ARCH, WAN22_VAE_ARCH or a reduced one)."""
    checkpoint_path: str | None = None
    """Original ``.pth``, diffusers folder / safetensors or hub id; ``None`` = seeded random weights."""
    weights_dtype: torch.dtype = torch.float32
    """Dtype the weights are stored in."""
    compute_dtype: torch.dtype = torch.float32
    """Dtype of activations, caches and the returned frames (weights are cast on use if different)."""
    chunk_size: int = 1
    """Latent frames per model call (static shape; the last chunk is zero-padded)."""
    normalize_latents: bool = True
    """Inputs are normalised latents ((mu - mean) / std) and are un-normalised before decoding."""
    seed: int = 0
    """Seed of the random weights used when ``checkpoint_path`` is None."""
    tiling: TilingConfig | None = None
    """Exact spatial tiling (:mod:`framestream.tiling.wan_exact`; same result, less memory); None = untiled."""
    compile: bool = False
    """Run the chunk (and tile) calls under ``torch.compile``: one graph per chunk shape, reused for the stream."""

    def __post_init__(self) -> None:
        _check_common(self)
