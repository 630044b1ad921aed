"""``framestream decode --vae taehv-wan2.1``: Wan latents -> video through the tiny TAEHV decoder.

TAEHV (``taew2_1.pth`` / ``taew2_2.pth``) decodes the normalised latents the DiT produces;
latents saved un-normalised are normalised with the Wan VAE's statistics first. Frames
stream to the sink chunk by chunk, as with the full VAE; tiling options do not apply
(TAEHV's memory is small), so they are refused.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

__all__ = ["run_taehv_decode", "iter_taehv_decode"]

_TAEHV_VERSION = {"taehv-wan2.1": "2.1", "taehv-wan2.2": "2.2"}


def iter_taehv_decode(model: Any, z: torch.Tensor, chunk_size: int) -> Iterator[tuple[torch.Tensor, int]]:
    """``(frames (1, 3, t, H, W) in [-1, 1], start)`` per chunk of ``chunk_size`` latent frames."""
    from framestream.models.taehv import TAEHVDecodeState

    state = TAEHVDecodeState()
    start = 0
    for c0 in range(0, z.shape[2], chunk_size):
        frames = model.decode(z[:, :, c0 : c0 + chunk_size].transpose(1, 2), state).transpose(1, 2).mul(2).sub(1)
        yield frames, start
        start += frames.shape[2]


def _normalized(z: torch.Tensor, version: str, normalized: bool) -> torch.Tensor:
    if normalized:
        return z
    from framestream.models.wan.vae import WAN21_VAE_ARCH, WAN22_VAE_ARCH

    arch = WAN21_VAE_ARCH if version == "2.1" else WAN22_VAE_ARCH
    mean = torch.tensor(arch.latents_mean, dtype=torch.float32).view(1, -1, 1, 1, 1)
    std = torch.tensor(arch.latents_std, dtype=torch.float32).view(1, -1, 1, 1, 1)
    return (z.float() - mean) / std


def run_taehv_decode(args: argparse.Namespace, report: Callable[[argparse.Namespace, dict[str, Any], str], None]) -> int:
    """The TAEHV branch of ``framestream decode``: all checks first, then load, decode, publish."""
    from framestream import jobs
    from framestream.io.atomic import check_new_output
    from framestream.io.latents import load_latents
    from framestream.jobs.decode import decode_to_sink
    from framestream.jobs.sinks import open_sink
    from framestream.models.taehv import TAEHVCheckpointError, load_taehv

    version = _TAEHV_VERSION[args.vae]
    fmt = jobs.output_format(args.output, args.format)
    output = Path(args.output)
    dtype = jobs.parse_float_dtype(args.dtype, "--dtype")
    jobs.check_chunk(args.chunk)
    if args.tile_size is not None or args.tile_batch_size is not None or args.memory_budget is not None:
        raise ValueError(f"--vae {args.vae} does not tile (TAEHV needs little memory); drop the tiling options")
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be in [0, 51], got {args.crf}")
    device = jobs.resolve_device(args.device)
    jobs.check_output(output, fmt)
    check_new_output(output, bool(getattr(args, "overwrite", False)), directory=fmt == "png")
    z, meta = load_latents(args.latents)
    jobs.check_latents(z, meta, version, args.latents)
    if not Path(args.checkpoint).is_file():
        raise ValueError(f"--checkpoint {args.checkpoint} does not exist (TAEHV weights: taew2_1.pth / taew2_2.pth from github.com/madebyollin/taehv)")

    memory = jobs.PeakMemory(device)
    try:
        model = load_taehv(args.checkpoint, dtype=dtype, device=device, include_encoder=False)
    except TAEHVCheckpointError as err:
        raise ValueError(f"--checkpoint: {err}") from None
    if model.arch.latent_channels != z.shape[1]:
        raise ValueError(f"--checkpoint {args.checkpoint} decodes {model.arch.latent_channels}-channel latents, the file holds {z.shape[1]}")
    z = _normalized(z, version, bool(meta.normalized)).to(device=device, dtype=dtype)
    fps = args.fps or meta.fps or 16.0
    s = model.arch.spatial_ratio
    total = jobs.decoded_frames(z.shape[2])
    sink = open_sink(output, fmt, total_frames=total, fps=fps, crf=args.crf, threads=1 if device.type == "cpu" else None,
                     metadata={"vae": args.vae, "fps": fps, "source": str(args.latents)})  # fmt: skip
    frames = decode_to_sink(None, z, sink, chunks=iter_taehv_decode(model, z, args.chunk))
    summary = memory.summary(command="decode", output=str(output), format=fmt, frames=frames, height=z.shape[3] * s,
                             width=z.shape[4] * s, fps=fps, vae=args.vae, dtype=str(dtype).removeprefix("torch."))  # fmt: skip
    report(args, summary, f"wrote {frames} frames ({z.shape[4] * s}x{z.shape[3] * s}, {fps:g} fps, {fmt}) to {output} "
                          f"with TAEHV in {summary['seconds']:.1f} s")  # fmt: skip
    return 0
