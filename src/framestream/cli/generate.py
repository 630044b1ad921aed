"""``framestream generate``: text-to-video with a Wan recipe, frames streamed to an mp4.

Examples::

    framestream generate --list
    framestream generate wan2.1-self-forcing-1.3b --prompt "a red fox in snow" \\
        --checkpoint-dir ~/weights -o fox.mp4 --num-blocks 7 --device cuda
    framestream generate wan2.1-t2v-1.3b --prompt "..." --checkpoint-dir ~/weights/Wan2.1-T2V-1.3B \\
        -o out.mp4 --diffusion-model.scheduler.shift 3

Every file the recipe needs is checked before any model is built; a missing one is
named together with the Hugging Face repo it comes from. Extra ``--path.to.field VALUE``
arguments override any field of the recipe's pipeline config.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "generate",
        help="text-to-video with a Wan recipe (Wan 2.1 T2V, Self-Forcing), streamed to an mp4",
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
        help="folder with the weights (Wan-AI/Wan2.1-T2V-1.3B[-Diffusers], plus gdhe17/Self-Forcing for self-forcing); "
        "for -tiny recipes: optional small UMT5 + tokenizer folder",
    )
    parser.add_argument("-o", "--output", type=Path, default=Path("outputs/wan.mp4"), help="output video (default: outputs/wan.mp4)")
    parser.add_argument("--overwrite", action="store_true", help="replace an existing output (default: refuse)")
    parser.add_argument("--num-blocks", type=int, default=None, help="AR blocks to generate (causal recipes; default: 7)")
    parser.add_argument("--seed", type=int, default=None, help="noise seed (default: the recipe's, 0)")
    parser.add_argument("--fps", type=float, default=16.0, help="output frame rate (default: 16)")
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
    from framestream.recipes.wan import RECIPES, recipe_summary

    width = max(len(name) for name in RECIPES)
    for name in RECIPES:
        print(f"{name:<{width}}  {recipe_summary(name)}")
    return 0


def run(args: argparse.Namespace) -> int:
    from framestream.config import apply_overrides, derive_config
    from framestream.recipes.wan import RECIPES, TINY_RECIPES, generate_video, prepare_recipe

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
            "Wan-AI/Wan2.1-T2V-1.3B --local-dir DIR"
            + (", and gdhe17/Self-Forcing checkpoints/self_forcing_dmd.pt" if "self-forcing" in args.recipe else "")
            + ")"
        )
    if not args.prompt and not args.print_config:
        raise ValueError("--prompt is required")
    if not args.print_config:
        from framestream.io.atomic import check_new_output, check_writable
        from framestream.jobs.checks import resolve_device

        if args.fps <= 0:
            raise ValueError(f"--fps must be > 0, got {args.fps}")
        if not args.output.suffix:
            raise ValueError(f"-o {args.output}: generate writes a video; give a file name such as out.mp4")
        resolve_device(args.device)
        check_writable(args.output)
        check_new_output(args.output, args.overwrite)

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
    if args.print_config:
        print(config)
        return 0
    if tiny:
        print(f"framestream generate: {args.recipe} has RANDOM weights (a pipeline smoke test, not a trained model)")

    start = time.perf_counter()

    def report(index: int, frames: int) -> None:
        print(f"block {index + 1}/{num_blocks}: {frames} frames written ({time.perf_counter() - start:.1f} s)", flush=True)

    result = generate_video(
        config,
        args.prompt,
        args.output,
        num_blocks=num_blocks,
        negative_prompt=args.negative_prompt,
        fps=args.fps,
        device=args.device,
        on_block=report,
    )
    elapsed = time.perf_counter() - start
    print(
        f"wrote {result['frames']} frames ({result['width']}x{result['height']}, {args.fps:g} fps) in "
        f"{result['blocks']} block(s) to {result['path']} in {elapsed:.1f} s"
    )
    return 0
