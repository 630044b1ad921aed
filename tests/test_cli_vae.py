"""framestream encode / decode end to end on tiny random-weight Wan VAE checkpoints (CPU, in-process)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from safetensors import safe_open
from safetensors.torch import save_file

from framestream import jobs
from framestream.cli.main import main
from framestream.io.latents import LatentMetadata, load_latents, save_latents
from framestream.io.transfer import frames_to_uint8
from framestream.io.video import StreamingVideoWriter, read_video, to_uint8
from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch, tiny_wan22_arch
from framestream.models.wan.vae.checkpoint import diffusers_to_original_state_dict

H, W, FPS = 40, 48, 12  # 5x6 latents


pytestmark = pytest.mark.usefixtures("one_thread")


def pattern_video(path: Path, frames: int, height: int = H, width: int = W, fps: float = FPS) -> Path:
    """A smooth moving colour pattern, written losslessly (crf 0) with the streaming writer."""
    y, x = torch.meshgrid(torch.linspace(-1, 1, height), torch.linspace(-1, 1, width), indexing="ij")
    clip = torch.stack(
        [torch.stack([x, y, torch.sin(3 * (x + y) + 0.4 * t)]) for t in range(frames)], dim=1
    )  # (3, T, H, W)
    with StreamingVideoWriter(path, fps=fps, crf=0, preset="ultrafast", threads=1) as writer:
        writer.write(clip * 0.9)
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict[str, Path]:
    root = tmp_path_factory.mktemp("cli_vae")
    model = init_random_weights(WanVAE(tiny_wan21_arch()), seed=0)
    state = {k: v.contiguous() for k, v in model.state_dict().items()}
    save_file(state, root / "vae21.safetensors")  # diffusers layout (framestream's names)
    torch.save(diffusers_to_original_state_dict(state, "2.1"), root / "Wan2.1_VAE.pth")  # original layout
    model22 = init_random_weights(WanVAE(tiny_wan22_arch()), seed=0)
    save_file({k: v.contiguous() for k, v in model22.state_dict().items()}, root / "vae22.safetensors")
    return {
        "root": root,
        "ckpt": root / "vae21.safetensors",
        "ckpt_pth": root / "Wan2.1_VAE.pth",
        "ckpt22": root / "vae22.safetensors",
        "video": pattern_video(root / "clip.mp4", 9),
        "video11": pattern_video(root / "clip11.mkv", 11),
        "odd": pattern_video(root / "odd.mp4", 9, height=42, width=52),
    }


@pytest.fixture(scope="module")
def latents(files) -> Path:
    out = files["root"] / "clip.safetensors"
    assert main(["encode", str(files["video"]), "-o", str(out), "--vae", "wan2.1", "--checkpoint", str(files["ckpt_pth"])]) == 0
    return out


@pytest.fixture(scope="module")
def vae(files) -> WanVAE:
    return jobs.load_vae(files["ckpt"], "2.1", include_encoder=True, include_decoder=True)


def run_json(capsys, argv: list[str]) -> dict:
    capsys.readouterr()
    assert main([*argv, "--json"]) == 0
    return json.loads(capsys.readouterr().out.strip().splitlines()[-1])


def decode_args(files, latents, output, *extra: str) -> list[str]:
    return ["decode", str(latents), "-o", str(output), "--checkpoint", str(files["ckpt"]), *extra]


def reference_frames(vae: WanVAE, latents: Path) -> torch.Tensor:
    """Float frames (1, 3, T, H, W) straight from WanVAE.decode."""
    z, meta = load_latents(latents)
    assert meta.normalized
    with torch.no_grad():
        return vae.decode(vae.denormalize_latents(z), chunk_size=1)


# ---------------------------------------------------------------------------- end to end
def test_encode_then_decode_mp4_with_json(files, latents, capsys, tmp_path):
    z, meta = load_latents(latents)
    assert z.shape == (1, 16, 3, H // 8, W // 8) and z.dtype == torch.float32
    assert meta == LatentMetadata(vae="wan2.1", frames=9, fps=FPS, height=H, width=W, normalized=True, source=str(files["video"]))

    summary = run_json(capsys, decode_args(files, latents, tmp_path / "out.mp4", "--chunk", "2"))
    assert summary["frames"] == 9 and (summary["height"], summary["width"]) == (H, W)
    assert summary["output"] == str(tmp_path / "out.mp4") and summary["seconds"] > 0
    assert summary["peak_memory_bytes"] > 0 and summary["peak_memory_kind"] == "rss"
    video, fps = read_video(tmp_path / "out.mp4")
    assert video.shape == (9, H, W, 3) and fps == pytest.approx(FPS)
    assert [p.name for p in tmp_path.iterdir()] == ["out.mp4"]  # no temporary file left


def test_encode_json_and_pt_output(files, latents, capsys, tmp_path):
    summary = run_json(
        capsys, ["encode", str(files["video"]), "-o", str(tmp_path / "z.pt"), "--vae", "wan2.1", "--checkpoint", str(files["ckpt"]), "--chunk", "2"]
    )
    assert summary["frames"] == 9 and summary["latent_shape"] == [1, 16, 3, 5, 6] and summary["output"] == str(tmp_path / "z.pt")
    z_pt, meta = load_latents(tmp_path / "z.pt")
    assert meta.frames == 9 and meta.vae == "wan2.1"
    # Same weights in either checkpoint layout, another chunk size: same latents.
    torch.testing.assert_close(z_pt, load_latents(latents)[0], atol=1e-5, rtol=0)


def test_png_npy_safetensors_outputs_match_the_float_reference(files, latents, vae, tmp_path):
    for name in ("frames/", "f.npy", "f.safetensors"):
        assert main(decode_args(files, latents, f"{tmp_path}/{name}")) == 0
    pngs = sorted((tmp_path / "frames").glob("*.png"))
    assert [p.name for p in pngs] == [f"frame_{i:06d}.png" for i in range(9)]
    from_png = np.stack([read_video(p)[0][0].numpy() for p in pngs])
    from_npy = np.load(tmp_path / "f.npy")
    with safe_open(str(tmp_path / "f.safetensors"), framework="pt") as handle:
        from_st = handle.get_tensor("frames").numpy()
        assert handle.metadata()["vae"] == "wan2.1"
    assert from_npy.dtype == np.uint8 and from_npy.shape == (9, H, W, 3)
    np.testing.assert_array_equal(from_png, from_npy)
    np.testing.assert_array_equal(from_st, from_npy)
    # uint8 conversion = round-to-nearest of the float decode (not truncation).
    ref = reference_frames(vae, latents)[0].permute(1, 2, 3, 0).double().numpy()
    levels = (ref + 1.0) * 127.5
    expected = np.clip(np.rint(levels), 0, 255).astype(np.uint8)
    # The CLI's float decode may differ from this one by float rounding (~1e-6), which can
    # only flip values sitting on a rounding boundary: equal everywhere else, off by one there.
    on_boundary = np.abs(levels - np.floor(levels) - 0.5) < 1e-3
    diff = np.abs(from_npy.astype(np.int16) - expected.astype(np.int16))
    assert diff.max() <= 1 and not diff[~on_boundary].any() and on_boundary.mean() < 0.01
    assert not np.array_equal(expected, ((ref + 1.0) * 127.5).astype(np.uint8))  # truncation would differ
    # --format overrides the suffix; a folder path without a trailing slash is PNG too.
    assert main(decode_args(files, latents, tmp_path / "frames2")) == 0
    assert len(list((tmp_path / "frames2").glob("*.png"))) == 9


def test_uint8_rounding_matches_float_reference():
    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 3, 2, 5, 7, generator=g) * 2.4 - 1.2
    x[0, 0, 0, 0, :4] = torch.tensor([-1.0, 1.0, 1 / 255, 0.999])
    reference = np.clip(np.rint((x.double().numpy() + 1) * 127.5), 0, 255).astype(np.uint8)
    got = frames_to_uint8(x, channels_last=False).numpy()
    np.testing.assert_array_equal(got, reference)
    np.testing.assert_array_equal(to_uint8(x).numpy(), reference)  # video.py delegates to the same code
    np.testing.assert_array_equal(to_uint8(x.numpy()), reference)
    np.testing.assert_array_equal(frames_to_uint8(x.bfloat16()).numpy(), np.clip(np.rint((x.bfloat16().double().numpy() + 1) * 127.5), 0, 255).astype(np.uint8).transpose(0, 2, 3, 4, 1))
    # another value range, odd element counts, NaN -> bottom of the range
    y = torch.tensor([0.0, 0.2, 0.5, 1.0, float("nan")])
    assert to_uint8(y, value_range=(0.0, 1.0)).tolist() == [0, 51, 128, 255, 0]


def test_frames_reach_the_writer_before_the_last_chunk_is_decoded(files, latents, tmp_path, monkeypatch):
    events: list[tuple[str, int]] = []
    decode_chunk, write = WanVAE.decode_chunk, StreamingVideoWriter.write

    def logged_decode_chunk(self, z, cache, **kw):
        events.append(("decode", z.shape[2]))
        return decode_chunk(self, z, cache, **kw)

    def logged_write(self, frames):
        write(self, frames)
        events.append(("write", self.num_frames))

    monkeypatch.setattr(WanVAE, "decode_chunk", logged_decode_chunk)
    monkeypatch.setattr(StreamingVideoWriter, "write", logged_write)
    assert main(decode_args(files, latents, tmp_path / "s.mp4", "--chunk", "1")) == 0
    decodes = [i for i, (kind, _) in enumerate(events) if kind == "decode"]
    writes = [i for i, (kind, _) in enumerate(events) if kind == "write"]
    assert len(decodes) == 3 and len(writes) == 3  # one chunk per latent frame, written one by one
    assert writes[0] < decodes[-1]  # frame 0 was in the encoder before the last latent was decoded
    assert [events[i][1] for i in writes] == [1, 5, 9]
    assert read_video(tmp_path / "s.mp4")[0].shape[0] == 9


def test_resize_crop_and_frame_selection(files, tmp_path):
    base = ["--vae", "wan2.1", "--checkpoint", str(files["ckpt"])]
    odd, v11 = str(files["odd"]), str(files["video11"])
    assert main(["encode", odd, "-o", str(tmp_path / "r.safetensors"), "--resize", "32x24", *base]) == 0
    z, meta = load_latents(tmp_path / "r.safetensors")
    assert z.shape == (1, 16, 3, 3, 4) and (meta.width, meta.height) == (32, 24)
    assert main(["encode", odd, "-o", str(tmp_path / "c.safetensors"), "--crop", "48x40", *base]) == 0
    assert load_latents(tmp_path / "c.safetensors")[0].shape == (1, 16, 3, 5, 6)
    assert main(["encode", v11, "-o", str(tmp_path / "t.safetensors"), "--trim-frames", *base]) == 0
    z, meta = load_latents(tmp_path / "t.safetensors")
    assert z.shape[2] == 3 and meta.frames == 9
    assert main(["encode", v11, "-o", str(tmp_path / "f.safetensors"), "--frames", "5", *base]) == 0
    z, meta = load_latents(tmp_path / "f.safetensors")
    assert z.shape[2] == 2 and meta.frames == 5


# ---------------------------------------------------------------------------- tiled == untiled
def test_tiled_and_untiled_agree(files, latents, vae, tmp_path):
    pytest.importorskip("framestream.tiling.wan_exact")
    tiling = jobs.make_tiling(16, 8, 2, 8)
    z, _ = load_latents(latents)
    z = vae.denormalize_latents(z)
    with torch.no_grad():
        untiled = torch.cat([f for f, _ in jobs.iter_decode(vae, z, chunk_size=2)], dim=2)
        tiled = torch.cat([f for f, _ in jobs.iter_decode(vae, z, chunk_size=2, tiling=tiling)], dim=2)
    torch.testing.assert_close(tiled, untiled, atol=1e-4, rtol=0)

    base = ["--vae", "wan2.1", "--checkpoint", str(files["ckpt"]), "--chunk", "2"]
    tile = ["--tile-size", "16", "--tile-overlap", "8", "--tile-batch-size", "2"]
    assert main(["encode", str(files["video"]), "-o", str(tmp_path / "t.safetensors"), *base, *tile]) == 0
    torch.testing.assert_close(load_latents(tmp_path / "t.safetensors")[0], load_latents(latents)[0], atol=1e-4, rtol=0)
    tile_major = ["encode", str(files["video"]), "-o", str(tmp_path / "m.safetensors"), *base, *tile, "--tile-order", "tile"]
    assert main(tile_major) == 0
    torch.testing.assert_close(load_latents(tmp_path / "m.safetensors")[0], load_latents(latents)[0], atol=1e-4, rtol=0)
    assert main(decode_args(files, latents, tmp_path / "u.npy")) == 0
    assert main(decode_args(files, latents, tmp_path / "t.npy", *tile)) == 0
    diff = np.abs(np.load(tmp_path / "t.npy").astype(int) - np.load(tmp_path / "u.npy").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3  # equal up to a rounding tie
    # Tile-major low-memory order: same frames, written at the end.
    assert main(decode_args(files, latents, tmp_path / "m.npy", *tile, "--tile-order", "tile")) == 0
    diff = np.abs(np.load(tmp_path / "m.npy").astype(int) - np.load(tmp_path / "u.npy").astype(int))
    assert diff.max() <= 1 and (diff > 0).mean() < 1e-3


# ---------------------------------------------------------------------------- clear errors
@pytest.fixture
def no_model_load(monkeypatch):
    """Every error below must be raised before any weight is read."""
    import framestream.models.wan.vae.checkpoint as checkpoint

    def fail(*args, **kwargs):
        raise AssertionError("the model was loaded before the error was found")

    monkeypatch.setattr(checkpoint, "load_wan_vae", fail)


def expect_error(capsys, argv: list[str], match: str) -> None:
    capsys.readouterr()
    assert main(argv) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert err and err[-1].startswith(f"framestream {argv[0]}: error:"), err
    assert match in err[-1], err[-1]


def test_decode_errors(files, latents, capsys, tmp_path, no_model_load):
    out = str(tmp_path / "o.mp4")
    ck = str(files["ckpt"])
    expect_error(capsys, ["decode", str(latents), "-o", out, "--checkpoint", ck, "--tile-order", "tile"], "needs --tile-size")
    z48 = tmp_path / "z48.safetensors"
    save_latents(z48, torch.zeros(1, 48, 2, 2, 2), LatentMetadata())
    blocker = tmp_path / "file.txt"
    blocker.write_text("x")
    cases = [
        (["decode", str(tmp_path / "missing.safetensors"), "-o", out, "--checkpoint", ck], "latent file not found"),
        (["decode", str(latents), "-o", out, "--checkpoint", str(tmp_path / "missing.pth")], "checkpoint not found"),
        (["decode", str(z48), "-o", out, "--vae", "wan2.1", "--checkpoint", ck], "48-channel latents but wan2.1 expects 16; pass --vae wan2.2"),
        (["decode", str(latents), "-o", out, "--vae", "wan2.2", "--checkpoint", str(files["ckpt22"])], "holds wan2.1 latents but --vae is wan2.2"),
        (["decode", str(z48), "-o", out, "--vae", "wan2.2", "--checkpoint", ck], "holds a Wan 2.1 VAE (diffusers layout) but --vae is wan2.2"),
        (["decode", str(latents), "-o", str(blocker / "o.mp4"), "--checkpoint", ck], "output path not writable"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--dtype", "fp8"], "--dtype: 'fp8' is not a dtype the VAE runs in; choose fp32, bf16, fp16"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--weights-dtype", "int32"], "--weights-dtype: 'int32' is not a dtype the VAE runs in"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--tile-size", "12"], "--tile-size 12 must be a positive multiple of the VAE's spatial factor 8"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--tile-size", "16", "--tile-overlap", "16"], "must be smaller than --tile-size"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--tile-overlap", "8"], "need --tile-size"),
        (["decode", str(latents), "-o", str(tmp_path / "o.gif"), "--checkpoint", ck], "cannot tell the output format"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--offload-caches"], "--offload-caches needs Wan exact tiling"),
        (["decode", str(latents), "-o", out, "--checkpoint", ck, "--tile-size", "16", "--tile-order", "tile", "--offload-caches"],
         "--offload-caches needs Wan exact tiling (--tile-size) in --tile-order frame"),
    ]
    for argv, match in cases:
        expect_error(capsys, argv, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["file.txt", "z48.safetensors"]


def test_encode_errors(files, capsys, tmp_path, no_model_load):
    out = str(tmp_path / "z.safetensors")
    base = ["--vae", "wan2.1", "--checkpoint", str(files["ckpt"])]
    expect_error(capsys, ["encode", str(files["video"]), "-o", out, *base, "--tile-order", "tile"], "needs --tile-size")
    garbage = tmp_path / "garbage.mp4"
    garbage.write_bytes(b"not a video at all" * 100)
    v9, v11, odd = str(files["video"]), str(files["video11"]), str(files["odd"])
    cases = [
        (["encode", str(tmp_path / "missing.mp4"), "-o", out, *base], "video file not found"),
        (["encode", str(garbage), "-o", out, *base], "cannot read video"),
        (["encode", odd, "-o", out, *base], "is 52x42, which is not divisible by 8, the spatial factor of wan2.1; pass --resize WxH or --crop WxH"),
        (["encode", odd, "-o", out, *base, "--resize", "50x40"], "--resize 50x40 is not divisible by 8"),
        (["encode", odd, "-o", out, *base, "--crop", "56x40"], "--crop 56x40 is larger than the video"),
        (["encode", v11, "-o", out, *base], "has 11 frames; the VAE takes 1 + 4k frames. Pass --trim-frames"),
        (["encode", v11, "-o", out, *base, "--frames", "7"], "--frames 7: the VAE takes 1 + 4k frames"),
        (["encode", v11, "-o", out, *base, "--frames", "13"], "--frames 13 but"),
        (["encode", v9, "-o", out, "--vae", "wan2.2", "--checkpoint", str(files["ckpt"])], "holds a Wan 2.1 VAE"),
        (["encode", v9, "-o", out, "--vae", "wan2.1", "--checkpoint", str(files["ckpt22"])], "pass --vae wan2.2"),
        (["encode", v9, "-o", out, *base, "--dtype", "int8"], "'int8' is not a dtype the VAE runs in"),
        (["encode", v9, "-o", str(tmp_path / "z.bin"), *base], "must end in .safetensors or .pt"),
        (["encode", v9, "-o", str(garbage / "z.safetensors"), *base], "output path not writable"),
        (["encode", v9, "-o", out, *base, "--tile-size", "64", "--tile-overlap", "4"], "--tile-overlap 4 must be a non-negative multiple"),
        (["encode", v9, "-o", out, *base, "--device", "nonsense"], "unknown device"),
    ]
    for argv, match in cases:
        expect_error(capsys, argv, match)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["garbage.mp4"]


def test_streaming_adapters_route_tiling_through_the_exact_tiler():
    wan_exact = pytest.importorskip("framestream.tiling.wan_exact")
    from framestream.decoders.wan import WanVAEDecoderConfig
    from framestream.encoders.wan import WanVAEEncoderConfig
    from framestream.tiling.planner import TilingConfig

    arch = tiny_wan21_arch()
    tiling = TilingConfig(tile_size_px=16, tile_overlap_px=8, tile_batch_size=2)
    z = torch.randn(1, 16, 3, 5, 6, generator=torch.Generator().manual_seed(0))
    plain, tiled = (WanVAEDecoderConfig(arch=arch, chunk_size=2, tiling=t).setup() for t in (None, tiling))
    cache = tiled.initialize_autoregressive_cache()
    assert isinstance(cache, wan_exact.WanTiledDecodeState)
    want = plain(z)
    got = torch.cat([tiled(z[:, :, :1], 0, cache), tiled(z[:, :, 1:], 1, cache)], dim=2)
    torch.testing.assert_close(got, want, atol=1e-4, rtol=0)
    with pytest.raises(TypeError, match="WanTiledDecodeState"):
        tiled(z, 0, plain.initialize_autoregressive_cache())
    x = torch.rand(1, 3, 5, H, W, generator=torch.Generator().manual_seed(1)) * 2 - 1
    enc_plain, enc_tiled = (WanVAEEncoderConfig(arch=arch, tiling=t).setup() for t in (None, tiling))
    torch.testing.assert_close(enc_tiled(x), enc_plain(x), atol=1e-4, rtol=0)
    with pytest.raises(ValueError, match="temporal_tile_frames=None"):
        WanVAEDecoderConfig(tiling=TilingConfig(tile_size_px=16, tile_overlap_px=8, temporal_tile_frames=8))
    with pytest.raises(ValueError, match="multiple of the spatial scale 8"):
        WanVAEEncoderConfig(tiling=TilingConfig(tile_size_px=12, tile_overlap_px=0))
