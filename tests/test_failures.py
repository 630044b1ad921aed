"""Every failure is one clear line and leaves nothing behind (issue 10).

Each case asserts the exit code, exactly one line on stderr without a traceback, and
that no file or partial is left (or that the previous output is untouched). Bad input
runs in-process; a full disk is real (``RLIMIT_FSIZE``: writes past the limit fail with
EFBIG); signals go to a real subprocess.
"""

from __future__ import annotations

import contextlib
import os
import pickle
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from safetensors.torch import save_file

from framestream.cli.main import main
from framestream.io.latents import LatentMetadata, load_latents, save_latents
from framestream.io.video import StreamingVideoWriter, read_video
from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch

H, W = 40, 48  # 5x6 latents of the tiny Wan 2.1 VAE


pytestmark = pytest.mark.usefixtures("one_thread")


def pattern_video(path: Path, frames: int, height: int = H, width: int = W) -> Path:
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    clip = torch.stack([torch.stack([x, y, torch.sin(3 * (x + y) + 0.4 * t)]) for t in range(frames)], dim=1)
    path.parent.mkdir(parents=True, exist_ok=True)
    with StreamingVideoWriter(path, fps=8, crf=10, preset="ultrafast", threads=1) as writer:
        writer.write(clip * 0.9)
    return path


class _Code:
    """Pickles to a call of os.system: loading it must never run it."""

    def __init__(self, marker: Path) -> None:
        self.marker = marker

    def __reduce__(self):
        return (os.system, (f"touch {self.marker}",))


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("failures")
    model = init_random_weights(WanVAE(tiny_wan21_arch()), seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, root / "vae.safetensors")
    torch.save(state, root / "vae.pth")
    latents = root / "z.safetensors"
    g = torch.Generator().manual_seed(0)
    save_latents(latents, torch.randn(1, 16, 3, H // 8, W // 8, generator=g), LatentMetadata(vae="wan2.1", fps=8.0))
    long_latents = root / "z_long.safetensors"  # a few seconds of decode: time to send a signal
    save_latents(long_latents, torch.randn(1, 16, 6, 8, 8, generator=g), LatentMetadata(vae="wan2.1", fps=8.0))
    marker = root / "code-ran"
    torch.save({"latents": _Code(marker)}, root / "code.pt")
    torch.save({"encoder.conv1.weight": _Code(marker)}, root / "code.pth")
    blob = (root / "vae.pth").read_bytes()
    (root / "cut.pth").write_bytes(blob[: len(blob) // 2])
    blob = latents.read_bytes()
    (root / "cut.safetensors").write_bytes(blob[: len(blob) - 100])
    return {
        "root": root,
        "ckpt": root / "vae.safetensors",
        "ckpt_pth": root / "vae.pth",
        "latents": latents,
        "long_latents": long_latents,
        "video": pattern_video(root / "clip.mp4", 9),
        "marker": marker,
    }


def listing(folder: Path) -> dict[str, tuple[int, int]]:
    """Every path under ``folder`` (hidden ones too) with its size and mtime."""
    return {str(p.relative_to(folder)): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(folder.rglob("*"))}


def one_line(err: str) -> str:
    lines = err.strip().splitlines()
    assert len(lines) == 1, f"expected one line on stderr, got {len(lines)}:\n{err}"
    assert "Traceback" not in err
    return lines[0]


def fails(capsys, argv: list[str], code: int, match: str) -> str:
    """``main(argv)`` returns ``code`` with exactly one stderr line containing ``match``."""
    capsys.readouterr()
    assert main(argv) == code
    line = one_line(capsys.readouterr().err)
    assert line.startswith(f"framestream {argv[0]}: "), line
    assert match in line, line
    return line


@pytest.fixture
def no_model_load(monkeypatch):
    """Cases that must fail before any weight is read."""
    import framestream.models.wan.vae.checkpoint as checkpoint

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(checkpoint, "load_wan_vae", fail)


def decode(files, latents, output, *extra) -> list[str]:
    return ["decode", str(latents), "-o", str(output), "--checkpoint", str(files["ckpt"]), "--device", "cpu", *extra]


def encode(files, video, output, *extra) -> list[str]:
    return ["encode", str(video), "-o", str(output), "--vae", "wan2.1", "--checkpoint", str(files["ckpt"]), "--device", "cpu", *extra]


# ---------------------------------------------------------------------------- bad input: exit 2, nothing written
def _bad_input_cases(files, out: Path) -> list[tuple[list[str], str]]:
    root = files["root"]
    return [
        (decode(files, root / "cut.safetensors", out / "o.mp4"), "is not a readable latent file"),
        (decode(files, root / "code.pt", out / "o.mp4"), "pickled objects other than tensors"),
        (encode(files, files["video"], out / "z.safetensors")[:6] + ["--checkpoint", str(root / "code.pth")], "not a readable Wan VAE checkpoint"),
        (encode(files, files["video"], out / "z.safetensors")[:6] + ["--checkpoint", str(root / "cut.pth")], "not a readable Wan VAE checkpoint"),
        (decode(files, files["latents"], "/proc/framestream-test/o.mp4"), "output path not writable"),
        (decode(files, files["latents"], out / "o.npy", "--dtype", "int32"), "choose fp32, bf16, fp16"),
        (decode(files, files["latents"], out / "o.npy", "--memory-budget", "1GiB"), "--memory-budget needs --tile-size auto"),
        ([*decode(files, files["latents"], out / "o.npy"), "--no-such-option"], "unrecognized arguments"),
    ]


def faststart_cut_in_half(path: Path, frames: int = 9) -> Path:
    """An mp4 with its index first (faststart), cut in the middle of the frame data."""
    import av

    with av.open(str(path), "w", options={"movflags": "faststart"}) as container:
        stream = container.add_stream("libx264", rate=8)
        stream.width, stream.height, stream.pix_fmt = W, H, "yuv420p"
        stream.options = {"crf": "0", "preset": "ultrafast"}
        rng = np.random.default_rng(0)
        for i in range(frames):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 255, (H, W, 3), dtype=np.uint8), format="rgb24")
            for packet in stream.encode(frame):
                container.mux(packet)
        for packet in stream.encode(None):
            container.mux(packet)
    blob = path.read_bytes()
    path.write_bytes(blob[: len(blob) // 2])
    return path


def test_bad_input_is_one_line_exit_2_before_the_model_loads(files, capsys, tmp_path, no_model_load):
    out = tmp_path / "out"
    out.mkdir()
    cases = _bad_input_cases(files, out)
    for argv, match in cases:
        fails(capsys, argv, 2, match)
    assert listing(out) == {}
    assert not files["marker"].exists()  # the pickled code never ran


def test_cut_faststart_mp4_names_the_file_when_decoding_fails(files, capsys, tmp_path):
    """The header promises 9 frames: planning passes, the read fails later; the line still names the file."""
    video = faststart_cut_in_half(tmp_path / "cut.mp4")
    line = fails(capsys, encode(files, video, tmp_path / "z.safetensors"), 2, str(video))
    assert "cut.mp4" in line
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cut.mp4"]


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a machine without CUDA")
@pytest.mark.parametrize("command", ["demo", "generate", "decode", "encode"])
def test_missing_cuda_is_one_line(files, capsys, tmp_path, command, no_model_load):
    argv = {
        "demo": ["demo", "-o", str(tmp_path / "d.mp4")],
        "generate": ["generate", "wan2.1-self-forcing-1.3b-tiny", "--prompt", "x", "-o", str(tmp_path / "g.mp4")],
        "decode": decode(files, files["latents"], tmp_path / "o.mp4")[:-2],
        "encode": encode(files, files["video"], tmp_path / "z.safetensors")[:-2],
    }[command]
    fails(capsys, [*argv, "--device", "cuda"], 2, "CUDA is not available on this machine; pass --device cpu")
    assert listing(tmp_path) == {}


# ---------------------------------------------------------------------------- hypothesis: garbage files
GARBAGE = settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])


@GARBAGE
@given(blob=st.binary(max_size=300), suffix=st.sampled_from([".safetensors", ".pt"]))
def test_garbage_latent_file(files, capsys, tmp_path_factory, blob, suffix):
    folder = tmp_path_factory.mktemp("garbage_latents")
    source = folder / f"z{suffix}"
    source.write_bytes(blob)
    fails(capsys, decode(files, source, folder / "o.npy", "--vae", "wan2.1"), 2, str(source))
    assert sorted(p.name for p in folder.iterdir()) == [source.name]


@GARBAGE
@given(blob=st.binary(max_size=300), suffix=st.sampled_from([".safetensors", ".pth"]))
def test_garbage_checkpoint(files, capsys, tmp_path_factory, blob, suffix):
    folder = tmp_path_factory.mktemp("garbage_ckpt")
    ckpt = folder / f"vae{suffix}"
    ckpt.write_bytes(blob)
    argv = decode(files, files["latents"], folder / "o.npy")
    argv[argv.index("--checkpoint") + 1] = str(ckpt)
    fails(capsys, argv, 2, str(ckpt))
    assert sorted(p.name for p in folder.iterdir()) == [ckpt.name]


@GARBAGE
@given(blob=st.binary(max_size=300))
def test_garbage_video(files, capsys, tmp_path_factory, blob):
    folder = tmp_path_factory.mktemp("garbage_video")
    video = folder / "v.mp4"
    video.write_bytes(blob)
    fails(capsys, encode(files, video, folder / "z.safetensors"), 2, str(video))
    assert sorted(p.name for p in folder.iterdir()) == ["v.mp4"]


# ---------------------------------------------------------------------------- existing outputs
def test_existing_output_is_refused_unless_overwrite(files, capsys, tmp_path):
    for name in ("o.mp4", "o.npy", "o.safetensors"):
        target = tmp_path / name
        target.write_bytes(b"earlier output")
        before = listing(tmp_path)
        fails(capsys, decode(files, files["latents"], target), 2, "already exists; pass --overwrite")
        assert listing(tmp_path) == before
        assert main(decode(files, files["latents"], target, "--overwrite")) == 0
        assert target.read_bytes() != b"earlier output"
    z = tmp_path / "z.pt"
    z.write_bytes(b"x")
    fails(capsys, encode(files, files["video"], z), 2, "already exists; pass --overwrite")
    assert z.read_bytes() == b"x"
    demo = tmp_path / "d.mp4"
    demo.write_bytes(b"x")
    fails(capsys, ["demo", "--steps", "1", "-o", str(demo)], 2, "already exists; pass --overwrite")
    assert demo.read_bytes() == b"x"


def test_png_folder_is_replaced_whole(files, capsys, tmp_path):
    frames = tmp_path / "frames"
    frames.mkdir()
    for i in range(20):  # an earlier, longer decode
        (frames / f"frame_{i:06d}.png").write_bytes(b"old")
    before = listing(tmp_path)
    fails(capsys, decode(files, files["latents"], frames), 2, "already exists and is not empty; pass --overwrite")
    assert listing(tmp_path) == before
    assert main(decode(files, files["latents"], frames, "--overwrite")) == 0
    assert sorted(p.name for p in frames.iterdir()) == [f"frame_{i:06d}.png" for i in range(9)]
    assert all(p.read_bytes()[:4] == b"\x89PNG" for p in frames.iterdir())
    assert sorted(p.name for p in tmp_path.iterdir()) == ["frames"]  # the old folder is gone, no partial
    # A folder that is not an earlier output (it has subfolders) is never replaced.
    (frames / "keep").mkdir()
    fails(capsys, decode(files, files["latents"], frames, "--overwrite"), 2, "holds subfolders")
    assert (frames / "keep").is_dir()


def test_stale_partials_of_a_killed_run_are_removed(files, tmp_path):
    stale_file = tmp_path / ".o.npy.abcd1234.partial"
    stale_file.write_bytes(b"")
    stale_dir = tmp_path / ".frames.abcd1234.partial"
    stale_dir.mkdir()
    (stale_dir / "frame_000000.png").write_bytes(b"x")
    other = tmp_path / ".other.npy.abcd1234.partial"  # belongs to another output: kept
    other.write_bytes(b"")
    assert main(decode(files, files["latents"], tmp_path / "o.npy")) == 0
    assert main(decode(files, files["latents"], tmp_path / "frames")) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == [".other.npy.abcd1234.partial", "frames", "o.npy"]


@contextlib.contextmanager
def umask(mask: int):
    previous = os.umask(mask)
    try:
        yield
    finally:
        os.umask(previous)


def test_every_format_gets_the_umask_mode(files, tmp_path):
    with umask(0o027):
        for name in ("o.mp4", "o.npy", "o.safetensors", "frames"):
            assert main(decode(files, files["latents"], tmp_path / name)) == 0
        for name in ("z.safetensors", "z.pt"):
            assert main(encode(files, files["video"], tmp_path / name)) == 0
    modes = {p.relative_to(tmp_path).as_posix(): p.stat().st_mode & 0o777 for p in tmp_path.rglob("*")}
    assert modes.pop("frames") == 0o750
    assert set(modes.values()) == {0o640}, modes


# ---------------------------------------------------------------------------- a full disk, for real
@contextlib.contextmanager
def file_size_limit(nbytes: int):
    """Writes past ``nbytes`` fail with EFBIG (Python ignores SIGXFSZ), as on a full disk."""
    assert signal.getsignal(signal.SIGXFSZ) == signal.SIG_IGN
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (nbytes, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


@pytest.mark.parametrize("name", ["o.mp4", "frames", "o.npy", "o.safetensors", "z.safetensors", "z.pt"])
def test_full_disk_is_one_line_and_leaves_the_old_output(files, capsys, tmp_path, name):
    target = tmp_path / name
    if name == "frames":
        target.mkdir()
        (target / "frame_000000.png").write_bytes(b"old")
    else:
        target.write_bytes(b"old")
    before = listing(tmp_path)
    argv = (encode if name.startswith("z") else decode)(files, files["video" if name.startswith("z") else "latents"], target, "--overwrite")
    capsys.readouterr()
    with file_size_limit(2000):  # every output here is larger
        code = main(argv)
    line = one_line(capsys.readouterr().err)
    assert code == 1, line
    assert f"cannot write {target}" in line and "file-size limit" in line, line
    assert listing(tmp_path) == before


def test_free_space_is_checked_before_the_model_loads(files, capsys, tmp_path, monkeypatch, no_model_load):
    import shutil
    from collections import namedtuple

    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda path: usage(10**6, 10**6 - 1000, 1000))
    fails(capsys, decode(files, files["latents"], tmp_path / "o.npy"), 1, "not enough space for")
    fails(capsys, encode(files, files["video"], tmp_path / "z.safetensors"), 1, "not enough space for")
    assert listing(tmp_path) == {}


# ---------------------------------------------------------------------------- runtime failures, -v, help
def test_unexpected_failure_is_exit_1_and_minus_v_anywhere_shows_the_traceback(files, capsys, tmp_path, monkeypatch):
    import framestream.jobs.decode as decode_job

    def broken(*args, **kwargs):
        raise RuntimeError("simulated failure\nwith a second line")
        yield

    monkeypatch.setattr(decode_job, "iter_decode", broken)
    target = tmp_path / "o.npy"
    line = fails(capsys, decode(files, files["latents"], target), 1, "RuntimeError: simulated failure with a second line")
    assert "run with -v" in line
    assert listing(tmp_path) == {}
    for argv in (["-v", *decode(files, files["latents"], target)], [*decode(files, files["latents"], target), "-v"]):
        capsys.readouterr()
        assert main(argv) == 1
        err = capsys.readouterr().err
        assert "Traceback" in err and "simulated failure" in err.splitlines()[-1]
    assert listing(tmp_path) == {}


def test_help_is_plain_text_and_usage_errors_are_one_line(capsys):
    for command in ("decode", "encode", "encode-dataset", "demo", "generate"):
        capsys.readouterr()
        assert main([command, "--help"]) == 0
        text = capsys.readouterr().out
        assert "``" not in text and "::" not in text and ":func:" not in text, text
    fails(capsys, ["decode", "--tile-size", "big", "x"], 2, "--tile-size")
    fails(capsys, ["generate"], 2, "framestream generate --list")
    fails(capsys, ["generate", "wan2.1-self-forcing-1.3b", "--prompt", "x"], 2, "hf download")


def test_demo_takes_minus_o(tmp_path, capsys):
    out = tmp_path / "d.mp4"
    assert main(["demo", "--steps", "1", "-o", str(out)]) == 0
    assert read_video(out)[0].shape[0] > 0
    assert capsys.readouterr().err.strip() == ""  # the random-weights notice is on stdout


# ---------------------------------------------------------------------------- tiling: auto, halo warning
def test_tile_size_auto_and_the_halo_warning(files, capsys, tmp_path):
    import json

    wide = tmp_path / "wide.safetensors"  # 256x256 px: big enough for tiling to save memory
    save_latents(wide, torch.randn(1, 16, 1, 32, 32, generator=torch.Generator().manual_seed(1)), LatentMetadata(vae="wan2.1"))
    capsys.readouterr()
    # A budget between the estimator's figures (tile-major order, uint8 output) for 128 px
    # tiles and for one whole-frame tile: auto must pick 128 px tiles.
    from framestream.tiling.planner import TilingConfig
    from framestream.tiling.wan_budget import estimate_exact_decode_memory
    from framestream.tiling.wan_exact import plan_exact_decode

    vae = WanVAE(tiny_wan21_arch(), include_encoder=False).to("meta")
    need = {
        px: estimate_exact_decode_memory(
            vae, plan_exact_decode(vae, (32, 32), TilingConfig(tile_size_px=px, tile_overlap_px=0)),
            order="tile", latent_frames=1, out_dtype=torch.uint8,
        ).total
        for px in (128, 256)
    }
    assert need[128] < need[256], need
    budget = f"{(need[128] + need[256]) // 2}B"
    assert main(decode(files, wide, tmp_path / "a.npy", "--tile-size", "auto", "--tile-order", "tile", "--memory-budget", budget, "--json")) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["tiled"] and summary["tile_size"] == 128, summary
    assert main(decode(files, wide, tmp_path / "u.npy", "--tile-size", "auto", "--memory-budget", "1GiB", "--json")) == 0
    assert not json.loads(capsys.readouterr().out.strip().splitlines()[-1])["tiled"]  # untiled fits
    diff = np.abs(np.load(tmp_path / "a.npy").astype(int) - np.load(tmp_path / "u.npy").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # exact tiling: equal up to a rounding tie
    fails(capsys, decode(files, wide, tmp_path / "b.npy", "--tile-size", "auto", "--memory-budget", "1MiB"), 2, "--memory-budget: no exact tiling")
    # A tile close to the halo: the decode runs, with one line saying it is slow and what to do.
    assert main(decode(files, files["latents"], tmp_path / "t.npy", "--tile-size", "16")) == 0
    warning = one_line(capsys.readouterr().err)
    assert warning.startswith("framestream decode: warning: --tile-size 16: every tile recomputes a halo"), warning
    assert "5.7x the work of an untiled one; a larger --tile-size is faster" in warning
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy", "t.npy", "u.npy", "wide.safetensors"]


def test_tiling_config_messages_say_what_to_do():
    from framestream.tiling.planner import TilingConfig

    with pytest.raises(ValueError, match=r"tile_overlap_px=64, the default, must be smaller than tile_size_px=40; pass a smaller"):
        TilingConfig(tile_size_px=40)
    with pytest.raises(ValueError, match="smaller than one latent cell"):
        TilingConfig(tile_size_px=4, tile_overlap_px=0).in_latents(8)


# ---------------------------------------------------------------------------- dataset: readable outputs only
def test_dataset_redoes_an_unreadable_output(files, tmp_path, capsys):
    videos = tmp_path / "videos"
    pattern_video(videos / "a.mp4", 5)
    pattern_video(videos / "b.mp4", 5)
    out = tmp_path / "out"
    out.mkdir()
    (out / "a.safetensors").write_bytes(b"")  # a 0-byte output is not a finished one
    argv = ["encode-dataset", str(videos), "-o", str(out), "--vae", "wan2.1", "--checkpoint", str(files["ckpt"]), "--device", "cpu"]
    capsys.readouterr()
    assert main(argv) == 0
    err = capsys.readouterr().err
    assert "redoing" in err and "a.safetensors" in err
    assert load_latents(out / "a.safetensors")[0].shape == (1, 16, 2, 5, 6)
    assert load_latents(out / "b.safetensors")[0].shape == (1, 16, 2, 5, 6)


# ---------------------------------------------------------------------------- signals, for real
def spawn(argv: list[str], cwd: Path) -> subprocess.Popen:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": os.pathsep.join(sys.path)}
    return subprocess.Popen(
        [sys.executable, "-m", "framestream", *argv],
        cwd=cwd,
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
        text=True,
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL),  # a background shell may ignore it
    )


def signal_when(proc: subprocess.Popen, ready, sig: int, timeout: float = 60.0) -> tuple[int, str]:
    """Send ``sig`` once ``ready()`` holds; returns (exit code, stderr)."""
    deadline = time.monotonic() + timeout
    try:
        while not ready():
            if proc.poll() is not None:
                pytest.fail(f"exited ({proc.returncode}) before the signal: {proc.stderr.read()[-2000:]}")
            if time.monotonic() > deadline:
                pytest.fail("the job did not start writing in time")
            time.sleep(0.01)
        proc.send_signal(sig)
        _, err = proc.communicate(timeout=60)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.communicate()
    return proc.returncode, err


def partials(folder: Path) -> list[Path]:
    return list(folder.glob(".*.partial"))


def writing(folder: Path) -> bool:
    """A temporary output with data in it exists (not just the empty probe of the output check)."""
    for path in partials(folder):
        with contextlib.suppress(FileNotFoundError):
            if path.is_dir() or path.stat().st_size > 0:
                return True
    return False


SIGNALS = [(signal.SIGINT, 130, "interrupted (Ctrl-C)"), (signal.SIGTERM, 143, "terminated (SIGTERM)")]


@pytest.mark.parametrize(("sig", "code", "words"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_during_decode(files, tmp_path, sig, code, words):
    target = tmp_path / "o.npy"
    target.write_bytes(b"old")
    proc = spawn(decode(files, files["long_latents"], target, "--overwrite"), tmp_path)
    rc, err = signal_when(proc, lambda: writing(tmp_path), sig)
    assert rc == code, err
    assert f"framestream decode: {words}" in one_line(err)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npy"] and target.read_bytes() == b"old"


STREAMS = [("generate", *SIGNALS[0]), ("generate", *SIGNALS[1]), ("demo", *SIGNALS[1])]


@pytest.mark.parametrize(("command", "sig", "code", "words"), STREAMS, ids=["generate-SIGINT", "generate-SIGTERM", "demo-SIGTERM"])
def test_signal_during_generate(tmp_path, command, sig, code, words):
    out = str(tmp_path / "g.mp4")
    argv = {
        "generate": ["generate", "wan2.1-self-forcing-1.3b-tiny", "--prompt", "a cat", "-o", out, "--num-blocks", "60"],
        "demo": ["demo", "--steps", "200", "-o", out],
    }[command]
    rc, err = signal_when(spawn(argv, tmp_path), lambda: writing(tmp_path), sig)
    assert rc == code, err
    # The tiny recipe has no text encoder and says so once; then only the one line of the signal.
    lines = [line for line in err.splitlines() if "no text encoder configured" not in line]
    assert f"framestream {command}: {words}" in one_line("\n".join(lines))
    assert list(tmp_path.iterdir()) == []


def test_sigkill_leftover_is_removed_by_the_next_decode(files, tmp_path):
    target = tmp_path / "o.npy"
    rc, _ = signal_when(spawn(decode(files, files["long_latents"], target), tmp_path), lambda: writing(tmp_path), signal.SIGKILL)
    assert rc == -signal.SIGKILL and len(partials(tmp_path)) == 1  # no clean-up of any kind
    assert main(decode(files, files["latents"], target)) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == ["o.npy"]


@pytest.mark.parametrize(("sig", "code", "words"), SIGNALS, ids=["SIGINT", "SIGTERM"])
def test_signal_during_dataset_encode_then_resume(files, tmp_path, sig, code, words):
    videos = tmp_path / "videos"
    names = [f"v{i}.mp4" for i in range(4)]
    for name in names:
        pattern_video(videos / name, 17, 48, 48)
    out = tmp_path / "out"
    argv = ["encode-dataset", str(videos), "-o", str(out), "--vae", "wan2.1", "--checkpoint", str(files["ckpt"]), "--device", "cpu"]
    rc, err = signal_when(spawn(argv, tmp_path), lambda: any(out.glob("*.safetensors")), sig)
    assert rc == code, err
    assert f"framestream encode-dataset: {words}" in one_line(err)
    finished = sorted(out.glob("*.safetensors"))
    assert 1 <= len(finished) < len(names) and not partials(out)
    assert main(argv) == 0  # the re-run finishes the rest
    assert [p.name for p in sorted(out.glob("*.safetensors"))] == [n.replace(".mp4", ".safetensors") for n in names]
    assert not partials(out)
