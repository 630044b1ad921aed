"""``framestream encode-dataset --engine ray``: the options and the run of the Ray engine.

Without ``--ray-address`` a local Ray is started on this machine (bound to 127.0.0.1);
with one the job joins that cluster. The checkpoint, the videos and the output folder
must be reachable at the same paths on every node (a shared file system).
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["add_ray_arguments", "run_ray"]


def add_ray_arguments(parser: argparse.ArgumentParser) -> None:
    group = parser.add_argument_group("engine (Ray: workers pull clips from one queue; pip install 'framestream[ray]')")
    group.add_argument("--engine", choices=("default", "ray"), default="default", help="default: this process (or torchrun ranks); ray: a Ray cluster")
    group.add_argument("--ray-address", default=None, help="Ray cluster to join (e.g. auto, host:6379, ray://host:10001); default: start a local Ray")
    group.add_argument("--workers", type=int, default=None, help="Ray encode workers, each loading the VAE once (default: as many as the cluster's GPUs, or CPUs, fit)")
    group.add_argument("--gpus-per-worker", type=float, default=0.0, help="GPUs per Ray worker (0.5 packs two on a GPU; default 0: encode on CPU)")


def _check_ray_flags(args: argparse.Namespace) -> None:
    if args.engine != "ray":
        given = [name for name, value in (("--ray-address", args.ray_address), ("--workers", args.workers)) if value is not None]
        if args.gpus_per_worker:
            given.append("--gpus-per-worker")
        if given:
            raise ValueError(f"{' and '.join(given)} need --engine ray")
        return
    if args.device is not None and not args.device.startswith("cpu") and not args.gpus_per_worker:
        raise ValueError(f"--engine ray places each worker itself: pass --gpus-per-worker G instead of --device {args.device}")
    if args.device is not None and args.device.startswith("cpu") and args.gpus_per_worker:
        raise ValueError("--device cpu and --gpus-per-worker contradict each other; drop one")


def run_ray(args: argparse.Namespace) -> int | None:
    """Run the Ray engine when ``--engine ray`` was given (``None`` otherwise: the default engine runs)."""
    _check_ray_flags(args)
    if args.engine != "ray":
        return None
    from framestream import jobs
    from framestream.cli.decode import report
    from framestream.cli.encode import encode_options
    from framestream.io.atomic import check_writable
    from framestream.io.dataset import list_dataset_items
    from framestream.jobs.ray_engine import RayEngineConfig, import_ray

    config = RayEngineConfig(address=args.ray_address, workers=args.workers, gpus_per_worker=args.gpus_per_worker)
    import_ray(local=config.address is None)  # one line now when ray is missing, before any work
    # The driver may have no GPU; each worker picks its own device (see EncodeWorker).
    options = encode_options(argparse.Namespace(**{**vars(args), "device": None}), progress=False)
    out_dir = Path(args.output)
    if out_dir.exists() and not out_dir.is_dir():
        raise PermissionError(f"output path not writable: {out_dir} exists and is not a directory")
    report_path = out_dir / "report-ray.json"
    check_writable(report_path)
    jobs.check_checkpoint(args.checkpoint, options.version, need_encoder=True)  # headers only
    items = list_dataset_items(args.input, out_dir, output_suffix=f".{args.format}")

    memory = jobs.PeakMemory("cpu")  # the driver's own memory; the workers' peak is reported beside it
    engine = config.setup(checkpoint=args.checkpoint, options=options)
    # Ctrl-C / SIGTERM: the engine stops its workers and removes their temporaries, then the
    # CLI's one error path reports the interrupt (exit 130 / 143); a re-run resumes.
    result = engine.run(items, report_path, progress=not args.json)
    summary = memory.summary(
        command="encode-dataset",
        output=str(out_dir),
        report=str(report_path),
        rank=0,
        world_size=1,
        done=len(result.done),
        skipped=len(result.skipped),
        failed=len(result.failed),
        engine="ray",
        workers=result.workers,
        retried=len(result.retried),
        peak_worker_memory_bytes=result.peak_worker_memory_bytes,
    )
    report(
        args,
        summary,
        f"ray ({result.workers} workers): {len(result.done)} encoded, {len(result.skipped)} already done, "
        f"{len(result.failed)} failed, {len(result.retried)} retried after a lost worker (see {report_path}) "
        f"in {summary['seconds']:.1f} s",
    )
    return 1 if result.failed else 0
