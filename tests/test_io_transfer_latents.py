"""uint8 conversion, host copier, latent files, atomic writes."""

from __future__ import annotations

import os

import numpy as np
import pytest
import torch

from framestream.io.atomic import _current_umask, atomic_path, check_writable
from framestream.io.latents import LatentMetadata, load_latents, save_latents
from framestream.io.transfer import HostFrameCopier, frames_to_uint8, uint8_bytes_saved_per_frame


def test_uint8_rounds_to_nearest_like_a_float_reference():
    torch.manual_seed(0)
    frames = torch.rand(1, 3, 2, 5, 7) * 2.4 - 1.2  # includes out-of-range values
    out = frames_to_uint8(frames)
    assert out.shape == (1, 2, 5, 7, 3) and out.dtype == torch.uint8
    reference = np.clip(np.rint((np.clip(frames.double().numpy(), -1, 1) + 1) * 127.5), 0, 255)
    reference = np.moveaxis(reference, 1, -1)
    assert np.abs(out.numpy().astype(np.int64) - reference).max() == 0
    # Truncation would differ from rounding for most values.
    truncated = ((frames.clamp(-1, 1) + 1) * 127.5).to(torch.uint8).movedim(1, -1)
    assert (truncated != out).float().mean() > 0.3


def test_uint8_extremes_and_bf16_input():
    frames = torch.tensor([-1.0, 0.0, 1.0]).view(1, 3, 1, 1, 1).expand(1, 3, 1, 1, 1).clone()
    frames = frames.to(torch.bfloat16)
    out = frames_to_uint8(frames, channels_last=False).flatten().tolist()
    assert out == [0, 128, 255]


def test_uint8_input_is_only_relaid_out():
    frames = torch.randint(0, 256, (1, 3, 2, 4, 5), dtype=torch.uint8)
    out = frames_to_uint8(frames)
    assert out.shape == (1, 2, 4, 5, 3)
    assert torch.equal(out, frames.movedim(1, -1))
    assert frames_to_uint8(frames, channels_last=False) is frames


def test_uint8_rejects_wrong_layout():
    with pytest.raises(ValueError, match="3, T, H, W"):
        frames_to_uint8(torch.zeros(1, 4, 2, 2, 2))


def test_bytes_saved():
    assert uint8_bytes_saved_per_frame(720, 1280, torch.float32) == 720 * 1280 * 3 * 3
    assert uint8_bytes_saved_per_frame(720, 1280, torch.bfloat16) == 720 * 1280 * 3


def test_host_copier_returns_every_chunk_in_order_on_cpu():
    copier = HostFrameCopier("cpu")
    chunks = [torch.full((1, 3, 2, 2, 2), v) for v in (-1.0, 0.0, 1.0)]
    got = list(copier.iter_all(iter(chunks)))
    assert [int(c.flatten()[0]) for c in got] == [0, 128, 255]
    with pytest.raises(ValueError):
        HostFrameCopier("cpu", max_in_flight=0)


@pytest.mark.parametrize("suffix", [".safetensors", ".pt"])
def test_latents_round_trip_with_metadata(tmp_path, suffix):
    latents = torch.randn(1, 16, 3, 4, 6)
    meta = LatentMetadata(vae="wan2.1", frames=9, fps=16.0, height=32, width=48, source="a.mp4")
    path = save_latents(tmp_path / f"z{suffix}", latents, meta)
    loaded, loaded_meta = load_latents(path)
    assert torch.equal(loaded, latents)
    assert loaded_meta == meta
    assert [p.name for p in tmp_path.iterdir()] == [f"z{suffix}"]  # no temp file left


def test_latents_errors(tmp_path):
    with pytest.raises(FileNotFoundError):
        load_latents(tmp_path / "missing.safetensors")
    with pytest.raises(ValueError, match="B, C, T, h, w"):
        save_latents(tmp_path / "z.safetensors", torch.zeros(2, 2), LatentMetadata())
    with pytest.raises(ValueError, match="safetensors or .pt"):
        save_latents(tmp_path / "z.npy", torch.zeros(1, 1, 1, 1, 1), LatentMetadata())


def test_atomic_path_leaves_nothing_on_failure(tmp_path):
    target = tmp_path / "out.bin"
    target.write_bytes(b"old")
    with pytest.raises(RuntimeError):
        with atomic_path(target) as tmp:
            tmp.write_bytes(b"half")
            raise RuntimeError("killed")
    assert target.read_bytes() == b"old"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out.bin"]
    with atomic_path(target) as tmp:
        tmp.write_bytes(b"new")
    assert target.read_bytes() == b"new"
    assert target.stat().st_mode & 0o777 == 0o666 & ~_current_umask()  # not mkstemp's owner-only 0600


@pytest.mark.skipif(os.geteuid() == 0, reason="root can write anywhere")
def test_check_writable_refuses_read_only_dir(tmp_path):
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o500)
    try:
        with pytest.raises(PermissionError):
            check_writable(locked / "x.mp4")
    finally:
        locked.chmod(0o700)


def test_check_writable_refuses_directory_target(tmp_path):
    with pytest.raises(PermissionError):
        check_writable(tmp_path)
    assert check_writable(tmp_path / "new" / "x.mp4") == tmp_path / "new" / "x.mp4"
