"""``framestream generate``: text- (and image-) to-video with a Wan recipe, frames streamed to an mp4.

Examples::

    framestream generate --list
    framestream generate wan2.2-ti2v-5b --prompt "a cat surfing" --checkpoint-dir ~/weights/Wan2.2-TI2V-5B \\
        --image cat.jpg --resize 1280x704 -o cat.mp4 --device cuda
    framestream generate wan2.1-self-forcing-1.3b --prompt "a red fox in snow" \\
        --checkpoint-dir ~/weights -o fox.mp4 --num-blocks 7 --device cuda
    framestream generate wan2.1-t2v-1.3b --prompt "..." --checkpoint-dir ~/weights/Wan2.1-T2V-1.3B \\
        -o out.mp4 --diffusion-model.scheduler.shift 3

Every file the recipe needs is checked before any model is built; a missing one is
named together with the Hugging Face repo it comes from. ``--image`` (TI2V recipes) holds
the image as the video's first frame; an image whose size is not the video's needs
``--resize WxH`` or ``--crop WxH`` (centred), which also set the video size. Extra
``--path.to.field VALUE`` arguments override any field of the recipe's pipeline config.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="text/image-to-video with a Wan recipe (Wan 2.1 T2V, Self-Forcing, Wan 2.2 TI2V / A14B), streamed to an mp4",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("recipe", nargs="?", help="recipe name (see --list)")
    parser.add_argument("--list", action="store_true", help="list the recipes and exit")
    parser.add_argument("--prompt", help="text prompt")
    parser.add_argument("--negative-prompt", default=None, help="negative prompt (guided recipes; default: Wan's)")
    parser.add_argument(
        "--checkpoint-dir",
        type=Path,
        help="folder with the weights (Wan-AI/Wan2.1-T2V-1.3B[-Diffusers], plus gdhe17/Self-Forcing for self-forcing; "
        "Wan-AI/Wan2.2-TI2V-5B, -T2V-A14B or -I2V-A14B[-Diffusers] for wan2.2); "
        "for -tiny recipes: optional small UMT5 + tokenizer folder",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs/wan.mp4"), help="output video (default: outputs/wan.mp4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    parser.add_argument("--num-blocks", type=int, default=None, help="AR blocks to generate (causal recipes; default: 7)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: the recipe's, 0)")
    parser.add_argument("--fps", type=float, default=None, help="output frame rate (default: the recipe's, 16 or 24)")
    parser.add_argument("--crf", type=int, default=18, help="libx264 quality, 0 (lossless) .. 51 (default: 18)")
    parser.add_argument("--image", type=Path, default=None, help="first-frame image for image-to-video (TI2V recipes)")
    size = parser.add_mutually_exclusive_group()
    size.add_argument("--resize", metavar="WxH", default=None, help="resize the --image to WxH (the video's size)")
    size.add_argument("--crop", metavar="WxH", default=None, help="centre-crop the --image to WxH (the video's size)")
    parser.add_argument("--decode-chunk", type=int, default=1, help="latent frames decoded (and written) per chunk (default: 1)")
    parser.add_argument("--device", default="cpu", help="torch device, e.g. cpu, cuda, cuda:1 (default: cpu)")
    parser.add_argument(
        "--decoder", choices=("wan-vae", "taehv"), default="wan-vae",
        help="latent decoder: the full Wan VAE (default) or the tiny TAEHV (taew2_1.pth in --checkpoint-dir "
        "or --decoder-checkpoint; random tiny weights for -tiny recipes)",
    )
    parser.add_argument("--decoder-checkpoint", type=Path, default=None, help="TAEHV checkpoint (taew2_1.pth)")
    parser.add_argument(
        "--compile", action="store_true",
        help="torch.compile the DiT blocks and the decoder's chunk calls (static shapes; CUDA graphs for TAEHV on CUDA)",
    )
    parser.add_argument("--print-config", action="store_true", help="print the resolved config and exit")
    parser.set_defaults(func=run, accepts_overrides=True)


def _list_recipes() -> int:
    from framestream.recipes.registry import RECIPES, recipe_summary

    width = max(len(name) for name in RECIPES)
    for name in RECIPES:
        print(f"{name:<{width}}  {recipe_summary(name)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from framestream.config import apply_overrides, derive_config
    from framestream.recipes.registry import RECIPES, TINY_RECIPES
    from framestream.recipes.wan import generate_video, prepare_recipe
    from framestream.recipes.wan22 import recipe_fps

    if args.list:
        return _list_recipes()
    if not args.recipe:
        raise ValueError("name a recipe (framestream generate --list shows them)")
    if args.recipe not in RECIPES:
        raise ValueError(f"unknown recipe {args.recipe!r}; choose one of: {', '.join(RECIPES)}")
    tiny = args.recipe in TINY_RECIPES
    if args.checkpoint_dir is None and not tiny:
        raise ValueError(
            f"{args.recipe} needs --checkpoint-dir (the Wan weights; e.g. hf download "
            f"Wan-AI/{_hub_repo(args.recipe)} --local-dir DIR"
            + (", and gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt" if "self-forcing" in args.recipe else "")
            + ")"
        )
    if not 0 <= args.crf <= 51:
        raise ValueError(f"--crf must be in [0, 51], got {args.crf}")
    if not args.prompt and not args.print_config:
        raise ValueError("--prompt is required")
    if not args.print_config:
        from framestream.cli.demo import check_video_output

        check_video_output(args.output, overwrite=args.overwrite, fps=args.fps, device=args.device, command="generate")
    if (args.resize or args.crop) and args.image is None:
        raise ValueError("--resize / --crop fit the --image; without an image set the size with "
                         "--diffusion-model.transformer.height / --diffusion-model.transformer.width (latent units)")
    if args.decode_chunk < 1:
        raise ValueError(f"--decode-chunk must be >= 1, got {args.decode_chunk}")

    # Resolves (and checks) every weight file before anything is built.
    config = RECIPES[args.recipe](args.checkpoint_dir)
    if args.decoder != "wan-vae":
        from framestream.recipes.decoders import select_decoder

        config = select_decoder(
            config, args.decoder, checkpoint_path=args.decoder_checkpoint, checkpoint_dir=args.checkpoint_dir, tiny=tiny
        )
    if args.seed is not None:
        config = derive_config(config, **{"diffusion_model.seed": args.seed})
    if args.compile:
        config = derive_config(config, **{"diffusion_model.transformer.compile": True, "decoder.compile": True})
    config, num_blocks = prepare_recipe(config, args.num_blocks)
    config = apply_overrides(config, list(getattr(args, "overrides", []) or []))
    config, num_blocks = prepare_recipe(config, num_blocks)
    image = None
    if args.image is not None:  # checked from the image header before any model is built
        config, image = _conditioning_image(args, config)
    elif config.encoder is not None:
        raise ValueError(f"{args.recipe} is image-to-video: pass --image PATH (and --resize / --crop WxH to fit it)")
    if args.print_config:
        print(config)
        return 0
    world = getattr(args, "world", None)
    main_rank = world is None or world.is_main  # under torchrun only rank 0 writes and reports
    if tiny and main_rank:
        print(f"framestream generate: {args.recipe} has RANDOM weights (a pipeline smoke test, not a trained model)")

    fps = args.fps if args.fps is not None else recipe_fps(config)
    start = time.perf_counter()

    def report(index: int, frames: int) -> None:
        if main_rank:
            print(f"block {index + 1}/{num_blocks}: {frames} frames written ({time.perf_counter() - start:.1f} s)", flush=True)

    result = generate_video(
        config,
        args.prompt,
        args.output,
        num_blocks=num_blocks,
        negative_prompt=args.negative_prompt,
        image=image,
        fps=fps,
        crf=args.crf,
        device=args.device,
        decode_chunk_latents=args.decode_chunk,
        on_block=report,
        world=world,
    )
    elapsed = time.perf_counter() - start
    if main_rank:
        print(
            f"wrote {result['frames']} frames ({result['width']}x{result['height']}, {fps:g} fps) in "
            f"{result['blocks']} block(s) to {result['path']} in {elapsed:.1f} s"
        )
    return 0


def _hub_repo(recipe: str) -> str:
    """The Hugging Face repo (under Wan-AI/) a recipe's weights come from."""
    if recipe.startswith("wan2.2-ti2v"):
        return "Wan2.2-TI2V-5B"
    if recipe.startswith("wan2.2-t2v-a14b"):
        return "Wan2.2-T2V-A14B"
    if recipe.startswith("wan2.2-i2v-a14b"):
        return "Wan2.2-I2V-A14B"
    return "Wan2.1-T2V-1.3B"


def _conditioning_image(args: argparse.Namespace, config):  # noqa: ANN202
    """Image-to-video: the config with an image encoder (and the --resize/--crop size) and the checked image tensor.

    Everything is checked from the image header before any model is built.
    """
    from framestream.io.image import fit_image_mode, load_conditioning_image
    from framestream.recipes.wan22 import video_size, with_image_conditioning, with_video_size
    from framestream.jobs.checks import parse_size

    resize = parse_size(args.resize, "--resize") if args.resize else None
    crop = parse_size(args.crop, "--crop") if args.crop else None
    config = with_image_conditioning(config)
    if resize or crop:
        config = with_video_size(config, *(resize or crop))
    size = video_size(config)
    mode = fit_image_mode(args.image, size, resize=resize, crop=crop)
    return config, load_conditioning_image(args.image, size, mode)
