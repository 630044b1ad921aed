"""LTX-2 video VAE: parity with diffusers' AutoencoderKLLTX2Video, both checkpoint layouts, dtypes, checks."""

from __future__ import annotations

import dataclasses
import json

import pytest
import torch

from framestream.models.ltx2.vae import (
    LTX2_VAE_ARCH,
    LTX2VAE,
    LTX2VAEArchConfig,
    LTX2VAECheckpointError,
    detect_ltx2_checkpoint,
    init_random_weights,
    load_ltx2_vae,
    save_original_checkpoint,
    tiny_ltx2_arch,
)
from framestream.models.ltx2.vae.checkpoint import diffusers_to_original_key, original_to_diffusers_key

diffusers = pytest.importorskip("diffusers")


def _pair(arch: LTX2VAEArchConfig, seed: int = 0):
    ours = init_random_weights(LTX2VAE(arch), seed).eval()
    with torch.no_grad():
        ours.latents_mean.uniform_(-1, 1)
        ours.latents_std.uniform_(0.5, 2)
    ref = diffusers.AutoencoderKLLTX2Video(**arch.to_diffusers_kwargs()).eval()
    ref.load_state_dict(ours.state_dict(), strict=True)  # same keys and shapes
    return ours, ref


@pytest.mark.parametrize(
    "decoder_causal,timestep_conditioning", [(False, False), (True, False), (False, True)], ids=["noncausal", "causal", "timestep"]
)
def test_parity_with_diffusers(decoder_causal, timestep_conditioning):
    arch = tiny_ltx2_arch(decoder_causal=decoder_causal, timestep_conditioning=timestep_conditioning)
    ours, ref = _pair(arch)
    g = torch.Generator().manual_seed(1)
    x = torch.rand(2, 3, 9, 64, 96, generator=g) * 2 - 1
    z = torch.randn(2, 8, 3, 2, 3, generator=g)
    temb = torch.tensor([0.05, 0.4]) if timestep_conditioning else None
    with torch.no_grad():
        mean, logvar = ours.encode(x, return_logvar=True)
        dist = ref.encode(x).latent_dist
        frames = ours.decode(z, temb)
        expected = ref.decode(z, temb).sample
    assert mean.shape == (2, 8, 2, 2, 3) and frames.shape == (2, 3, 17, 64, 96)
    assert (mean - dist.mode()).abs().max() <= 1e-5
    assert (logvar - dist.logvar).abs().max() <= 1e-5
    assert (frames - expected).abs().max() <= 1e-5
    assert frames.abs().max() > 0.1  # a real signal, not zeros on both sides


def test_causal_and_noncausal_decoders_differ_and_time_depends_on_future_only_when_noncausal():
    noncausal = init_random_weights(LTX2VAE(tiny_ltx2_arch()), 0).eval()
    causal = init_random_weights(LTX2VAE(tiny_ltx2_arch(decoder_causal=True)), 0).eval()
    z = torch.randn(1, 8, 3, 2, 2, generator=torch.Generator().manual_seed(0))
    z2 = z.clone()
    z2[:, :, -1] += 1  # change the last latent frame only
    with torch.no_grad():
        for vae, leaks in ((noncausal, True), (causal, False)):
            a, b = vae.decode(z), vae.decode(z2)
            assert torch.equal(a[:, :, :1], b[:, :, :1]) != leaks
    with torch.no_grad():
        assert (noncausal.decode(z) - causal.decode(z)).abs().max() > 1e-3


def test_real_architecture_builds_on_meta_and_matches_diffusers_shapes():
    with torch.device("meta"):
        ours = LTX2VAE(LTX2_VAE_ARCH)
        ref = diffusers.AutoencoderKLLTX2Video(**LTX2_VAE_ARCH.to_diffusers_kwargs())
    assert {k: tuple(v.shape) for k, v in ours.state_dict().items()} == {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    assert (ours.spatial_ratio, ours.temporal_ratio, ours.latent_channels) == (32, 8, 128)
    assert LTX2VAEArchConfig.from_diffusers_config(dict(ref.config)) == LTX2_VAE_ARCH


def test_bf16_weights_and_compute_dtype():
    arch = tiny_ltx2_arch()
    ours = init_random_weights(LTX2VAE(arch), 0).eval()
    half = init_random_weights(LTX2VAE(arch), 0).eval().to(torch.bfloat16)
    z = torch.randn(1, 8, 2, 2, 2, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = ours.decode(z)
        out = half.decode(z.bfloat16())  # bf16 weights, bf16 compute
        mixed = half.decode(z)  # bf16 weights cast to the fp32 input
    assert out.dtype == torch.bfloat16 and mixed.dtype == torch.float32
    assert (out.float() - ref).abs().max() < 0.1
    assert (mixed - ref).abs().max() < 0.05


def test_bad_inputs_fail_before_any_work():
    vae = init_random_weights(LTX2VAE(tiny_ltx2_arch()), 0).eval()
    with pytest.raises(ValueError, match="1 \\+ 8k frames"):
        vae.encode(torch.zeros(1, 3, 8, 64, 64))
    with pytest.raises(ValueError, match="multiples of 32"):
        vae.encode(torch.zeros(1, 3, 9, 48, 64))
    with pytest.raises(ValueError, match="8 channels"):
        vae.decode(torch.zeros(1, 4, 2, 2, 2))
    with pytest.raises(ValueError, match="not timestep-conditioned"):
        vae.decode(torch.zeros(1, 8, 2, 2, 2), torch.zeros(1))
    with pytest.raises(ValueError, match="noise"):
        dataclasses.replace(tiny_ltx2_arch(), decoder_inject_noise=(True, False, False, False))
    with pytest.raises(ValueError, match="not supported"):
        dataclasses.replace(tiny_ltx2_arch(), downsample_type=("conv", "temporal", "spatiotemporal", "spatiotemporal"))


# ----------------------------------------------------------------------------- checkpoints
def test_key_maps_match_diffusers_conversion_rules():
    # the published original -> diffusers renames (scripts/convert_ltx2_to_diffusers.py)
    assert original_to_diffusers_key("encoder.down_blocks.1.conv.conv.weight", 4) == "encoder.down_blocks.0.downsamplers.0.conv.conv.weight"
    assert original_to_diffusers_key("encoder.down_blocks.6.res_blocks.1.conv1.conv.bias", 4) == "encoder.down_blocks.3.resnets.1.conv1.conv.bias"
    assert original_to_diffusers_key("encoder.down_blocks.8.res_blocks.0.conv2.conv.weight", 4) == "encoder.mid_block.resnets.0.conv2.conv.weight"
    assert original_to_diffusers_key("decoder.up_blocks.0.res_blocks.4.conv1.conv.weight", 4) == "decoder.mid_block.resnets.4.conv1.conv.weight"
    assert original_to_diffusers_key("decoder.up_blocks.5.conv.conv.weight", 4) == "decoder.up_blocks.2.upsamplers.0.conv.conv.weight"
    assert original_to_diffusers_key("decoder.up_blocks.6.res_blocks.0.conv1.conv.weight", 4) == "decoder.up_blocks.2.resnets.0.conv1.conv.weight"
    assert original_to_diffusers_key("per_channel_statistics.mean-of-means", 4) == "latents_mean"
    assert original_to_diffusers_key("per_channel_statistics.mean-of-stds", 4) is None
    with torch.device("meta"):
        keys = LTX2VAE(tiny_ltx2_arch(timestep_conditioning=True)).state_dict().keys()
    for key in keys:
        assert original_to_diffusers_key(diffusers_to_original_key(key, 4), 4) == key


@pytest.mark.parametrize("timestep_conditioning", [False, True], ids=["plain", "timestep"])
def test_both_layouts_round_trip(tmp_path, timestep_conditioning):
    arch = tiny_ltx2_arch(timestep_conditioning=timestep_conditioning)
    ours, ref = _pair(arch, seed=4)
    ref.save_pretrained(tmp_path / "pipe" / "vae")  # diffusers' own writer
    save_original_checkpoint(ours, arch, tmp_path / "ltx-2.safetensors", extra={"model.diffusion_model.proj_in.weight": torch.zeros(3, 2)})
    meta = json.loads(__import__("safetensors").safe_open(str(tmp_path / "ltx-2.safetensors"), "pt").metadata()["config"])
    assert meta["vae"]["encoder_blocks"][1] == ["compress_space_res", {"multiplier": 2}]
    for path, layout in (
        (tmp_path / "pipe", "diffusers"),
        (tmp_path / "pipe" / "vae", "diffusers"),
        (tmp_path / "ltx-2.safetensors", "original"),
    ):
        info = detect_ltx2_checkpoint(path)
        assert info.layout == layout and info.arch == arch
        loaded = load_ltx2_vae(path)
        assert not any(t.is_meta or t.requires_grad for t in loaded.parameters())
        for key, value in ours.state_dict().items():
            assert torch.equal(loaded.state_dict()[key], value), key
    half = load_ltx2_vae(tmp_path / "ltx-2.safetensors", dtype="bf16", include_encoder=False)
    assert not half.has_encoder and half.decoder.conv_in.conv.weight.dtype == torch.bfloat16
    assert half.latents_mean.dtype == torch.float32


def test_wrong_model_gives_one_clear_error(tmp_path):
    from safetensors.torch import save_file

    arch = tiny_ltx2_arch()
    ours = init_random_weights(LTX2VAE(arch), 0)
    save_original_checkpoint(ours, arch, tmp_path / "ltx.safetensors")
    with pytest.raises(LTX2VAECheckpointError, match="does not fit") as err:
        load_ltx2_vae(tmp_path / "ltx.safetensors", arch=tiny_ltx2_arch(timestep_conditioning=True))
    assert "missing" in str(err.value)
    save_file({"encoder.conv1.weight": torch.zeros(1), "decoder.upsamples.0.x": torch.zeros(1)}, str(tmp_path / "wan.safetensors"))
    with pytest.raises(LTX2VAECheckpointError, match="not an LTX-2 video VAE.*Wan VAE"):
        load_ltx2_vae(tmp_path / "wan.safetensors")
    torch.save({"vae.encoder.x": torch.zeros(1)}, tmp_path / "x.pth")
    with pytest.raises(LTX2VAECheckpointError, match="safetensors"):
        load_ltx2_vae(tmp_path / "x.pth")
    state = ours.state_dict()
    state["decoder.conv_in.conv.weight"] = torch.zeros(1)
    save_file({k: v.contiguous() for k, v in state.items()}, str(tmp_path / "diffusion_pytorch_model.safetensors"))
    (tmp_path / "config.json").write_text(json.dumps({"_class_name": "AutoencoderKLLTX2Video", **arch.to_diffusers_kwargs()}))
    with pytest.raises(LTX2VAECheckpointError, match="shape mismatch"):
        load_ltx2_vae(tmp_path)
