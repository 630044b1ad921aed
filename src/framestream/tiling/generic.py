"""Blended tiled decode/encode for any decoder or encoder callable.

:func:`iter_tiled_decode` is the engine: a generator that decodes temporal tile by
temporal tile (spatial tiles of one shape batched into single calls), accumulates
``tile_output * mask`` into a buffer that covers only the frames the current temporal
tile touches, and yields ``(frames, start_index)`` as soon as no later tile has weight on
them. Masks sum to one (see :mod:`framestream.tiling.blend`), so there is no weight
buffer and no division; the carried part of the buffer is the overlap with the next
temporal tile. Peak memory therefore depends on the tile sizes, not on the video length.
All state lives in the generator's frame: it is reentrant and thread-safe, and an
exception leaves nothing behind.

Tiled decoding is exact only for decoders whose output is local (a tile sees all the
context its output needs); for real VAEs it is an approximation whose error the overlap
controls. The exact Wan tiler builds on the same planner and batching helpers.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from typing import Any

import torch

from framestream.decoders.base import StreamingDecoder
from framestream.encoders.base import StreamingEncoder
from framestream.tiling.batching import iter_batched
from framestream.tiling.blend import MaskCache
from framestream.tiling.planner import TilingConfig, TilePlan, VideoTilePlan, plan_pixel_grid, plan_video_decode

__all__ = [
    "as_decode_fn",
    "as_encode_fn",
    "infer_scales",
    "iter_tiled_decode",
    "tiled_decode",
    "tiled_encode",
]

DecodeFn = Callable[[torch.Tensor], torch.Tensor]


def _first_tensor(result: Any, what: str) -> torch.Tensor:
    if isinstance(result, torch.Tensor):
        return result
    if isinstance(result, (tuple, list)) and result and isinstance(result[0], torch.Tensor):
        return result[0]
    raise TypeError(f"{what} returned {type(result).__name__}, expected a tensor (or a tuple starting with one)")


def as_decode_fn(decoder: Any) -> DecodeFn:
    """Turn a decoder object into ``fn(latents) -> pixels``.

    - a :class:`~framestream.decoders.base.StreamingDecoder`: called as
      ``decoder(z, 0, decoder.initialize_autoregressive_cache())``: a fresh cache per call,
      so no tile ever sees another tile's state;
    - an object with ``.decode`` (a diffusers VAE): ``vae.decode(z).sample``;
    - any other callable: used as is.
    """
    if isinstance(decoder, StreamingDecoder):

        def streaming_decode(z: torch.Tensor) -> torch.Tensor:
            return _first_tensor(decoder(z, 0, decoder.initialize_autoregressive_cache()), type(decoder).__name__)

        return streaming_decode
    if hasattr(decoder, "decode") and callable(decoder.decode):

        def vae_decode(z: torch.Tensor) -> torch.Tensor:
            out = decoder.decode(z)
            return out.sample if hasattr(out, "sample") else _first_tensor(out, f"{type(decoder).__name__}.decode")

        return vae_decode
    if callable(decoder):
        return decoder
    raise TypeError(f"cannot decode with a {type(decoder).__name__}: expected a callable, a StreamingDecoder or an object with .decode")


def as_encode_fn(encoder: Any, *, sample: bool = False, generator: torch.Generator | None = None) -> DecodeFn:
    """Turn an encoder object into ``fn(pixels) -> latents``.

    - a :class:`~framestream.encoders.base.StreamingEncoder`: called with AR index 0 and a fresh cache;
    - an object with ``.encode`` (a diffusers VAE): the posterior's mode (or a sample when ``sample``);
    - any other callable: used as is.
    """
    if isinstance(encoder, StreamingEncoder):

        def streaming_encode(x: torch.Tensor) -> torch.Tensor:
            return _first_tensor(encoder(x, 0, encoder.initialize_autoregressive_cache()), type(encoder).__name__)

        return streaming_encode
    if hasattr(encoder, "encode") and callable(encoder.encode):

        def vae_encode(x: torch.Tensor) -> torch.Tensor:
            out = encoder.encode(x)
            dist = getattr(out, "latent_dist", None)
            if dist is None and isinstance(out, (tuple, list)) and out and hasattr(out[0], "mode"):
                dist = out[0]
            if dist is not None:
                return dist.sample(generator) if sample else dist.mode()
            return _first_tensor(out, f"{type(encoder).__name__}.encode")

        return vae_encode
    if callable(encoder):
        return encoder
    raise TypeError(f"cannot encode with a {type(encoder).__name__}: expected a callable, a StreamingEncoder or an object with .encode")


def infer_scales(model: Any) -> tuple[int | None, int | None]:
    """(spatial, temporal) compression ratios a decoder/encoder object declares, or None where it does not."""
    spatial = getattr(model, "spatial_compression_ratio", None)
    temporal = getattr(model, "temporal_compression_ratio", None)
    config = getattr(model, "config", None)
    if spatial is None:
        spatial = getattr(config, "scale_factor_spatial", None)
    if temporal is None:
        temporal = getattr(config, "scale_factor_temporal", None)
    return (spatial if isinstance(spatial, int) else None, temporal if isinstance(temporal, int) else None)


def _resolve_scales(model: Any, spatial_scale: int | None, temporal_scale: int | None, need_temporal: bool) -> tuple[int, int]:
    inferred = infer_scales(model)
    spatial = spatial_scale if spatial_scale is not None else inferred[0]
    temporal = temporal_scale if temporal_scale is not None else inferred[1]
    if spatial is None:
        raise ValueError("spatial_scale is required: the decoder/encoder does not declare a spatial compression ratio")
    if temporal is None:
        if need_temporal:
            raise ValueError("temporal_scale is required: the decoder does not declare a temporal compression ratio")
        temporal = 1
    return spatial, temporal


def _check_tile_output(out: Any, expected: tuple[int, ...], channels: int | None, where: str) -> torch.Tensor:
    if not isinstance(out, torch.Tensor):
        raise TypeError(f"{where}: the tile function returned {type(out).__name__}, expected a tensor")
    if out.dim() != len(expected) + 1:
        raise ValueError(f"{where}: tile output has shape {tuple(out.shape)}, expected {len(expected) + 1} dims (B, C, {expected[1:]})")
    if out.shape[0] != expected[0] or tuple(out.shape[2:]) != expected[1:] or (channels is not None and out.shape[1] != channels):
        want = (expected[0], channels if channels is not None else "C", *expected[1:])
        raise ValueError(f"{where}: tile output has shape {tuple(out.shape)}, expected {want}; refusing to crop or pad it")
    return out


def _prepare_decode(
    decode_fn: Any,
    latents: torch.Tensor,
    tiling: TilingConfig | VideoTilePlan | None,
    spatial_scale: int | None,
    temporal_scale: int | None,
    causal_temporal: bool,
    tile_batch_size: int | None,
) -> tuple[DecodeFn, VideoTilePlan, int]:
    """Validate everything and plan, before any decoding."""
    if not isinstance(latents, torch.Tensor) or latents.dim() != 5:
        raise ValueError(f"latents must be a (B, C, T, h, w) tensor, got {getattr(latents, 'shape', type(latents).__name__)}")
    fn = as_decode_fn(decode_fn)
    _, _, t, h, w = latents.shape
    if isinstance(tiling, VideoTilePlan):
        plan = tiling
        if plan.latent_shape != (t, h, w):
            raise ValueError(f"plan is for latents {plan.latent_shape}, got {(t, h, w)}")
        batch = tile_batch_size if tile_batch_size is not None else 1
    else:
        config = tiling if tiling is not None else TilingConfig()
        if not isinstance(config, TilingConfig):
            raise TypeError(f"tiling must be a TilingConfig or a VideoTilePlan, got {type(tiling).__name__}")
        s_scale, t_scale = _resolve_scales(decode_fn, spatial_scale, temporal_scale, need_temporal=True)
        plan = plan_video_decode((t, h, w), config, s_scale, t_scale, causal_temporal)
        batch = tile_batch_size if tile_batch_size is not None else config.tile_batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"tile_batch_size must be an int >= 1, got {batch!r}")
    return fn, plan, batch


def iter_tiled_decode(
    decode_fn: Any,
    latents: torch.Tensor,
    tiling: TilingConfig | VideoTilePlan | None = None,
    *,
    spatial_scale: int | None = None,
    temporal_scale: int | None = None,
    causal_temporal: bool = True,
    tile_batch_size: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> Iterator[tuple[torch.Tensor, int]]:
    """Decode ``latents`` (B, C, T, h, w) tile by tile, yielding ``(frames, start_index)`` in order.

    Every output frame is yielded exactly once, as soon as no later temporal tile has
    weight on it. ``decode_fn`` maps (n, C, t, h', w') latents to (n, C', t', h'*s, w'*s)
    pixels, ``t'`` following the time mapping (``1+(t-1)*s`` when ``causal_temporal``, else
    ``t*s``); any other shape raises. It may be a callable, a diffusers VAE or a
    :class:`~framestream.decoders.base.StreamingVideoDecoder` (see :func:`as_decode_fn`);
    scales default to those the object declares. ``tiling`` is a :class:`TilingConfig`
    (default ``TilingConfig()``) or a prebuilt :class:`VideoTilePlan`.
    ``tile_batch_size`` overrides the config's. Frames are returned in ``out_dtype``
    (default: the decoder's output dtype); blending runs in float32 or wider.
    """
    fn, plan, batch = _prepare_decode(decode_fn, latents, tiling, spatial_scale, temporal_scale, causal_temporal, tile_batch_size)
    return _decode_generator(fn, latents, plan, batch, out_dtype)


def _decode_generator(
    fn: DecodeFn, latents: torch.Tensor, plan: VideoTilePlan, batch: int, out_dtype: torch.dtype | None
) -> Iterator[tuple[torch.Tensor, int]]:
    b = latents.shape[0]
    out_h, out_w = plan.spatial.out_hw
    spatial = plan.spatial.tiles
    temporal = plan.temporal
    masks: MaskCache | None = None
    channels: int | None = None
    acc_dtype: torch.dtype | None = None
    carry: torch.Tensor | None = None
    emitted = 0
    for k, tt in enumerate(temporal):
        if tt.weight_start != emitted:  # planner invariant: each temporal tile starts blending where emission stopped
            raise RuntimeError(f"temporal tile {k} starts blending at frame {tt.weight_start}, but {emitted} frames were emitted")
        t_latents = latents[:, :, tt.start : tt.end]
        items = [(t_latents[:, :, :, tile.h.start : tile.h.end, tile.w.start : tile.w.end],) for tile in spatial]
        buf: torch.Tensor | None = None
        for i, out in iter_batched(fn, items, batch):
            tile = spatial[i]
            where = f"temporal tile {k} (latents {tt.start}:{tt.end}), spatial tile {i} (row {tile.row}, col {tile.col})"
            out = _check_tile_output(out, (b, tt.out_size, tile.h.out_size, tile.w.out_size), channels, where)
            if buf is None:
                if channels is None:
                    channels = out.shape[1]
                    acc_dtype = torch.promote_types(out.dtype, torch.float32) if out.is_floating_point() else torch.float32
                    out_dtype = out_dtype if out_dtype is not None else out.dtype
                    masks = MaskCache(acc_dtype, out.device)
                buf = torch.zeros(b, channels, tt.weight_end - tt.weight_start, out_h, out_w, dtype=acc_dtype, device=out.device)
                if carry is not None:
                    buf[:, :, : carry.shape[2]] += carry
                    carry = None
            mask = masks.video(tt, tile)
            region = buf[:, :, :, tile.h.weight_start : tile.h.weight_end, tile.w.weight_start : tile.w.weight_end]
            cropped = out[
                :,
                :,
                tt.lead : tt.out_size - tt.tail,
                tile.h.lead : tile.h.out_size - tile.h.tail,
                tile.w.lead : tile.w.out_size - tile.w.tail,
            ]
            region.addcmul_(cropped.to(acc_dtype), mask)
            del out, cropped
        last = k + 1 == len(temporal)
        ready = buf.shape[2] if last else temporal[k + 1].weight_start - tt.weight_start
        if not last:
            carry = buf[:, :, ready:].clone()
        # A view: the yielded frames keep only this tile's buffer alive (the carry was copied out).
        frames = buf[:, :, :ready].to(out_dtype)
        del buf
        start = emitted
        emitted += ready
        yield frames, start
    if emitted != plan.out_frames:  # planner invariant
        raise RuntimeError(f"emitted {emitted} frames, expected {plan.out_frames}")


def tiled_decode(
    decode_fn: Any,
    latents: torch.Tensor,
    tiling: TilingConfig | VideoTilePlan | None = None,
    *,
    spatial_scale: int | None = None,
    temporal_scale: int | None = None,
    causal_temporal: bool = True,
    on_frames_ready: Callable[[torch.Tensor, int], None] | None = None,
    tile_batch_size: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Whole-video form of :func:`iter_tiled_decode`: returns (B, C', T', H, W).

    The output is allocated once and filled chunk by chunk; ``on_frames_ready(frames,
    start_index)`` is called for every chunk as it is finished (also when there is a
    single temporal tile).
    """
    fn, plan, batch = _prepare_decode(decode_fn, latents, tiling, spatial_scale, temporal_scale, causal_temporal, tile_batch_size)
    output: torch.Tensor | None = None
    for frames, start in _decode_generator(fn, latents, plan, batch, out_dtype):
        if output is None:
            b, c, _, hh, ww = frames.shape
            output = torch.empty(b, c, plan.out_frames, hh, ww, dtype=frames.dtype, device=frames.device)
        output[:, :, start : start + frames.shape[2]] = frames
        if on_frames_ready is not None:
            on_frames_ready(frames, start)
    assert output is not None  # a plan always has at least one tile
    return output


def tiled_encode(
    encode_fn: Any,
    video: torch.Tensor,
    tiling: TilingConfig | TilePlan | None = None,
    *,
    spatial_scale: int | None = None,
    tile_batch_size: int | None = None,
    out_dtype: torch.dtype | None = None,
) -> torch.Tensor:
    """Encode ``video`` (B, C, ..., H, W) in spatial tiles blended in latent space.

    Tiles are planned on the pixel grid (aligned to ``spatial_scale``; ``H`` and ``W`` must
    be multiples of it) and their latents are blended over the overlaps. Time is not
    tiled: every tile carries all frames. ``encode_fn`` may be a callable, a diffusers VAE
    (posterior mode) or a :class:`~framestream.encoders.base.StreamingVideoEncoder`.
    """
    if not isinstance(video, torch.Tensor) or video.dim() < 4:
        raise ValueError(f"video must be a (B, C, ..., H, W) tensor, got {getattr(video, 'shape', type(video).__name__)}")
    fn = as_encode_fn(encode_fn)
    height, width = video.shape[-2:]
    if isinstance(tiling, TilePlan):
        plan = tiling
        if plan.in_hw != (height, width):
            raise ValueError(f"plan is for {plan.in_hw[0]}x{plan.in_hw[1]} pixels, got {height}x{width}")
        batch = tile_batch_size if tile_batch_size is not None else 1
    else:
        config = tiling if tiling is not None else TilingConfig()
        if not isinstance(config, TilingConfig):
            raise TypeError(f"tiling must be a TilingConfig or a TilePlan, got {type(tiling).__name__}")
        if config.temporal_tile_frames is not None:
            raise ValueError("tiled_encode tiles space only: set temporal_tile_frames=None")
        s_scale, _ = _resolve_scales(encode_fn, spatial_scale, None, need_temporal=False)
        plan = plan_pixel_grid(height, width, config, s_scale)
        batch = tile_batch_size if tile_batch_size is not None else config.tile_batch_size
    if isinstance(batch, bool) or not isinstance(batch, int) or batch < 1:
        raise ValueError(f"tile_batch_size must be an int >= 1, got {batch!r}")

    b = video.shape[0]
    tiles = plan.tiles
    items = [(video[..., tile.h.start : tile.h.end, tile.w.start : tile.w.end],) for tile in tiles]
    output: torch.Tensor | None = None
    masks: MaskCache | None = None
    middle: tuple[int, ...] | None = None
    channels: int | None = None
    for i, out in iter_batched(fn, items, batch):
        tile = tiles[i]
        where = f"spatial tile {i} (row {tile.row}, col {tile.col})"
        if output is None:
            if not isinstance(out, torch.Tensor) or out.dim() != video.dim():
                raise ValueError(f"{where}: encoder returned {getattr(out, 'shape', type(out).__name__)}, expected {video.dim()} dims")
            channels, middle = out.shape[1], tuple(out.shape[2:-2])
            acc_dtype = torch.promote_types(out.dtype, torch.float32) if out.is_floating_point() else torch.float32
            out_dtype = out_dtype if out_dtype is not None else out.dtype
            masks = MaskCache(acc_dtype, out.device)
            output = torch.zeros(b, channels, *middle, *plan.out_hw, dtype=acc_dtype, device=out.device)
        out = _check_tile_output(out, (b, *middle, tile.h.out_size, tile.w.out_size), channels, where)
        region = output[..., tile.h.weight_start : tile.h.weight_end, tile.w.weight_start : tile.w.weight_end]
        cropped = out[..., tile.h.lead : tile.h.out_size - tile.h.tail, tile.w.lead : tile.w.out_size - tile.w.tail]
        region.addcmul_(cropped.to(output.dtype), masks.spatial(tile))
    assert output is not None
    return output.to(out_dtype)
