"""LTX-2 benchmark cases (run inside the worker process, see :mod:`framestream.bench.worker`).

Both sides get the same seeded random weights: :func:`init_random_weights` on framestream's
:class:`~framestream.models.ltx2.vae.LTX2VAE`, loaded into diffusers' ``AutoencoderKLLTX2Video``
with ``load_state_dict(strict=True)``. ``divisor`` divides every width of the published LTX-2
VAE (1 = the real model); the depth and the resampling layout stay the real ones.
Warm-up and memory measurement as in :mod:`framestream.bench.cases`.
"""

from __future__ import annotations

import torch

from framestream.bench.cases import _out, _warm_up, device_of, enable_diffusers_tiling, random_latents, random_video
from framestream.models.ltx2.vae import LTX2_VAE_ARCH, LTX2VAE, init_random_weights, reduced_width

__all__ = [
    "ltx2_arch",
    "ltx2_decode_framestream",
    "ltx2_decode_framestream_tiled",
    "ltx2_decode_diffusers",
    "ltx2_encode_framestream",
    "ltx2_encode_framestream_tiled",
    "ltx2_encode_diffusers",
]


def ltx2_arch(divisor: int):
    return LTX2_VAE_ARCH if divisor == 1 else reduced_width(LTX2_VAE_ARCH, divisor)


def _ours(divisor: int, seed: int, device: torch.device) -> LTX2VAE:
    return init_random_weights(LTX2VAE(ltx2_arch(divisor)), seed).eval().requires_grad_(False).to(device)


def _theirs(divisor: int, seed: int, device: torch.device, tile_px: int | None, overlap_px: int | None):
    from diffusers import AutoencoderKLLTX2Video

    arch = ltx2_arch(divisor)
    vae = AutoencoderKLLTX2Video(**arch.to_diffusers_kwargs())
    vae.load_state_dict(init_random_weights(LTX2VAE(arch), seed).state_dict(), strict=True)
    return enable_diffusers_tiling(vae, tile_px, overlap_px).eval().requires_grad_(False).to(device)


def _tiling(tile_px: int, overlap_px: int, tile_batch_size: int, temporal_tile_frames: int | None = None):
    from framestream.tiling import TilingConfig

    return TilingConfig(
        tile_size_px=tile_px, tile_overlap_px=overlap_px, tile_batch_size=tile_batch_size, temporal_tile_frames=temporal_tile_frames
    )


# ---------------------------------------------------------------------------- decode
def ltx2_decode_framestream(timer, divisor: int, latent_shape: list[int], seed: int = 0, device: str = "auto"):
    dev = device_of(device)
    vae, z = _ours(divisor, seed, dev), random_latents(latent_shape, seed, dev)
    _warm_up(timer, vae.decode, z, 1)
    with timer:
        out = vae.decode(z)
    return _out(out)


def ltx2_decode_framestream_tiled(
    timer,
    divisor: int,
    latent_shape: list[int],
    tile_px: int,
    overlap_px: int,
    tile_batch_size: int = 1,
    temporal_tile_frames: int | None = None,
    seed: int = 0,
    device: str = "auto",
):
    from framestream.tiling import decode_tiled

    dev = device_of(device)
    vae, z = _ours(divisor, seed, dev), random_latents(latent_shape, seed, dev)
    tiling = _tiling(tile_px, overlap_px, tile_batch_size, temporal_tile_frames)
    _warm_up(timer, lambda v: decode_tiled(vae, v, _tiling(tile_px, overlap_px, tile_batch_size)), z, 1)
    first = []
    with timer:
        out = decode_tiled(vae, z, tiling, on_frames_ready=lambda f, s: first or first.append(timer.elapsed()))
    timer.extra["time_to_first_frame_s"] = first[0]
    return _out(out)


def ltx2_decode_diffusers(
    timer, divisor: int, latent_shape: list[int], seed: int = 0, tile_px: int | None = None, overlap_px: int | None = None, device: str = "auto"
):
    dev = device_of(device)
    vae, z = _theirs(divisor, seed, dev, tile_px, overlap_px), random_latents(latent_shape, seed, dev)
    _warm_up(timer, lambda v: vae.decode(v).sample, z, 1)
    with timer:
        out = vae.decode(z).sample
        timer.extra["time_to_first_frame_s"] = timer.elapsed()  # nothing is available before the end
    return _out(out)


# ---------------------------------------------------------------------------- encode
def ltx2_encode_framestream(timer, divisor: int, video_shape: list[int], seed: int = 0, device: str = "auto"):
    dev = device_of(device)
    vae, x = _ours(divisor, seed, dev), random_video(video_shape, seed, dev)
    _warm_up(timer, vae.encode, x, 1)
    with timer:
        out = vae.encode(x)
    return _out(out)


def ltx2_encode_framestream_tiled(
    timer, divisor: int, video_shape: list[int], tile_px: int, overlap_px: int, tile_batch_size: int = 1, seed: int = 0, device: str = "auto"
):
    from framestream.tiling import encode_tiled

    dev = device_of(device)
    vae, x = _ours(divisor, seed, dev), random_video(video_shape, seed, dev)
    tiling = _tiling(tile_px, overlap_px, tile_batch_size)
    _warm_up(timer, lambda v: encode_tiled(vae, v, tiling), x, 1)
    with timer:
        out = encode_tiled(vae, x, tiling)
    return _out(out)


def ltx2_encode_diffusers(
    timer, divisor: int, video_shape: list[int], seed: int = 0, tile_px: int | None = None, overlap_px: int | None = None, device: str = "auto"
):
    dev = device_of(device)
    vae, x = _theirs(divisor, seed, dev, tile_px, overlap_px), random_video(video_shape, seed, dev)
    _warm_up(timer, lambda v: vae.encode(v).latent_dist.mode(), x, 1)
    with timer:
        out = vae.encode(x).latent_dist.mode()
    return _out(out)
