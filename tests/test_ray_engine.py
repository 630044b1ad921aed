"""encode-dataset --engine ray on one local Ray (num_cpus=2) shared by the module: same bytes as the
default engine, a worker killed mid-job, a corrupt clip, Ctrl-C and resume."""

from __future__ import annotations

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from safetensors.torch import save_file

from framestream.cli.main import main
from framestream.io.dataset import list_dataset_items
from framestream.io.latents import load_latents
from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch
from test_cli_dataset import pattern_video  # the same synthetic clips as the default engine's tests

CLIP_FRAMES = [5, 9, 13, 17, 21, 25]  # six clips of different lengths (1 + 4k each)
WORKERS = 2
PREFETCH = 1


@pytest.fixture(scope="module")
def ray_cluster():
    """One local Ray for the whole module (start-up takes seconds): 2 CPUs, a small object store, loopback."""
    with pytest.MonkeyPatch.context() as env:
        env.setenv("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # bind 127.0.0.1 (Ray reads it when started)
        import ray

        ray.init(num_cpus=2, object_store_memory=96 * 1024**2, include_dashboard=False, logging_level="warning")
        try:
            yield ray
        finally:
            ray.shutdown()


@pytest.fixture(scope="module")
def dataset(tmp_path_factory):
    """Tiny random Wan 2.1 VAE, six clips (resized: 48x40 -> 40x32), a corrupt one, and the default engine's outputs."""
    root = tmp_path_factory.mktemp("ray_ds")
    checkpoint = root / "vae21.safetensors"
    model = init_random_weights(WanVAE(tiny_wan21_arch()), seed=0)
    save_file({k: v.contiguous() for k, v in model.state_dict().items()}, checkpoint)
    for i, frames in enumerate(CLIP_FRAMES):
        pattern_video(root / "videos" / f"clip{i}.mp4", frames, 40, 48, i)
    (root / "videos" / "broken.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(range(256)) * 8)  # corrupt
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # as each CPU worker (one CPU each) runs
    try:
        reference = root / "reference"
        assert main(["encode-dataset", str(root / "videos"), "-o", str(reference), *common_args(checkpoint)]) == 1  # broken.mp4
    finally:
        torch.set_num_threads(threads)
    return root, checkpoint, reference


def common_args(checkpoint: Path) -> list[str]:
    return ["--vae", "wan2.1", "--checkpoint", str(checkpoint), "--resize", "40x32"]


def outputs(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.safetensors"))


def partials(folder: Path) -> list[Path]:
    return sorted(folder.rglob("*.partial"))


def assert_same_bytes(folder: Path, reference: Path) -> None:
    names = [p.name for p in outputs(reference)]
    assert [p.name for p in outputs(folder)] == names
    for name in names:
        assert (folder / name).read_bytes() == (reference / name).read_bytes(), name


def test_same_bytes_as_the_default_engine_and_a_corrupt_clip_reported_once(ray_cluster, dataset, tmp_path, capsys):
    root, checkpoint, reference = dataset
    out = tmp_path / "out"
    argv = ["encode-dataset", str(root / "videos"), "-o", str(out), *common_args(checkpoint), "--engine", "ray", "--workers", str(WORKERS), "--json"]
    assert main(argv) == 1  # broken.mp4 failed
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert (summary["engine"], summary["workers"], summary["done"], summary["skipped"], summary["failed"]) == ("ray", 2, 6, 0, 1)
    assert_same_bytes(out, reference)
    assert not partials(out)
    report = json.loads((out / "report-ray.json").read_text())
    assert sorted(Path(s).name for s in report["done"]) == [f"clip{i}.mp4" for i in range(6)]
    assert [Path(f["source"]).name for f in report["failed"]] == ["broken.mp4"]  # once
    assert report["failed"][0]["error"].startswith("ValueError: cannot read video")
    assert not report["retried"]  # a clip that fails by itself is not retried
    assert 1 <= report["max_clips_in_flight"] <= WORKERS * (1 + PREFETCH)  # backpressure bound


def test_worker_killed_mid_job_still_yields_every_output_once_and_a_rerun_skips_all(ray_cluster, dataset, tmp_path):
    from framestream.cli.encode import encode_options
    from framestream.jobs.ray_engine import RayEngineConfig

    root, checkpoint, reference = dataset
    out = tmp_path / "out"
    items = [item for item in list_dataset_items(root / "videos", out) if item.source.name != "broken.mp4"]
    options = encode_options(_parse(["encode-dataset", "x", "-o", "y", *common_args(checkpoint)]), progress=False)
    engine = RayEngineConfig(workers=WORKERS, prefetch=PREFETCH).setup(checkpoint=checkpoint, options=options)
    killed: list[int] = []

    def kill_first_worker(result) -> None:
        # Called on the driver as soon as a worker has finished its first clip: the clip it
        # prefetched is being encoded now, so SIGKILL lands mid-clip (no clean-up of any kind).
        if not killed:
            os.kill(result.worker_pid, signal.SIGKILL)
            killed.append(result.worker_pid)

    report = engine.run(items, out / "report-ray.json", progress=False, on_result=kill_first_worker)
    assert killed
    assert report.retried, "the killed worker held no clip: nothing was retried"
    assert all("Actor" in entry["error"] or "Worker" in entry["error"] for entry in report.retried)
    assert not report.failed
    assert sorted(Path(s).name for s in report.done) == [f"clip{i}.mp4" for i in range(6)]  # each once
    assert_same_bytes(out, reference)  # none corrupt, none half-written
    assert not partials(out)

    stamps = {p: p.stat().st_mtime_ns for p in outputs(out)}
    rerun = engine.run(items, out / "report-ray.json", progress=False)  # every output finished: no worker starts
    assert (len(rerun.done), len(rerun.skipped), len(rerun.failed), rerun.workers) == (0, 6, 0, 0)
    assert {p: p.stat().st_mtime_ns for p in outputs(out)} == stamps


def test_ctrl_c_stops_cleanly_and_a_rerun_resumes(ray_cluster, dataset, tmp_path):
    copies = 16
    root, checkpoint, reference = dataset
    videos, out = tmp_path / "videos", tmp_path / "out"
    videos.mkdir()
    for i in range(copies):  # the longest clip many times: enough work left to interrupt
        shutil.copy(root / "videos" / "clip5.mp4", videos / f"long{i:02d}.mp4")
    address = ray_cluster.get_runtime_context().gcs_address
    argv = ["encode-dataset", str(videos), "-o", str(out), *common_args(checkpoint), "--engine", "ray", "--workers", "1", "--ray-address", address]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    proc = subprocess.Popen([sys.executable, "-m", "framestream", *argv], env=env, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True)
    try:
        deadline = time.monotonic() + 60
        while not outputs(out):
            if proc.poll() is not None:
                pytest.fail(f"encode-dataset exited early ({proc.returncode}): {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("no output appeared within 60 s")
            time.sleep(0.02)
        proc.send_signal(signal.SIGINT)
        _, stderr = proc.communicate(timeout=30)
    finally:
        proc.kill()
        proc.wait()
    assert proc.returncode == 130, stderr[-2000:]
    assert "interrupted" in stderr and "Traceback" not in stderr
    first = outputs(out)
    assert 1 <= len(first) < copies, "the job finished before it was interrupted"
    assert not partials(out)

    assert main(argv[:-2]) == 0  # resumes (in this process's Ray), re-encoding nothing already done
    report = json.loads((out / "report-ray.json").read_text())
    assert len(report["skipped"]) == len(first) and len(report["done"]) == copies - len(first)
    expected = load_latents(reference / "clip5.safetensors")[0]
    assert len(outputs(out)) == copies and not partials(out)
    for path in outputs(out):
        assert torch.equal(load_latents(path)[0], expected), path.name


def test_ray_flags_and_missing_ray_are_one_line_errors(tmp_path, monkeypatch, capsys):
    videos = tmp_path / "videos"
    videos.mkdir()
    base = ["encode-dataset", str(videos), "-o", str(tmp_path / "out"), "--vae", "wan2.1", "--checkpoint", "x.pth"]
    assert main([*base, "--workers", "2"]) == 2
    assert capsys.readouterr().err.strip() == "framestream encode-dataset: error: --workers need --engine ray"
    assert main([*base, "--engine", "ray", "--device", "cuda"]) == 2
    assert "--gpus-per-worker" in capsys.readouterr().err
    monkeypatch.setitem(sys.modules, "ray", None)  # as if ray were not installed
    assert main([*base, "--engine", "ray"]) == 2
    err = capsys.readouterr().err.strip()
    assert err == "framestream encode-dataset: error: --engine ray needs the ray package: pip install 'framestream[ray]'"


def _parse(argv: list[str]):
    from framestream.cli.main import build_parser

    return build_parser().parse_known_args(argv)[0]


def test_latent_files_are_byte_identical_whoever_writes_them(tmp_path):
    # The safetensors writer orders metadata by a per-map random hash; save_latents sorts the
    # header, so two engines (or two runs) writing the same latents write the same bytes.
    from framestream.io.latents import LatentMetadata, save_latents

    z = torch.randn(1, 16, 3, 4, 5, generator=torch.Generator().manual_seed(0))
    meta = LatentMetadata(vae="wan2.1", frames=9, fps=8.0, height=32, width=40, source="a.mp4")
    blobs = {save_latents(tmp_path / f"{i}.safetensors", z, meta).read_bytes() for i in range(6)}
    assert len(blobs) == 1
    loaded, loaded_meta = load_latents(tmp_path / "0.safetensors")
    assert torch.equal(loaded, z) and loaded_meta == meta


def test_ray_engine_config_rejects_bad_values():
    from framestream.jobs.ray_engine import RayEngineConfig

    for bad in ({"workers": 0}, {"gpus_per_worker": -1}, {"prefetch": -1}, {"max_attempts": 0}):
        with pytest.raises(ValueError):
            RayEngineConfig(**bad)
