"""Dataset encode throughput: the default engine vs ``--engine ray`` with 1 and 2 workers, and Ray's per-clip overhead.

Run from the repository root (needs the ``ray`` extra)::

    python bench/ray_dataset.py                 # 12 clips of 64x64, tiny VAE, 2 rounds
    python bench/ray_dataset.py --clips 6 --rounds 1 --results-dir /tmp/quick

One local Ray (``num_cpus`` = this machine's cores) is started once and its start-up timed
apart. The three engines then run in alternation (default, ray-1, ray-2, default, ...) on
the same clips into fresh output folders, so machine load hits them alike. Every encoder
runs torch on one thread (the default engine in this process, each Ray worker on one
CPU): ray-1 against the default isolates what Ray adds, ray-2 shows two encoders at work
(and one thread per encoder avoids the OpenMP barrier stalls that multi-threaded torch
suffers on a shared, oversubscribed machine). Each run's wall time includes loading the model (and for Ray
starting the workers); the steady rate is measured between the first and the last clip
finished. Ray's per-clip overhead is the steady time per clip of one worker minus the time
that worker spent inside ``encode_one`` per clip (what is left is dispatch, object
transfer and scheduling gaps; reading overlaps with encoding). Writes
``<results-dir>/ray_dataset.json`` and prints a summary.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # a local Ray on 127.0.0.1 (read when ray is imported)

import torch  # noqa: E402
from safetensors.torch import save_file  # noqa: E402

from framestream import jobs  # noqa: E402
from framestream.io.dataset import list_dataset_items  # noqa: E402
from framestream.io.video import StreamingVideoWriter  # noqa: E402
from framestream.jobs.ray_engine import RayEngineConfig  # noqa: E402
from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch  # noqa: E402

LENGTHS = (9, 17, 25, 33)  # clip lengths cycle through these (1 + 4k frames)


def make_clips(folder: Path, count: int, size: int) -> None:
    y, x = torch.meshgrid(torch.linspace(-1, 1, size), torch.linspace(-1, 1, size), indexing="ij")
    for i in range(count):
        frames = LENGTHS[i % len(LENGTHS)]
        clip = torch.stack([torch.stack([x, y, torch.sin(3 * (x + y) + 0.4 * t + i)]) for t in range(frames)], dim=1)
        with StreamingVideoWriter(folder / f"clip{i:03d}.mp4", fps=8, crf=10, preset="ultrafast", threads=1) as writer:
            writer.write(clip * 0.9)


def run_default(checkpoint: Path, options: jobs.EncodeOptions, videos: Path, out: Path) -> dict[str, Any]:
    torch.set_num_threads(1)
    start = time.perf_counter()
    vae = options.load_vae(checkpoint)
    loaded = time.perf_counter()
    report = jobs.encode_dataset(list_dataset_items(videos, out), vae, options, out / "report.json", progress=False)
    end = time.perf_counter()
    clips = len(report.done)
    return {"wall_s": end - start, "clips": clips, "steady_s_per_clip": (end - loaded) / clips, "failed": len(report.failed)}


def run_ray(checkpoint: Path, options: jobs.EncodeOptions, videos: Path, out: Path, workers: int) -> dict[str, Any]:
    finished: list[float] = []
    encode_s: list[float] = []

    def record(result: Any) -> None:
        finished.append(time.perf_counter())
        encode_s.append(result.encode_seconds)

    config = RayEngineConfig(workers=workers, cpus_per_worker=1)
    start = time.perf_counter()
    report = config.setup(checkpoint=checkpoint, options=options).run(
        list_dataset_items(videos, out), out / "report.json", progress=False, on_result=record
    )
    end = time.perf_counter()
    clips = len(report.done)
    steady = (finished[-1] - finished[0]) / (clips - 1)
    return {
        "wall_s": end - start,
        "clips": clips,
        "steady_s_per_clip": steady,
        "encode_s_per_clip_in_worker": statistics.mean(encode_s),
        "failed": len(report.failed),
        "retried": len(report.retried),
        "max_clips_in_flight": report.max_clips_in_flight,
    }


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--clips", type=int, default=12)
    parser.add_argument("--size", type=int, default=64, help="square clip side in pixels")
    parser.add_argument("--base-dim", type=int, default=8, help="VAE width (Wan 2.1 uses 96)")
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--results-dir", default="bench/results")
    args = parser.parse_args()
    import ray

    cores = os.cpu_count() or 1
    work = Path(tempfile.mkdtemp(prefix="ray_dataset_bench_"))
    try:
        checkpoint = work / "vae.safetensors"
        model = init_random_weights(WanVAE(tiny_wan21_arch(base_dim=args.base_dim)), seed=0)
        save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
        videos = work / "videos"
        videos.mkdir()
        make_clips(videos, args.clips, args.size)
        options = jobs.EncodeOptions(version="2.1", progress=False)

        start = time.perf_counter()
        ray.init(num_cpus=cores, include_dashboard=False, logging_level="warning")
        ray_start_s = time.perf_counter() - start
        engines = {
            "default": lambda out: run_default(checkpoint, options, videos, out),
            "ray-1-worker": lambda out: run_ray(checkpoint, options, videos, out, 1),
            "ray-2-workers": lambda out: run_ray(checkpoint, options, videos, out, 2),
        }
        runs: dict[str, list[dict[str, Any]]] = {name: [] for name in engines}
        for round_index in range(args.rounds):
            for name, run in engines.items():  # alternate, so load drift hits every engine alike
                out = work / f"out-{name}-{round_index}"
                result = run(out)
                runs[name].append(result)
                print(f"round {round_index} {name}: {result['clips']} clips in {result['wall_s']:.2f} s", flush=True)
                shutil.rmtree(out)
        ray.shutdown()
    finally:
        shutil.rmtree(work, ignore_errors=True)

    summary: dict[str, Any] = {}
    for name, results in runs.items():
        wall = statistics.median(r["wall_s"] for r in results)
        steady = statistics.median(r["steady_s_per_clip"] for r in results)
        summary[name] = {"clips_per_s_wall": args.clips / wall, "clips_per_s_steady": 1 / steady, "wall_s_median": wall}
    one = runs["ray-1-worker"]
    overhead = statistics.median(r["steady_s_per_clip"] - r["encode_s_per_clip_in_worker"] for r in one)
    base = summary["default"]
    for name in ("ray-1-worker", "ray-2-workers"):
        summary[name]["steady_speedup_vs_default"] = summary[name]["clips_per_s_steady"] / base["clips_per_s_steady"]
        summary[name]["wall_speedup_vs_default"] = summary[name]["clips_per_s_wall"] / base["clips_per_s_wall"]
    result = {
        "benchmark": "ray_dataset",
        "command": "python " + " ".join([sys.argv[0], *sys.argv[1:]]),
        "settings": {
            "clips": args.clips, "clip_frames": list(LENGTHS), "size_px": args.size, "vae": f"tiny Wan 2.1, base_dim {args.base_dim}",
            "tiling": "none", "dtype": "fp32", "rounds": args.rounds, "torch_threads_per_encoder": 1,
        },
        "machine": {
            "cpus": cores, "platform": platform.platform(), "torch": torch.__version__, "ray": ray.__version__,
            "load_average_at_end": os.getloadavg(),
        },
        "ray_start_s": ray_start_s,
        "ray_per_clip_overhead_s": overhead,
        "summary": summary,
        "runs": runs,
    }  # fmt: skip
    results_dir = Path(args.results_dir)
    results_dir.mkdir(parents=True, exist_ok=True)
    path = results_dir / "ray_dataset.json"
    path.write_text(json.dumps(result, indent=2) + "\n")
    print(f"local Ray start-up: {ray_start_s:.1f} s; Ray per-clip overhead (1 worker, steady): {overhead * 1000:.0f} ms")
    for name, row in summary.items():
        extra = f", steady {row['steady_speedup_vs_default']:.2f}x default" if "steady_speedup_vs_default" in row else ""
        print(f"{name:14s} {row['clips_per_s_steady']:.2f} clips/s steady, {row['clips_per_s_wall']:.2f} clips/s wall{extra}")
    print(f"wrote {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
