"""``framestream encode-dataset``: encode every video of a folder or CSV to latent files, resumably.

Examples::

    framestream encode-dataset videos/ -o latents/ --vae wan2.1 --checkpoint Wan2.1_VAE.pth --trim-frames
    torchrun --nproc-per-node 8 -m framestream encode-dataset list.csv -o latents/ \\
        --vae wan2.2 --checkpoint Wan2.2_VAE.pth --resize 1280x704 --frames 81 --dtype bf16

Outputs mirror the inputs' relative paths (``.safetensors``, or ``.pt`` with
``--format pt``). Each is written atomically, so the job can be killed at any moment
and re-run: finished outputs are skipped, leftovers of the killed one are removed.
A video that fails (unreadable, wrong size...) is recorded in
``OUT_DIR/report-rank{r}.json`` and the batch goes on; the exit code is 1 when any
failed. Under ``torchrun`` each rank takes its own share of the sorted list and runs
on ``cuda:{LOCAL_RANK}``. The model is loaded once per process.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from framestream.cli.decode import add_model_arguments, add_tiling_arguments, report
from framestream.cli.encode import add_video_arguments, encode_options

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    parser = subparsers.add_parser(
        "encode-dataset",
        help="encode a folder / CSV of videos to latent files (resumable, torchrun-sharded)",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument("input", help="folder of videos (searched recursively) or a CSV with a 'path' column")
    parser.add_argument("-o", "--output", required=True, help="output folder")
    parser.add_argument("--format", choices=("safetensors", "pt"), default="safetensors", help="latent file format (default: safetensors)")
    add_model_arguments(parser)
    add_video_arguments(parser)
    add_tiling_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from framestream import jobs
    from framestream.io.atomic import check_writable
    from framestream.io.dataset import distributed_slot, list_dataset_items

    slot = distributed_slot()
    options = encode_options(args, local_rank=slot.local_rank, progress=False)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise PermissionError(f"output path not writable: {out_dir} exists and is not a directory")
    report_path = out_dir / f"report-rank{slot.rank}.json"
    check_writable(report_path)
    jobs.check_checkpoint(args.checkpoint, options.version, need_encoder=True)  # headers only
    items = list_dataset_items(args.input, out_dir, output_suffix=f".{args.format}")

    memory = jobs.PeakMemory(options.device)
    vae = options.load_vae(args.checkpoint)  # once per process
    result = jobs.encode_dataset(items, vae, options, report_path, slot)
    summary = memory.summary(
        command="encode-dataset",
        output=str(out_dir),
        report=str(report_path),
        rank=slot.rank,
        world_size=slot.world_size,
        done=len(result.done),
        skipped=len(result.skipped),
        failed=len(result.failed),
    )
    report(
        args,
        summary,
        f"rank {slot.rank}/{slot.world_size}: {len(result.done)} encoded, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed (see {report_path}) in {summary['seconds']:.1f} s",
    )
    return 1 if result.failed else 0
