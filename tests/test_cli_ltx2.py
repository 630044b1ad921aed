"""framestream encode / decode / encode-dataset --vae ltx2 end to end on a tiny random LTX-2 VAE (CPU, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

from framestream.cli.main import main
from framestream.io.latents import load_latents
from framestream.io.transfer import frames_to_uint8
from framestream.io.video import StreamingVideoWriter
from framestream.models.ltx2.vae import LTX2VAE, init_random_weights, load_ltx2_vae, save_original_checkpoint, shallow_ltx2_arch

H, W, FPS = 96, 64, 12  # 3 x 2 latents


def _video(path: Path, frames: int, height: int = H, width: int = W) -> Path:
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    clip = torch.stack([torch.stack([x, y, torch.sin(3 * (x + y) + 0.4 * t)]) for t in range(frames)], dim=1)
    with StreamingVideoWriter(path, fps=FPS, crf=0, preset="ultrafast", threads=1) as writer:
        writer.write(clip * 0.9)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_ltx2")
    model = init_random_weights(LTX2VAE(shallow_ltx2_arch()), seed=0)
    with torch.no_grad():
        model.latents_mean.uniform_(-0.5, 0.5)
        model.latents_std.uniform_(0.5, 2.0)
    save_original_checkpoint(model, shallow_ltx2_arch(), root / "ltx-2.safetensors")
    return {"root": root, "ckpt": root / "ltx-2.safetensors", "video": _video(root / "clip.mp4", 17), "video12": _video(root / "c12.mp4", 12)}


def test_encode_then_decode_round_trip(files, tmp_path, capsys):
    base = ["--vae", "ltx2", "--checkpoint", str(files["ckpt"])]
    latents = tmp_path / "clip.safetensors"
    assert main(["encode", str(files["video"]), "-o", str(latents), *base]) == 0
    z, meta = load_latents(latents)
    assert z.shape == (1, 8, 3, 3, 2) and meta.vae == "ltx2" and meta.normalized and meta.frames == 17
    capsys.readouterr()
    assert main(["decode", str(latents), "-o", str(tmp_path / "out.npy"), "--checkpoint", str(files["ckpt"]), "--json"]) == 0
    summary = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    assert summary["vae"] == "ltx2" and summary["frames"] == 17 and (summary["height"], summary["width"]) == (H, W)
    frames = np.load(tmp_path / "out.npy")
    vae = load_ltx2_vae(files["ckpt"])
    with torch.no_grad():
        expected = frames_to_uint8(vae.decode(vae.denormalize_latents(z.float())), channels_last=True)[0].numpy()
    assert frames.shape == expected.shape == (17, H, W, 3)
    assert np.abs(frames.astype(int) - expected.astype(int)).max() <= 1
    # tiled (exact) encode and decode give the same files' contents
    tiled = tmp_path / "tiled.safetensors"
    tile = ["--tile-size", "32", "--tile-batch-size", "4"]
    assert main(["encode", str(files["video"]), "-o", str(tiled), *base, *tile]) == 0
    assert (load_latents(tiled)[0] - z).abs().max() < 1e-4
    assert main(["decode", str(latents), "-o", str(tmp_path / "t.npy"), *base, *tile]) == 0
    assert np.abs(np.load(tmp_path / "t.npy").astype(int) - frames.astype(int)).max() <= 1
    assert main(["decode", str(latents), "-o", str(tmp_path / "clip.mp4"), *base]) == 0
    assert (tmp_path / "clip.mp4").stat().st_size > 0


def test_encode_dataset_and_errors(files, tmp_path, capsys):
    base = ["--vae", "ltx2", "--checkpoint", str(files["ckpt"])]
    data = tmp_path / "videos"
    data.mkdir()
    (data / "a.mp4").write_bytes(files["video"].read_bytes())
    out = tmp_path / "latents"
    assert main(["encode-dataset", str(data), "-o", str(out), *base]) == 0
    assert load_latents(next(out.glob("*.safetensors")))[0].shape == (1, 8, 3, 3, 2)
    capsys.readouterr()
    # 12 frames is not 1 + 8k: refused before loading, with the fix named
    assert main(["encode", str(files["video12"]), "-o", str(tmp_path / "x.safetensors"), *base]) == 2
    assert "1 + 8k" in capsys.readouterr().err
    assert main(["encode", str(files["video12"]), "-o", str(tmp_path / "x.safetensors"), *base, "--frames", "5"]) == 2
    assert "1 + 8k" in capsys.readouterr().err
    assert main(["encode", str(files["video"]), "-o", str(tmp_path / "x.safetensors"), *base, "--crop", "48x48"]) == 2
    assert "divisible by 32" in capsys.readouterr().err
    assert main(["encode", str(files["video"]), "-o", str(tmp_path / "x.safetensors"), *base, "--tile-size", "48"]) == 2
    assert "multiple of the VAE's spatial factor 32" in capsys.readouterr().err
    wan = tmp_path / "wan.safetensors"
    from safetensors.torch import save_file

    save_file({"encoder.conv1.weight": torch.zeros(1), "decoder.upsamples.0.x": torch.zeros(1)}, str(wan))
    assert main(["encode", str(files["video"]), "-o", str(tmp_path / "x.safetensors"), "--vae", "ltx2", "--checkpoint", str(wan)]) == 2
    err = capsys.readouterr().err
    assert "not an LTX-2 video VAE" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "x.safetensors").exists()
