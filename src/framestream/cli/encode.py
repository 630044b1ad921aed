"""``framestream encode``: a video -> normalised Wan VAE latents (+ metadata), read chunk by chunk.

Examples::

    framestream encode clip.mp4 -o clip.safetensors --vae wan2.1 --checkpoint Wan2.1_VAE.pth
    framestream encode clip.mp4 -o clip.safetensors --vae wan2.2 --checkpoint Wan2.2_VAE.pth \\
        --resize 1280x704 --trim-frames --tile-size 256 --device cuda --dtype bf16 --json

Any video PyAV reads works. The VAE needs a width and height divisible by its spatial
factor (8 for wan2.1, 16 for wan2.2) and 1 + 4k frames; nothing is dropped silently:
use ``--resize WxH`` or ``--crop WxH`` (centred) for the size, and ``--frames N`` (the
first N) or ``--trim-frames`` (the largest 1 + 4k available) for the length. The file
stores the latents normalised with the VAE's statistics, with the VAE name, frame
count, fps, size and source path as metadata (``.safetensors`` or ``.pt``).
"""

from __future__ import annotations

import argparse
from pathlib import Path

from framestream.cli.decode import add_model_arguments, add_tiling_arguments, report

__all__ = ["register", "run", "add_video_arguments", "EncodeOptions", "encode_options"]


def add_video_arguments(parser: argparse.ArgumentParser) -> None:
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--resize", metavar="WxH", default=None, help="resize every frame to WxH (bilinear, antialiased)")
    size.add_argument("--crop", metavar="WxH", default=None, help="centre-crop every frame to WxH")
    count = parser.add_mutually_exclusive_group()
    count.add_argument("--frames", type=int, default=None, help="encode the first N frames (N = 1 + 4k)")
    count.add_argument("--trim-frames", action="store_true", help="encode the largest 1 + 4k frames the video has")


class EncodeOptions:
    """Parsed, checked options shared by encode and encode-dataset."""

    def __init__(self, args: argparse.Namespace, *, local_rank: int = 0) -> None:
        from framestream import vae_runner as vr

        if args.vae is None:
            raise ValueError("--vae is required (wan2.1 or wan2.2)")
        self.version = vr.vae_version(args.vae)
        self.dtype = vr.parse_float_dtype(args.dtype, "--dtype")
        self.weights_dtype = vr.parse_float_dtype(args.weights_dtype, "--weights-dtype") if args.weights_dtype else self.dtype
        self.chunk = vr.check_chunk(args.chunk)
        self.resize = vr.parse_size(args.resize, "--resize") if args.resize else None
        self.crop = vr.parse_size(args.crop, "--crop") if args.crop else None
        factor = vr.SPATIAL_FACTOR[self.version]
        for option, size in (("--resize", self.resize), ("--crop", self.crop)):
            if size is not None and (size[0] % factor or size[1] % factor):
                raise ValueError(
                    f"{option} {size[0]}x{size[1]} is not divisible by {factor}, the spatial factor of {args.vae}; "
                    f"e.g. {option} {max(factor, size[0] // factor * factor)}x{max(factor, size[1] // factor * factor)}"
                )
        self.frames = args.frames
        if self.frames is not None and (self.frames < 1 or (self.frames - 1) % 4):
            raise ValueError(f"--frames {self.frames}: the VAE takes 1 + 4k frames (e.g. 1, 5, 9, ..., 81)")
        self.trim_frames = args.trim_frames
        self.tiling = vr.make_tiling(args.tile_size, args.tile_overlap, args.tile_batch_size, factor)
        self.tile_order = args.tile_order
        if self.tile_order == "tile" and self.tiling is None:
            raise ValueError("--tile-order tile needs --tile-size")
        self.device = vr.resolve_device(args.device, local_rank)

    def plan(self, source: str | Path):
        from framestream import vae_runner as vr

        return vr.plan_encode(
            source, self.version, resize=self.resize, crop=self.crop, frames=self.frames, trim_frames=self.trim_frames
        )

    def load_vae(self, checkpoint: str):
        from framestream import vae_runner as vr

        return vr.load_vae(checkpoint, self.version, weights_dtype=self.weights_dtype, device=self.device, include_encoder=True)


def encode_options(args: argparse.Namespace, *, local_rank: int = 0) -> EncodeOptions:
    return EncodeOptions(args, local_rank=local_rank)


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode",
        help="encode a video to normalised Wan VAE latents (.safetensors / .pt)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("video", help="input video (anything PyAV reads)")
    parser.add_argument("-o", "--output", required=True, help="latent file to write (.safetensors or .pt)")
    add_model_arguments(parser)
    add_video_arguments(parser)
    add_tiling_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from framestream import vae_runner as vr
    from framestream.io.atomic import check_writable

    options = encode_options(args)
    output = Path(args.output)
    if output.suffix not in (".safetensors", ".pt", ".pth"):
        raise ValueError(f"latent file must end in .safetensors or .pt, got {output.name!r}")
    check_writable(output)
    vr.check_checkpoint(args.checkpoint, options.version, need_encoder=True)  # headers only
    plan = options.plan(args.video)

    memory = vr.PeakMemory(options.device)
    vae = options.load_vae(args.checkpoint)
    z = vr.encode_to_file(
        vae,
        plan,
        output,
        options.version,
        chunk_size=options.chunk,
        tiling=options.tiling,
        tile_order=options.tile_order,
        device=options.device,
        dtype=options.dtype,
    )
    height, width = plan.size
    summary = memory.summary(
        command="encode",
        output=str(output),
        source=str(plan.source),
        frames=plan.frames,
        height=height,
        width=width,
        fps=plan.fps,
        latent_shape=list(z.shape),
        vae=vr.vae_name(options.version),
        tiled=options.tiling is not None,
    )
    report(
        args,
        summary,
        f"encoded {plan.frames} frames ({width}x{height}) of {plan.source} to {output} "
        f"(latents {tuple(z.shape)}) in {summary['seconds']:.1f} s; "
        f"peak memory {vr.human_bytes(summary['peak_memory_bytes'])} ({summary['peak_memory_kind']})",
    )
    return 0
