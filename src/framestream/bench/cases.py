"""Benchmark case functions, run inside the worker process (see :mod:`framestream.bench.worker`).

Each case builds the same seeded random Wan 2.1 weights (:func:`init_random_weights`
with ``seed``; diffusers' ``AutoencoderKLWan`` gets them through ``load_state_dict``)
and the same seeded inputs, times only the work inside ``with timer:``, and returns
its output on the CPU in fp32 (or None). ``base_dim`` 96 is the real Wan 2.1 VAE;
smaller values keep its depth and layer layout with narrower channels.
Latents are raw (un-normalised) on both sides: diffusers' ``decode`` does not
normalise, and neither does :meth:`WanVAE.decode`.

Warm-up: before the timed section every case runs the same call once on a short
clip (the first 2 latent frames / 5 video frames, same spatial size), so one-time
costs (kernel selection, library start-up) are not timed. Peak memory is measured
from *before* the warm-up (:meth:`SectionTimer.begin_memory`): on CPU memory freed by
the warm-up stays in the allocator and would hide the timed section's needs.
"""

from __future__ import annotations

import time

import torch

from framestream.models.wan.vae import WAN21_VAE_ARCH, WanVAE, init_random_weights, reduced_width

__all__ = [
    "decode_framestream",
    "decode_framestream_tiled",
    "decode_diffusers",
    "stream_decode_framestream",
    "encode_framestream",
    "encode_framestream_tiled",
    "encode_diffusers",
    "conv3d_throughput",
    "gemm_throughput",
]


# ---------------------------------------------------------------------------- building blocks
def device_of(device: str = "auto") -> torch.device:
    return torch.device("cuda" if torch.cuda.is_available() else "cpu") if device == "auto" else torch.device(device)


def arch_for(base_dim: int):
    return WAN21_VAE_ARCH if base_dim == WAN21_VAE_ARCH.base_dim else reduced_width(WAN21_VAE_ARCH, base_dim)


def framestream_vae(base_dim: int, seed: int, device: torch.device) -> WanVAE:
    """Full (encoder + decoder) so its state dict is the one diffusers loads; seeded per parameter."""
    vae = init_random_weights(WanVAE(arch_for(base_dim)), seed)
    return vae.eval().requires_grad_(False).to(device)


def diffusers_vae(base_dim: int, seed: int, device: torch.device, tile_px: int | None = None, overlap_px: int | None = None):
    """diffusers' ``AutoencoderKLWan`` with the weights of :func:`framestream_vae`; tiled when ``tile_px`` is set."""
    from diffusers import AutoencoderKLWan

    ours = init_random_weights(WanVAE(arch_for(base_dim)), seed)
    vae = AutoencoderKLWan(**arch_for(base_dim).to_diffusers_kwargs())
    vae.load_state_dict(ours.state_dict(), strict=True)
    del ours
    return enable_diffusers_tiling(vae, tile_px, overlap_px).eval().requires_grad_(False).to(device)


def enable_diffusers_tiling(vae, tile_px: int | None, overlap_px: int | None):
    """diffusers' ``enable_tiling`` with square tiles of ``tile_px`` overlapping by ``overlap_px``; no-op for None."""
    if tile_px is not None:
        stride = tile_px - (overlap_px or 0)
        vae.enable_tiling(
            tile_sample_min_height=tile_px,
            tile_sample_min_width=tile_px,
            tile_sample_stride_height=stride,
            tile_sample_stride_width=stride,
        )
    return vae


def random_latents(shape: list[int], seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 1)
    return torch.randn(*shape, generator=g).to(device)


def random_video(shape: list[int], seed: int, device: torch.device) -> torch.Tensor:
    g = torch.Generator().manual_seed(seed + 2)
    return (torch.rand(*shape, generator=g) * 2 - 1).to(device)


def tiling_config(tile_px: int, overlap_px: int, tile_batch_size: int = 1):
    from framestream.tiling.planner import TilingConfig

    return TilingConfig(tile_size_px=tile_px, tile_overlap_px=overlap_px, tile_batch_size=tile_batch_size)


def _out(x: torch.Tensor) -> torch.Tensor:
    return x.float().cpu()


def _warm_up(timer, fn, x: torch.Tensor, frames: int) -> None:
    """Start the memory measurement, then run ``fn`` on the first ``frames`` frames of ``x`` (result dropped)."""
    timer.begin_memory()
    out = fn(x[:, :, :frames].contiguous())
    del out


# ---------------------------------------------------------------------------- decode
def decode_framestream(timer, base_dim: int, latent_shape: list[int], seed: int = 0, chunk_size: int = 1, device: str = "auto"):
    dev = device_of(device)
    vae, z = framestream_vae(base_dim, seed, dev), random_latents(latent_shape, seed, dev)
    _warm_up(timer, lambda v: vae.decode(v, chunk_size=chunk_size), z, 2)
    with timer:
        out = vae.decode(z, chunk_size=chunk_size)
    return _out(out)


def decode_framestream_tiled(
    timer,
    base_dim: int,
    latent_shape: list[int],
    tile_px: int,
    overlap_px: int,
    tile_batch_size: int = 1,
    seed: int = 0,
    chunk_size: int = 1,
    device: str = "auto",
    order: str = "frame",
):
    """Exact tiled decode; ``order="tile"`` is the tile-major low-memory mode (see ``decode_tiled``)."""
    from framestream.tiling.wan_exact import decode_tiled

    dev = device_of(device)
    vae, z = framestream_vae(base_dim, seed, dev), random_latents(latent_shape, seed, dev)
    tiling = tiling_config(tile_px, overlap_px, tile_batch_size)
    _warm_up(timer, lambda v: decode_tiled(vae, v, tiling, chunk_size=chunk_size, order=order), z, 2)
    with timer:
        out = decode_tiled(vae, z, tiling, chunk_size=chunk_size, order=order)
    return _out(out)


def decode_diffusers(
    timer,
    base_dim: int,
    latent_shape: list[int],
    seed: int = 0,
    tile_px: int | None = None,
    overlap_px: int | None = None,
    device: str = "auto",
):
    dev = device_of(device)
    vae, z = diffusers_vae(base_dim, seed, dev, tile_px, overlap_px), random_latents(latent_shape, seed, dev)
    _warm_up(timer, lambda v: vae.decode(v).sample, z, 2)
    with timer:
        out = vae.decode(z).sample
        timer.extra["time_to_first_frame_s"] = timer.elapsed()  # nothing is available before the end
    return _out(out)


def stream_decode_framestream(
    timer,
    base_dim: int,
    latent_shape: list[int],
    tile_px: int,
    overlap_px: int,
    tile_batch_size: int = 1,
    seed: int = 0,
    chunk_size: int = 1,
    device: str = "auto",
):
    """Streaming exact tiled decode; every chunk is converted to uint8 on the host (as a
    video writer would) and dropped, so memory must not grow with the length. Returns None."""
    from framestream.tiling.wan_exact import iter_decode_tiled

    dev = device_of(device)
    vae, z = framestream_vae(base_dim, seed, dev), random_latents(latent_shape, seed, dev)
    tiling = tiling_config(tile_px, overlap_px, tile_batch_size)
    _warm_up(timer, lambda v: list(iter_decode_tiled(vae, v, tiling, chunk_size=chunk_size)), z, 2)
    frames_out, first = 0, None
    with timer:
        for frames, start in iter_decode_tiled(vae, z, tiling, chunk_size=chunk_size):
            if start != frames_out:
                raise RuntimeError(f"chunk starts at frame {start}, expected {frames_out}")
            pixels = frames.add(1).mul_(127.5).round_().clamp_(0, 255).to(torch.uint8).cpu()
            frames_out += frames.shape[2]
            if first is None:
                first = timer.elapsed()
            del frames, pixels
    timer.extra.update(time_to_first_frame_s=first, frames=frames_out)
    return None


# ---------------------------------------------------------------------------- encode
def encode_framestream(timer, base_dim: int, video_shape: list[int], seed: int = 0, chunk_size: int = 1, device: str = "auto"):
    dev = device_of(device)
    vae, x = framestream_vae(base_dim, seed, dev), random_video(video_shape, seed, dev)
    _warm_up(timer, lambda v: vae.encode(v, chunk_size=chunk_size), x, 5)
    with timer:
        out = vae.encode(x, chunk_size=chunk_size)
    return _out(out)


def encode_framestream_tiled(
    timer,
    base_dim: int,
    video_shape: list[int],
    tile_px: int,
    overlap_px: int,
    tile_batch_size: int = 1,
    seed: int = 0,
    chunk_size: int = 1,
    device: str = "auto",
    order: str = "frame",
    safe: bool = False,
):
    """Exact tiled encode; ``safe=True`` runs what the pipeline and the CLI run: the plan of
    ``plan_exact_encode_safe`` (tiles enlarged, or dropped, until they save memory)."""
    from framestream.tiling.wan_exact import encode_tiled

    dev = device_of(device)
    vae, x = framestream_vae(base_dim, seed, dev), random_video(video_shape, seed, dev)
    tiling = tiling_config(tile_px, overlap_px, tile_batch_size)
    if safe:
        from framestream.tiling.wan_encode_budget import plan_exact_encode_safe

        safe_plan = plan_exact_encode_safe(vae, tuple(video_shape[3:]), tiling, order=order, frames=video_shape[2], chunk_size=chunk_size)
        tiling = safe_plan.plan
        timer.extra["safe_plan_tiles"] = len(tiling)
    _warm_up(timer, lambda v: encode_tiled(vae, v, tiling, chunk_size=chunk_size, order=order), x, 5)
    with timer:
        out = encode_tiled(vae, x, tiling, chunk_size=chunk_size, order=order)
    return _out(out)


def encode_diffusers(
    timer,
    base_dim: int,
    video_shape: list[int],
    seed: int = 0,
    tile_px: int | None = None,
    overlap_px: int | None = None,
    device: str = "auto",
):
    dev = device_of(device)
    vae, x = diffusers_vae(base_dim, seed, dev, tile_px, overlap_px), random_video(video_shape, seed, dev)
    _warm_up(timer, lambda v: vae.encode(v).latent_dist.mean, x, 5)
    with timer:
        out = vae.encode(x).latent_dist.mean
    return _out(out)


# ---------------------------------------------------------------------------- machine throughput
def _rate(fn, flops: float, min_seconds: float, sync) -> float:
    """FLOP/s of ``fn``: one warm-up call, then calls until ``min_seconds`` (at least 2); best of 3 rounds."""
    fn()
    sync()
    best = 0.0
    for _ in range(3):
        n, start = 0, time.perf_counter()
        while n < 2 or time.perf_counter() - start < min_seconds / 3:
            fn()
            n += 1
        sync()
        best = max(best, n * flops / (time.perf_counter() - start))
    return best


def conv3d_throughput(timer, shapes: list[dict], min_seconds: float = 1.0, device: str = "auto", seed: int = 0):
    """Dense 3D conv FLOP/s (:func:`framestream.utils.conv.conv3d`, the VAEs' kernel) for each
    ``{in_channels, out_channels, kernel, input_thw, batch}`` (unpadded input already holding the
    halo, as :class:`CausalConv3d` runs it). ``timer.extra['conv3d_flops_per_s']``."""
    from framestream.utils.conv import conv3d

    dev = device_of(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    rates = []
    with timer:
        for s in shapes:
            k = tuple(s["kernel"])
            x = torch.randn(s["batch"], s["in_channels"], *s["input_thw"], generator=g).to(dev)
            w = (torch.randn(s["out_channels"], s["in_channels"], *k, generator=g) * 0.05).to(dev)
            b = torch.zeros(s["out_channels"], device=dev)
            out_elems = s["batch"] * s["out_channels"] * (s["input_thw"][0] - k[0] + 1) * (s["input_thw"][1] - k[1] + 1) * (s["input_thw"][2] - k[2] + 1)
            flops = 2.0 * out_elems * s["in_channels"] * k[0] * k[1] * k[2]
            rates.append(_rate(lambda: conv3d(x, w, b), flops, min_seconds, sync))
    timer.extra["conv3d_flops_per_s"] = rates
    return None


def gemm_throughput(timer, n: int = 1024, min_seconds: float = 1.0, device: str = "auto", seed: int = 0):
    """Square fp32 ``n x n @ n x n`` FLOP/s (``2 n^3`` per product). ``timer.extra['gemm_flops_per_s']``."""
    dev = device_of(device)
    sync = torch.cuda.synchronize if dev.type == "cuda" else (lambda: None)
    g = torch.Generator().manual_seed(seed)
    a, b = torch.randn(n, n, generator=g).to(dev), torch.randn(n, n, generator=g).to(dev)
    with timer:
        rate = _rate(lambda: a @ b, 2.0 * n**3, min_seconds, sync)
    timer.extra["gemm_flops_per_s"] = rate
    return None
