"""``framestream decode``: Wan VAE latents -> video, frames written while they are decoded.

Examples::

    framestream decode latents.safetensors -o out.mp4 --vae wan2.1 --checkpoint Wan2.1_VAE.pth
    framestream decode latents.safetensors -o frames/ --vae wan2.2 --checkpoint Wan2.2_VAE.pth \\
        --tile-size 256 --tile-batch-size 4 --device cuda --dtype bf16 --json
    framestream decode latents.safetensors -o preview.mp4 --vae taehv-wan2.1 --checkpoint taew2_1.pth

The output format follows the path: a video container (``.mp4``; also ``.mkv``/``.mov``,
H.264 yuv420p), a folder (``frames/``) of PNG frames, ``.npy`` (uint8 ``T,H,W,3``) or
``.safetensors`` (uint8 tensor ``frames``); ``--format`` overrides. Latents marked
normalised (the default) are un-normalised with the VAE's statistics first.
Everything is checked (files, latent channels vs. VAE, checkpoint version, output
path, free space, dtypes, tile sizes) before the model is loaded. The output appears
whole or not at all; an existing one is replaced only with ``--overwrite``.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path
from typing import Any

__all__ = ["register", "run", "add_model_arguments", "add_overwrite_argument", "add_tiling_arguments", "report"]


def add_model_arguments(parser: argparse.ArgumentParser, *, vae_required: bool = True, taehv: bool = False) -> None:
    """--vae, --checkpoint, --chunk, --dtype, --weights-dtype, --device, --json (shared by the VAE commands)."""
    parser.add_argument(
        "--vae",
        choices=("wan2.1", "wan2.2", "ltx2") + (("taehv-wan2.1", "taehv-wan2.2") if taehv else ()),
        required=vae_required,
        help="VAE: Wan 2.1, Wan 2.2 or the LTX-2 video VAE" + (" (or the tiny TAEHV decoder for Wan latents)" if taehv else "") + ("" if vae_required else " (default: the one the latent file names)"),
    )
    parser.add_argument(
        "--checkpoint",
        required=True,
        help="VAE weights: Wan2.1_VAE.pth / Wan2.2_VAE.pth, an original LTX-2 .safetensors file, or a diffusers VAE folder",
    )
    parser.add_argument("--chunk", type=int, default=1, help="Wan: latent frames per VAE call (default: 1; more is faster and uses more memory); "
                        "LTX-2 runs the whole clip per call")
    parser.add_argument("--dtype", default="fp32", help="compute dtype: fp32, bf16 or fp16 (default: fp32)")
    parser.add_argument("--weights-dtype", default=None, help="dtype the weights are stored in (default: --dtype)")
    parser.add_argument("--device", default=None, help="torch device (default: cuda when available, else cpu)")
    parser.add_argument("--json", action="store_true", help="print a JSON summary (frames, seconds, peak memory, output) on stdout")


def parse_tile_size(text: str) -> int | str:
    """``--tile-size``: pixels, or ``auto``."""
    if str(text).strip().lower() == "auto":
        return "auto"
    try:
        return int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"takes a size in pixels or 'auto', got {text!r}") from None


def add_tiling_arguments(parser: argparse.ArgumentParser, *, auto: bool = False, offload: bool = False) -> None:
    group = parser.add_argument_group("tiling (exact: same result as untiled, less memory)")
    group.add_argument(
        "--tile-size",
        type=parse_tile_size if auto else int,
        default=None,
        help="largest tile side in pixels (owned region), a multiple of 8 (wan2.1) / 16 (wan2.2) / 32 (ltx2)"
        + ("; 'auto': the largest tile and tile batch whose estimated peak fits --memory-budget" if auto else "")
        + "; default: no tiling",
    )
    if auto:
        group.add_argument(
            "--memory-budget",
            default=None,
            help="memory for --tile-size auto, e.g. 8GiB or 512MiB (default: 90%% of the free CUDA memory, 8GiB on CPU); "
            "the weights come on top",
        )
    group.add_argument("--tile-overlap", type=int, default=None, help="validated but unused by the exact tiler, which derives each tile's halo from the model")
    group.add_argument("--tile-batch-size", type=int, default=None, help="tiles run in one batched call (default: 1)")
    group.add_argument(
        "--tile-order",
        choices=("frame", "tile"),
        default="frame",
        help="'frame' (default) streams chunk by chunk with every tile's cache alive; 'tile' runs each tile "
        "batch over the whole clip with one batch's caches alive at a time (lowest memory; decode writes "
        "frames at the end)",
    )
    if offload:
        group.add_argument(
            "--offload-caches",
            action="store_true",
            help="with --tile-order frame on CUDA: idle tiles' caches wait in pinned host memory, so the GPU holds "
            "one tile's cache at a time (exact, slower); no effect on the CPU",
        )


def add_overwrite_argument(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")


def warn_about_halo(vae, kind: str, size_hw: tuple[int, int], tiling) -> None:
    """The one-line halo warning of :func:`framestream.jobs.tiling.halo_warning`, if any."""
    import warnings

    from framestream.jobs.tiling import halo_warning

    message = halo_warning(vae, kind, size_hw, tiling)
    if message:
        warnings.warn(message, stacklevel=2)


def report(args: argparse.Namespace, summary: dict[str, Any], line: str) -> None:
    """The --json summary (one line on stdout) or a human line."""
    if args.json:
        print(json.dumps(summary), flush=True)
    else:
        print(line, flush=True)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "decode",
        help="decode Wan VAE latents to an mp4 / PNG frames / npy / safetensors, streaming",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("latents", help="latent file (.safetensors or .pt) written by framestream encode or save_latents")
    parser.add_argument("-o", "--output", required=True, help="output: out.mp4, a folder for PNG frames (frames/), out.npy or out.safetensors")
    parser.add_argument("--format", choices=("mp4", "png", "npy", "safetensors"), default=None, help="output format (default: from the output path)")
    add_overwrite_argument(parser)
    add_model_arguments(parser, vae_required=False, taehv=True)
    add_tiling_arguments(parser, auto=True, offload=True)
    parser.add_argument("--fps", type=float, default=None, help="frame rate (default: the latent file's, else 16)")
    parser.add_argument("--crf", type=int, default=18, help="libx264 quality, 0 (lossless) .. 51 (default: 18)")
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses

    from framestream import jobs
    from framestream.io.latents import load_latents
    from framestream.jobs.tiling import auto_decode_tiling, default_memory_budget
    from framestream.utils.units import parse_bytes

    if args.vae is not None and args.vae.startswith("taehv-"):  # the tiny TAEHV decoder (taew2_x.pth)
        from framestream.jobs.taehv import run_taehv_decode

        return run_taehv_decode(args, report)
    # Cheap checks first, in the order a user fixes them; nothing heavy runs before all pass.
    fmt = jobs.output_format(args.output, args.format)
    output = Path(args.output)
    dtype = jobs.parse_float_dtype(args.dtype, "--dtype")
    weights_dtype = jobs.parse_float_dtype(args.weights_dtype, "--weights-dtype") if args.weights_dtype else dtype
    jobs.check_chunk(args.chunk)
    if args.fps is not None and args.fps <= 0:
        raise ValueError(f"--fps must be > 0, got {args.fps}")
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be in [0, 51], got {args.crf}")
    world = getattr(args, "world", None)  # torchrun: tiles split across ranks, rank 0 writes
    device = jobs.resolve_device(args.device) if world is None else world.device
    auto = args.tile_size == "auto"
    if args.memory_budget is not None and not auto:
        raise ValueError("--memory-budget needs --tile-size auto")
    budget = parse_bytes(args.memory_budget, "--memory-budget") if args.memory_budget is not None else None
    if auto and args.tile_batch_size is not None:
        raise ValueError("--tile-size auto chooses the tile batch too; drop --tile-batch-size")
    jobs.check_output(output, fmt)
    z, meta = load_latents(args.latents)
    if args.vae is None:
        if meta.vae is None:
            raise ValueError(f"{args.latents} does not say which VAE made it; pass --vae wan2.1, wan2.2 or ltx2")
        args.vae = meta.vae
    version = jobs.vae_version(args.vae)
    jobs.check_latents(z, meta, version, args.latents, jobs.checkpoint_latent_channels(args.checkpoint, version))
    factor = jobs.SPATIAL_FACTOR[version]
    if auto and version == "ltx2":
        raise ValueError("--tile-size auto estimates Wan VAE memory only; pass --tile-size N (a multiple of 32) for ltx2")
    tiling = None if auto else jobs.make_tiling(args.tile_size, args.tile_overlap, args.tile_batch_size, factor)
    if args.tile_order == "tile" and tiling is None and not auto:
        raise ValueError("--tile-order tile needs --tile-size")
    if args.offload_caches and (args.tile_order != "frame" or version == "ltx2" or (tiling is None and not auto)):
        raise ValueError("--offload-caches needs Wan exact tiling (--tile-size) in --tile-order frame")
    options = jobs.DecodeOptions(
        version=version,
        dtype=dtype,
        weights_dtype=weights_dtype,
        chunk_size=args.chunk,
        tiling=tiling,
        tile_order=args.tile_order,
        offload_caches=args.offload_caches,
        device=device,
        crf=args.crf,
        threads=1 if device.type == "cpu" else None,
        overwrite=args.overwrite,
    )
    item = jobs.DecodeItem(source=Path(args.latents), output=output, format=fmt, fps=args.fps)
    jobs.check_decode_output(item, options, tuple(z.shape))
    jobs.check_checkpoint(args.checkpoint, version, need_decoder=True)  # headers only

    memory = jobs.PeakMemory(device)
    vae = options.load_vae(args.checkpoint)
    if auto:
        budget = budget if budget is not None else default_memory_budget(device)
        offload = args.offload_caches and device.type == "cuda"  # on the CPU the caches never leave host memory
        tiling = auto_decode_tiling(
            vae, tuple(z.shape), budget, dtype=dtype, chunk_size=args.chunk, order=args.tile_order, offload_caches=offload
        )
        options = dataclasses.replace(options, tiling=tiling, tile_order=args.tile_order if tiling else "frame")
    else:
        warn_about_halo(vae, "decode", (z.shape[3], z.shape[4]), tiling)
    if world is not None:
        from framestream.distributed.jobs import decode_one_distributed

        result = decode_one_distributed(item, vae, options, world, latents=(z, meta))
        if result is None:
            return 0
    else:
        result = jobs.decode_one(item, vae, options, latents=(z, meta))
    summary = memory.summary(
        command="decode",
        output=str(result.output),
        format=result.format,
        frames=result.frames,
        height=result.height,
        width=result.width,
        fps=result.fps,
        vae=jobs.vae_name(version),
        dtype=str(dtype).removeprefix("torch."),
        weights_dtype=str(weights_dtype).removeprefix("torch."),
        tiled=tiling is not None,
        tile_size=tiling.tile_size_px if tiling is not None else None,
        tile_batch_size=tiling.tile_batch_size if tiling is not None else None,
    )
    tiles = f", tiles {tiling.tile_size_px} px x{tiling.tile_batch_size}" if tiling is not None else ""
    report(
        args,
        summary,
        f"wrote {result.frames} frames ({result.width}x{result.height}, {result.fps:g} fps, {result.format}) to "
        f"{result.output} in {summary['seconds']:.1f} s ({summary['dtype']} compute{tiles}); "
        f"peak memory {jobs.human_bytes(summary['peak_memory_bytes'])} ({summary['peak_memory_kind']})",
    )
    return 0
