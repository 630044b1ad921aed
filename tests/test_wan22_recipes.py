"""Wan 2.2 recipes: published defaults, checkpoint layouts and wrong-model errors, the generate CLI with --image."""

from __future__ import annotations

import json
import struct
from pathlib import Path

import numpy as np
import pytest
import torch

from framestream.cli.main import main
from framestream.config import load_config, save_config
from framestream.diffusion.schedulers.unipc import FlowMatchUniPCSchedulerConfig
from framestream.diffusion.two_expert import TwoExpertTransformerConfig
from framestream.io.video import read_video
from framestream.models.wan.transformer import (
    WAN21_T2V_1_3B,
    WAN22_A14B,
    WAN22_I2V_A14B,
    WAN22_I2V_TINY,
    WAN22_TI2V_5B,
    WAN22_TINY,
    WAN_TINY,
    WanDiT,
    WanTI2VTransformerConfig,
    load_wan_transformer,
    save_wan_checkpoint,
)
from framestream.models.wan.transformer.checkpoint import (
    WrongWanModelError,
    check_wan_checkpoint_file,
    diffusers_to_original_key,
)
from framestream.models.wan.vae.config import WAN21_VAE_ARCH, WAN22_VAE_ARCH
from framestream.recipes import RECIPES, MissingWeightsError, generate_video, resolve_wan22_files
from framestream.recipes.runner import iter_video_chunks
from framestream.recipes.wan22 import with_image_conditioning, with_video_size


pytestmark = pytest.mark.usefixtures("one_thread")


# ----------------------------------------------------------------------------- recipes
def test_published_defaults():
    ti2v = RECIPES["wan2.2-ti2v-5b"]()
    tr, sched = ti2v.diffusion_model.transformer, ti2v.diffusion_model.scheduler
    assert isinstance(tr, WanTI2VTransformerConfig) and tr.arch == WAN22_TI2V_5B
    assert (tr.arch.inner_dim, tr.arch.ffn_dim, tr.arch.num_attention_heads, tr.arch.num_layers) == (3072, 14336, 24, 30)
    assert (tr.arch.in_channels, tr.arch.out_channels, tr.arch.patch_size) == (48, 48, (1, 2, 2))
    # 121 frames at 1280x704 through the 16x / 4x Wan 2.2 VAE: 31 latent frames of 44x80.
    assert (tr.num_frames, tr.height, tr.width) == (31, 44, 80) and not tr.causal and tr.guidance_scale == 5.0
    assert isinstance(sched, FlowMatchUniPCSchedulerConfig) and (sched.num_inference_steps, sched.shift) == (50, 5.0)
    assert ti2v.decoder.arch == WAN22_VAE_ARCH and ti2v.encoder is None  # T2V until an image is given

    a14b = RECIPES["wan2.2-t2v-a14b"]()
    tr, sched = a14b.diffusion_model.transformer, a14b.diffusion_model.scheduler
    assert isinstance(tr, TwoExpertTransformerConfig) and tr.boundary == 0.875 and tr.offload_inactive
    assert tr.high_noise.arch == tr.low_noise.arch == WAN22_A14B
    assert (tr.high_noise.guidance_scale, tr.low_noise.guidance_scale) == (4.0, 3.0)
    assert (tr.high_noise.num_frames, tr.high_noise.height, tr.high_noise.width) == (21, 90, 160)
    assert (sched.num_inference_steps, sched.shift) == (40, 12.0) and a14b.decoder.arch == WAN21_VAE_ARCH

    i2v = RECIPES["wan2.2-i2v-a14b"]()
    tr, sched = i2v.diffusion_model.transformer, i2v.diffusion_model.scheduler
    assert isinstance(tr, TwoExpertTransformerConfig) and tr.boundary == 0.9
    assert tr.high_noise.arch == tr.low_noise.arch == WAN22_I2V_A14B and WAN22_I2V_A14B.in_channels == 36
    assert (tr.high_noise.guidance_scale, tr.low_noise.guidance_scale) == (3.5, 3.5)
    assert (sched.num_inference_steps, sched.shift) == (40, 5.0) and i2v.decoder.arch == WAN21_VAE_ARCH
    assert i2v.encoder.num_frames == 81 and i2v.encoder.vae.arch == WAN21_VAE_ARCH  # image + 80 black frames


def test_recipes_round_trip_and_derive(tmp_path):
    for name in ("wan2.2-ti2v-5b", "wan2.2-t2v-a14b", "wan2.2-i2v-a14b", "wan2.2-ti2v-5b-tiny", "wan2.2-t2v-a14b-tiny",
                 "wan2.2-i2v-a14b-tiny"):  # fmt: skip
        config = RECIPES[name]()
        save_config(config, tmp_path / f"{name}.yaml")
        assert load_config(tmp_path / f"{name}.yaml") == config
    i2v = with_image_conditioning(RECIPES["wan2.2-ti2v-5b"]())
    assert i2v.encoder.arch == WAN22_VAE_ARCH and i2v.encoder.checkpoint_path == i2v.decoder.checkpoint_path
    small = with_video_size(i2v, 832, 480)
    assert (small.diffusion_model.transformer.height, small.diffusion_model.transformer.width) == (30, 52)
    with pytest.raises(ValueError, match="multiple of 32"):
        with_video_size(i2v, 840, 480)
    with pytest.raises(ValueError, match="text-to-video only"):
        with_image_conditioning(RECIPES["wan2.1-t2v-1.3b"]())
    a14b = with_video_size(RECIPES["wan2.2-t2v-a14b"](), 832, 480)
    assert a14b.diffusion_model.transformer.low_noise.height == 60


def _touch(path: Path) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(b"")


def test_resolve_wan22_files_both_layouts(tmp_path):
    original = tmp_path / "orig" / "Wan2.2-TI2V-5B"
    for name in ("diffusion_pytorch_model-00001-of-00002.safetensors", "config.json", "Wan2.2_VAE.pth",
                 "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json"):  # fmt: skip
        _touch(original / name)
    files = resolve_wan22_files(tmp_path / "orig")
    assert files.dit == original and files.vae.name == "Wan2.2_VAE.pth" and files.low_noise_dit is None

    diff = tmp_path / "diff"
    for name in ("transformer/diffusion_pytorch_model.safetensors", "transformer_2/diffusion_pytorch_model.safetensors",
                 "vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json"):  # fmt: skip
        _touch(diff / name)
    files = resolve_wan22_files(diff, "t2v-a14b")
    assert (files.dit, files.low_noise_dit) == (diff / "transformer", diff / "transformer_2")

    i2v = tmp_path / "i2v" / "Wan2.2-I2V-A14B"
    for name in ("high_noise_model/diffusion_pytorch_model.safetensors", "low_noise_model/diffusion_pytorch_model.safetensors",
                 "Wan2.1_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json"):  # fmt: skip
        _touch(i2v / name)
    files = resolve_wan22_files(tmp_path / "i2v", "i2v-a14b")
    assert (files.dit, files.low_noise_dit) == (i2v / "high_noise_model", i2v / "low_noise_model")

    a14b = tmp_path / "a14b"
    for name in ("high_noise_model/diffusion_pytorch_model.safetensors", "Wan2.1_VAE.pth"):
        _touch(a14b / name)
    with pytest.raises(MissingWeightsError) as err:
        resolve_wan22_files(a14b, "t2v-a14b")
    message = str(err.value)
    for needed in ("low_noise_model/", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/", "Wan-AI/Wan2.2-T2V-A14B"):
        assert needed in message
    assert "high-noise" not in message


# ------------------------------------------------------------------------- checkpoints
@pytest.mark.parametrize("layout", ["diffusers", "original"])
@pytest.mark.parametrize("arch", [WAN22_TINY, WAN22_I2V_TINY], ids=["ti2v", "i2v"])
def test_wan22_dit_checkpoint_round_trip(tmp_path, layout, arch):
    torch.manual_seed(0)
    dit = WanDiT(arch).eval()
    save_wan_checkpoint(dit, tmp_path, layout=layout)
    written = json.loads((tmp_path / "config.json").read_text())
    if layout == "original":
        assert (written["model_type"], written["in_dim"]) == (("ti2v", 48) if arch is WAN22_TINY else ("i2v", 36))
        from safetensors import safe_open

        with safe_open(str(tmp_path / "diffusion_pytorch_model.safetensors"), framework="pt") as f:
            keys = set(f.keys())
        assert "blocks.0.self_attn.q.weight" in keys and "head.modulation" in keys  # real original key names
    loaded = load_wan_transformer(tmp_path, dtype=torch.float32)  # arch from config.json, layout from the keys
    assert loaded.arch == arch
    assert all(torch.equal(a, b) for a, b in zip(dit.state_dict().values(), loaded.state_dict().values()))
    x, t = torch.randn(1, arch.in_channels, 2, 4, 6), torch.tensor([[0.0, 700.0]])
    text = torch.randn(1, 3, arch.text_dim)
    with torch.no_grad():
        assert torch.equal(dit(x, t, text), loaded(x, t, text))
    check_wan_checkpoint_file(tmp_path, arch)  # the right model passes the header check


def _write_sparse_safetensors(path: Path, shapes: dict[str, tuple[int, ...]]) -> None:
    """A real safetensors file with these keys and shapes whose (zero) data is a sparse hole: no disk, no RAM."""
    header, offset = {}, 0
    for key, shape in shapes.items():
        size = 2 * int(np.prod(shape))  # bf16
        header[key] = {"dtype": "BF16", "shape": list(shape), "data_offsets": [offset, offset + size]}
        offset += size
    blob = json.dumps(header).encode()
    blob += b" " * (-len(blob) % 8)
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(blob)) + blob)
        f.truncate(8 + len(blob) + offset)


def _wan21_1_3b_shapes(layout: str) -> dict[str, tuple[int, ...]]:
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanDiT(WAN21_T2V_1_3B).state_dict().items()}
    return shapes if layout == "diffusers" else {diffusers_to_original_key(k): v for k, v in shapes.items()}


@pytest.mark.parametrize("layout", ["diffusers", "original"])
def test_wan21_checkpoint_given_to_the_5b_recipe_is_one_clear_line(tmp_path, capsys, monkeypatch, layout):
    root = tmp_path / "Wan2.2-TI2V-5B"
    dit = root / ("transformer" if layout == "diffusers" else "") / "diffusion_pytorch_model.safetensors"
    _write_sparse_safetensors(dit, _wan21_1_3b_shapes(layout))
    for name in ("Wan2.2_VAE.pth", "models_t5_umt5-xxl-enc-bf16.pth", "google/umt5-xxl/tokenizer.json"):
        _touch(root / name)

    def no_model(*args, **kwargs):
        raise AssertionError("a model was built before the checkpoint was checked")

    monkeypatch.setattr("framestream.models.wan.transformer.model.WanDiT.__init__", no_model)
    out = tmp_path / "x.mp4"
    rc = main(["generate", "wan2.2-ti2v-5b", "--prompt", "a cat", "--checkpoint-dir", str(tmp_path), "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and len(err.splitlines()) == 1, err
    assert "width 1536, 16 latent channels, 30 blocks" in err and "(wan2.1-t2v-1.3b)" in err
    assert "wan2.2-ti2v-5b needs width 3072, 48 latent channels" in err
    assert not out.exists()


def test_wrong_model_header_check_on_tiny_files(tmp_path):
    save_wan_checkpoint(WanDiT(WAN_TINY), tmp_path, layout="original")
    with pytest.raises(WrongWanModelError, match="16 latent channels.*needs width 24, 48 latent channels"):
        check_wan_checkpoint_file(tmp_path / "diffusion_pytorch_model.safetensors", WAN22_TINY, wanted="the tiny TI2V")
    check_wan_checkpoint_file(tmp_path, WAN_TINY)  # its own architecture passes


# ------------------------------------------------------------------------ end to end
@pytest.fixture()
def image_png(tmp_path) -> Path:
    from PIL import Image

    pixels = (np.random.default_rng(0).random((80, 120, 3)) * 255).astype(np.uint8)
    path = tmp_path / "img.png"
    Image.fromarray(pixels).save(path)
    return path


def test_generate_cli_image_to_video(tmp_path, image_png, capsys):
    out = tmp_path / "i2v.mp4"
    rc = main(["generate", "wan2.2-ti2v-5b-tiny", "--prompt", "a cat on the moon", "--image", str(image_png),
               "--crop", "96x64", "-o", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    video, fps = read_video(out)
    assert video.shape == (9, 64, 96, 3) and fps == 24  # 3 latent frames -> 1 + 4 * 2 frames at the recipe's 24 fps
    # --resize sets the video size: 128x64 is 8x4 latents.
    rc = main(["generate", "wan2.2-ti2v-5b-tiny", "--prompt", "a cat", "--image", str(image_png),
               "--resize", "128x64", "-o", str(out), "--overwrite"])  # fmt: skip
    assert rc == 0 and read_video(out)[0].shape == (9, 64, 128, 3)


def test_generate_cli_i2v_a14b(tmp_path, image_png, capsys):
    out = tmp_path / "a14b.mp4"
    rc = main(["generate", "wan2.2-i2v-a14b-tiny", "--prompt", "a cat", "-o", str(out)])
    err = capsys.readouterr().err.strip()
    assert rc == 2 and "is image-to-video: pass --image" in err and not out.exists()
    rc = main(["generate", "wan2.2-i2v-a14b-tiny", "--prompt", "a cat", "--image", str(image_png), "--crop", "96x64",
               "-o", str(out)])  # fmt: skip
    assert rc == 0, capsys.readouterr().err
    video, fps = read_video(out)
    assert video.shape == (9, 64, 96, 3) and fps == 16


def test_generate_cli_image_errors(tmp_path, image_png, capsys):
    out = tmp_path / "bad.mp4"
    bad = tmp_path / "bad.png"
    bad.write_text("not an image")
    cases = [
        (["wan2.2-ti2v-5b-tiny", "--image", str(image_png)], "is 120x80 but the video is 96x64: pass --resize 96x64"),
        (["wan2.2-ti2v-5b-tiny", "--image", str(bad), "--crop", "96x64"], "neither PIL nor PyAV"),
        (["wan2.2-ti2v-5b-tiny", "--image", str(tmp_path / "none.png")], "image file not found"),
        (["wan2.2-ti2v-5b-tiny", "--image", str(image_png), "--crop", "100x64"], "multiple of 32"),
        (["wan2.2-ti2v-5b-tiny", "--image", str(image_png), "--crop", "160x64"], "larger than the image"),
        (["wan2.1-t2v-1.3b-tiny", "--image", str(image_png)], "text-to-video only"),
        (["wan2.2-t2v-a14b-tiny", "--image", str(image_png)], "text-to-video only"),
        (["wan2.2-ti2v-5b-tiny", "--resize", "96x64"], "fit the --image"),
    ]
    for extra, message in cases:
        rc = main(["generate", *extra, "--prompt", "x", "-o", str(out)])
        err = capsys.readouterr().err.strip()
        assert rc == 2 and message in err and len(err.splitlines()) == 1, (extra, err)
    assert not out.exists()


def test_pyav_reads_images_pil_cannot(image_png, monkeypatch):
    from framestream.io import image as image_io

    expected = image_io.read_image(image_png)
    monkeypatch.setattr(image_io, "_open_with_pil", lambda path: None)
    assert image_io.probe_image(image_png) == (120, 80)
    assert torch.equal(image_io.read_image(image_png), expected)  # PNG is lossless through either reader


def test_decode_streams_chunk_by_chunk_with_the_same_frames(tmp_path):
    from framestream.config import derive_config

    config = with_image_conditioning(RECIPES["wan2.2-ti2v-5b-tiny"]())
    pipeline = derive_config(config, decoder=None).setup().eval()
    decoder = config.decoder.setup().eval()
    image = torch.rand(1, 3, 1, 64, 96) * 2 - 1
    chunks = list(iter_video_chunks(pipeline, decoder, "a dog", 1, image=image, decode_chunk_latents=1))
    assert [c.shape[2] for _, c, _ in chunks] == [1, 4, 4] and [done for _, _, done in chunks] == [False, False, True]
    pipeline = derive_config(config, decoder=None).setup().eval()  # a fresh model: its seeded noise starts over
    whole = list(iter_video_chunks(pipeline, decoder, "a dog", 1, image=image, decode_chunk_latents=3))
    assert len(whole) == 1
    assert (torch.cat([c for _, c, _ in chunks], dim=2) - whole[0][1]).abs().max().item() <= 1e-5

    # The two-expert tiny recipe runs end to end through the same runner.
    blocks = []
    result = generate_video(RECIPES["wan2.2-t2v-a14b-tiny"](), "a dog", tmp_path / "a.mp4", on_block=lambda i, n: blocks.append(n))
    assert blocks == [9] and result["frames"] == 9


def test_real_shaped_5b_checkpoint_passes_the_recipe_check(tmp_path):
    root = tmp_path / "Wan2.2-TI2V-5B-Diffusers"
    with torch.device("meta"):
        shapes = {k: tuple(v.shape) for k, v in WanDiT(WAN22_TI2V_5B).state_dict().items()}
    _write_sparse_safetensors(root / "transformer" / "diffusion_pytorch_model.safetensors", shapes)
    for name in ("vae/config.json", "text_encoder/config.json", "tokenizer/tokenizer.json"):
        _touch(root / name)
    config = RECIPES["wan2.2-ti2v-5b"](tmp_path)
    transformer = config.diffusion_model.transformer
    assert transformer.checkpoint_path == str(root / "transformer")
    assert transformer.context_encoder.checkpoint_path == str(root / "text_encoder")
    assert config.decoder.checkpoint_path == str(root / "vae")
    assert with_image_conditioning(config).encoder.checkpoint_path == str(root / "vae")
