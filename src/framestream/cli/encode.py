"""``framestream encode``: a video -> normalised Wan VAE latents (+ metadata), read chunk by chunk.

Examples::

    framestream encode clip.mp4 -o clip.safetensors --vae wan2.1 --checkpoint Wan2.1_VAE.pth
    framestream encode clip.mp4 -o clip.safetensors --vae wan2.2 --checkpoint Wan2.2_VAE.pth \\
        --resize 1280x704 --trim-frames --tile-size 256 --device cuda --dtype bf16 --json
    framestream encode clip.mp4 -o clip.safetensors --vae wan2.1 --checkpoint Wan2.1_VAE.pth \\
        --tile-size auto --tile-order tile --memory-budget 8GiB

Any video PyAV reads works. The VAE needs a width and height divisible by its spatial
factor (8 for wan2.1, 16 for wan2.2) and 1 + 4k frames; nothing is dropped silently:
use ``--resize WxH`` or ``--crop WxH`` (centred) for the size, and ``--frames N`` (the
first N) or ``--trim-frames`` (the largest 1 + 4k available) for the length. The file
stores the latents normalised with the VAE's statistics, with the VAE name, frame
count, fps, size and source path as metadata (``.safetensors`` or ``.pt``).

Wan tiles are never a loss: tiles that would recompute much more than they own, or need
more memory than the untiled encode, are enlarged or dropped, with a warning.
``--tile-size auto`` picks the largest tile that fits ``--memory-budget`` (the tile-major
order, ``--tile-order tile``, is the one that saves memory: frame-major keeps every tile's
cache).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from framestream.cli.decode import add_model_arguments, add_overwrite_argument, add_tiling_arguments, report, warn_about_halo

__all__ = ["register", "run", "add_video_arguments", "encode_options"]


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--resize", metavar="WxH", default=None, help="resize every frame to WxH (bilinear, antialiased)")
    size.add_argument("--crop", metavar="WxH", default=None, help="centre-crop every frame to WxH")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--frames", type=int, default=None, help="encode the first N frames (N = 1 + 4k)")
    count.add_argument("--trim-frames", action="store_true", help="encode the largest 1 + 4k frames the video has")


def encode_options(args: argparse.Namespace, *, local_rank: int = 0, progress: bool = True):
    """Checked :class:`framestream.jobs.EncodeOptions` from the options shared by encode and encode-dataset."""
    from framestream import jobs

    if args.vae is None:
        raise ValueError("--vae is required (wan2.1, wan2.2 or ltx2)")
    version = jobs.vae_version(args.vae)
    dtype = jobs.parse_float_dtype(args.dtype, "--dtype")
    weights_dtype = jobs.parse_float_dtype(args.weights_dtype, "--weights-dtype") if args.weights_dtype else None
    chunk = jobs.check_chunk(args.chunk)
    resize = jobs.parse_size(args.resize, "--resize") if args.resize else None
    crop = jobs.parse_size(args.crop, "--crop") if args.crop else None
    factor = jobs.SPATIAL_FACTOR[version]
    for option, size in (("--resize", resize), ("--crop", crop)):
        if size is not None and (size[0] % factor or size[1] % factor):
            raise ValueError(
                f"{option} {size[0]}x{size[1]} is not divisible by {factor}, the spatial factor of {args.vae}; "
                f"e.g. {option} {max(factor, size[0] // factor * factor)}x{max(factor, size[1] // factor * factor)}"
            )
    r = jobs.TEMPORAL_FACTORS[version]
    if args.frames is not None and (args.frames < 1 or (args.frames - 1) % r):
        raise ValueError(f"--frames {args.frames}: the VAE takes 1 + {r}k frames (e.g. 1, {1 + r}, {1 + 2 * r}, ..., {1 + 10 * r})")
    auto = args.tile_size == "auto"
    if getattr(args, "memory_budget", None) is not None and not auto:
        raise ValueError("--memory-budget needs --tile-size auto")
    if auto and args.tile_batch_size is not None:
        raise ValueError("--tile-size auto chooses the tile batch too; drop --tile-batch-size")
    if auto and version == "ltx2":
        raise ValueError("--tile-size auto estimates Wan VAE memory only; pass --tile-size N (a multiple of 32) for ltx2")
    tiling = None if auto else jobs.make_tiling(args.tile_size, args.tile_overlap, args.tile_batch_size, factor)
    if args.tile_order == "tile" and tiling is None and not auto:
        raise ValueError("--tile-order tile needs --tile-size")
    return jobs.EncodeOptions(
        version=version,
        dtype=dtype,
        weights_dtype=weights_dtype,
        chunk_size=chunk,
        tiling=tiling,
        tile_order=args.tile_order,
        device=jobs.resolve_device(args.device, local_rank),
        resize=resize,
        crop=crop,
        frames=args.frames,
        trim_frames=args.trim_frames,
        progress=progress,
    )


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode a video to normalised Wan VAE latents (.safetensors / .pt)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", help="input video (anything PyAV reads)")
    parser.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors or .pt)")
    add_overwrite_argument(parser)
    add_model_arguments(parser)
    add_video_arguments(parser)
    add_tiling_arguments(parser, auto=True)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    import dataclasses
    import warnings

    from framestream import jobs
    from framestream.jobs.tiling import auto_encode_tiling, default_memory_budget, safe_encode_tiling
    from framestream.utils.units import parse_bytes

    world = getattr(args, "world", None)  # torchrun: tiles split across ranks, rank 0 writes
    local_rank = world.local_rank if world is not None else 0
    options = dataclasses.replace(encode_options(args, local_rank=local_rank), overwrite=args.overwrite)
    budget = parse_bytes(args.memory_budget, "--memory-budget") if args.memory_budget is not None else None
    item = jobs.EncodeItem(source=Path(args.video), output=Path(args.output))
    jobs.check_encode_output(item, options)
    jobs.check_checkpoint(args.checkpoint, options.version, need_encoder=True)  # headers only
    plan = options.plan(args.video)
    jobs.check_encode_output(item, options, plan)  # free space, now that the size is known

    memory = jobs.PeakMemory(options.device)
    vae = options.load_vae(args.checkpoint)
    sizing = dict(dtype=options.dtype, chunk_size=options.chunk_size, order=options.tile_order)
    if args.tile_size == "auto":
        budget = budget if budget is not None else default_memory_budget(options.device)
        tiling = auto_encode_tiling(vae, plan.size, plan.frames, budget, **sizing)
        # Sized for the budget: run as chosen (tiles smaller than the halo cap allows may be what fits).
        options = dataclasses.replace(options, tiling=tiling, safe_tiles=False)
    elif options.version == "ltx2" or world is not None:  # tile-parallel: the tiles split the work
        warn_about_halo(vae, "encode", plan.size, options.tiling)
    else:  # Wan: resolved here so the summary tells what ran (iter_encode would do the same)
        tiling, message = safe_encode_tiling(vae, plan.size, plan.frames, options.tiling, **sizing)
        if message:
            warnings.warn(message, stacklevel=1)
        options = dataclasses.replace(options, tiling=tiling)
    if options.tiling is None:
        options = dataclasses.replace(options, tile_order="frame")
    if world is not None:
        from framestream.distributed.jobs import encode_one_distributed

        result = encode_one_distributed(item, vae, options, world, plan=plan)
        if result is None:
            return 0
    else:
        result = jobs.encode_one(item, vae, options, plan=plan)
    height, width = result.size
    summary = memory.summary(
        command="encode",
        output=str(result.output),
        source=str(result.source),
        frames=result.frames,
        height=height,
        width=width,
        fps=result.fps,
        latent_shape=list(result.latent_shape),
        vae=jobs.vae_name(options.version),
        dtype=str(options.dtype).removeprefix("torch."),
        tiled=options.tiling is not None,
        tile_size=options.tiling.tile_size_px if options.tiling is not None else None,
        tile_batch_size=options.tiling.tile_batch_size if options.tiling is not None else None,
    )
    report(
        args,
        summary,
        f"encoded {result.frames} frames ({width}x{height}) of {result.source} to {result.output} "
        f"(latents {result.latent_shape}, {summary['dtype']} compute) in {summary['seconds']:.1f} s; "
        f"peak memory {jobs.human_bytes(summary['peak_memory_bytes'])} ({summary['peak_memory_kind']})",
    )
    return 0
