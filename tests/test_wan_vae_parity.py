"""Wan VAE (2.1 and 2.2 layouts, tiny widths) against diffusers' AutoencoderKLWan on shared random weights."""

from __future__ import annotations

import dataclasses

import pytest
import torch

from framestream.models.wan.vae import (
    DECODER_HEAD_PREFIXES,
    DECODER_TAIL_PREFIXES,
    ENCODER_BACK_PREFIXES,
    ENCODER_FRONT_PREFIXES,
    WAN21_VAE_ARCH,
    WAN22_VAE_ARCH,
    WanCausalCache,
    WanVAE,
    WanVAEArchConfig,
    reduced_width,
    tiny_wan21_arch,
    tiny_wan22_arch,
)

diffusers = pytest.importorskip("diffusers")
from diffusers import AutoencoderKLWan  # noqa: E402

TOL = 1e-5
LATENT_HW = (4, 6)
ARCHS = {"wan21": tiny_wan21_arch(), "wan22": tiny_wan22_arch()}


pytestmark = pytest.mark.usefixtures("one_thread")


def randomize(model: torch.nn.Module, seed: int) -> None:
    """Every parameter random (many diffusers params are zero-init); gammas near 1."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for name, p in sorted(model.named_parameters()):
            fan_in = p[0].numel() if p.dim() > 1 else 1
            noise = torch.randn(p.shape, generator=g) * (0.3 / fan_in**0.5)
            p.copy_(noise + (1.0 if name.endswith("gamma") else 0.0))


@pytest.fixture(scope="module", params=list(ARCHS))
def pair(request):
    torch.manual_seed(0)
    arch = ARCHS[request.param]
    ref = AutoencoderKLWan(**arch.to_diffusers_kwargs()).eval()
    randomize(ref, seed=1234)
    ours = WanVAE(arch).eval()
    ours.load_state_dict(ref.state_dict(), strict=True)
    s = arch.scale_factor_spatial
    g = torch.Generator().manual_seed(7)
    z = torch.randn(1, arch.z_dim, 4, *LATENT_HW, generator=g)
    x = torch.rand(1, 3, 13, LATENT_HW[0] * s, LATENT_HW[1] * s, generator=g) * 2 - 1
    with torch.no_grad():
        ref_video = ref.decode(z).sample
        ref_mean = ref.encode(x).latent_dist.mean
        ref_logvar = ref.encode(x[:, :, :5]).latent_dist.logvar
    return arch, ref, ours, z, x, ref_video, ref_mean, ref_logvar


def maxdiff(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------- structure
@pytest.mark.parametrize("arch", [WAN21_VAE_ARCH, WAN22_VAE_ARCH, tiny_wan21_arch(), tiny_wan22_arch(16)])
def test_state_dict_identical_to_diffusers_on_meta(arch):
    with torch.device("meta"):
        ref = AutoencoderKLWan(**arch.to_diffusers_kwargs())
        ours = WanVAE(arch)
    theirs = {k: tuple(v.shape) for k, v in ref.state_dict().items()}
    mine = {k: tuple(v.shape) for k, v in ours.state_dict().items()}
    assert mine == theirs
    assert all(p.is_meta for p in ours.parameters())


def test_published_sizes():
    with torch.device("meta"):
        n21 = sum(p.numel() for p in WanVAE(WAN21_VAE_ARCH).parameters())
        n22 = sum(p.numel() for p in WanVAE(WAN22_VAE_ARCH).parameters())
        n21_dec = sum(p.numel() for p in WanVAE(WAN21_VAE_ARCH, include_encoder=False).parameters())
    assert round(n21 / 1e6, 1) == 126.9
    assert round(n22 / 1e6, 1) == 704.7
    assert round(n21_dec / 1e6, 1) == 73.3


def test_half_models_have_only_their_half():
    arch = tiny_wan21_arch()
    with torch.device("meta"):
        full = set(WanVAE(arch).state_dict())
        dec = set(WanVAE(arch, include_encoder=False).state_dict())
        enc = set(WanVAE(arch, include_decoder=False).state_dict())
    assert dec | enc == full and not dec & enc
    assert all(k.startswith(("decoder.", "post_quant_conv.")) for k in dec)
    with pytest.raises(ValueError):
        WanVAE(arch, include_encoder=False, include_decoder=False)
    with torch.device("meta"):
        dec_only = WanVAE(arch, include_encoder=False)
    with pytest.raises(RuntimeError, match="without the encoder"):
        dec_only.encode(torch.zeros(1, 3, 1, 8, 8))


def test_stage_prefixes_partition_parameters():
    with torch.device("meta"):
        model = WanVAE(tiny_wan22_arch())
    groups = [DECODER_HEAD_PREFIXES, DECODER_TAIL_PREFIXES, ENCODER_FRONT_PREFIXES, ENCODER_BACK_PREFIXES]
    for key in model.state_dict():
        hits = [g for g in groups if key.startswith(tuple(p + "." for p in g))]
        assert len(hits) == 1, key


# ---------------------------------------------------------------------------- config
def test_presets_match_published_values():
    with torch.device("meta"):  # diffusers' defaults are the Wan 2.1 VAE
        default = AutoencoderKLWan()
    assert WanVAEArchConfig.from_diffusers_config(dict(default.config)) == WAN21_VAE_ARCH
    a = WAN22_VAE_ARCH
    assert (a.base_dim, a.decoder_base_dim, a.z_dim) == (160, 256, 48)
    assert (a.in_channels, a.out_channels, a.patch_size) == (12, 12, 2)
    assert (a.scale_factor_spatial, a.scale_factor_temporal, a.is_residual) == (16, 4, True)
    assert len(a.latents_mean) == len(a.latents_std) == 48
    assert a.latents_mean[:3] == (-0.2289, -0.0052, -0.1323) and a.latents_mean[-1] == -0.0667
    assert a.latents_std[:3] == (0.4765, 1.0364, 0.4514) and a.latents_std[-1] == 0.7744
    assert max(a.latents_std) == 1.6887 and min(a.latents_std) == 0.3523


def test_diffusers_config_round_trip_and_errors():
    for arch in (WAN21_VAE_ARCH, WAN22_VAE_ARCH, tiny_wan22_arch()):
        kwargs = arch.to_diffusers_kwargs()
        assert WanVAEArchConfig.from_diffusers_config(kwargs) == arch
        bookkeeping = {"_class_name": "AutoencoderKLWan", "_diffusers_version": "0.35.0", "clip_output": False}
        with_bookkeeping = {**kwargs, **bookkeeping}
        assert WanVAEArchConfig.from_diffusers_config(with_bookkeeping) == arch
    with pytest.raises(ValueError, match="unknown AutoencoderKLWan architecture key"):
        WanVAEArchConfig.from_diffusers_config({**WAN21_VAE_ARCH.to_diffusers_kwargs(), "num_heads": 4})
    with pytest.raises(ValueError, match="z_dim"):
        dataclasses.replace(WAN21_VAE_ARCH, z_dim=8)
    with pytest.raises(ValueError, match="scale_factor_spatial"):
        dataclasses.replace(WAN21_VAE_ARCH, scale_factor_spatial=16)
    with pytest.raises(ValueError, match="temperal_downsample"):
        dataclasses.replace(WAN21_VAE_ARCH, temperal_downsample=(True, True))


def test_reduced_width_keeps_layout():
    small = reduced_width(WAN22_VAE_ARCH, 16)
    assert (small.base_dim, small.decoder_base_dim) == (16, 26)
    assert dataclasses.replace(small, base_dim=160, decoder_base_dim=256) == WAN22_VAE_ARCH
    tiny = tiny_wan21_arch()
    assert tiny.decoder_base_dim is None and tiny.base_dim < 96
    assert dataclasses.replace(tiny, base_dim=96) == WAN21_VAE_ARCH


# ---------------------------------------------------------------------------- numerics
def test_outputs_are_not_trivial(pair):
    _, _, _, _, _, ref_video, ref_mean, _ = pair
    assert (ref_video.abs() < 1).float().mean() > 0.9  # not saturated by the clamp
    assert ref_video.std() > 0.05 and ref_mean.std() > 0.05


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_decode_matches_diffusers(pair, chunk_size):
    _, _, ours, z, _, ref_video, _, _ = pair
    with torch.no_grad():
        out = ours.decode(z, chunk_size=chunk_size)
    assert maxdiff(out, ref_video) <= TOL


@pytest.mark.parametrize(("splits", "chunk_size"), [((1, 3), 2), ((2, 2), 3), ((3, 1), 1), ((1, 1, 2), 3)])
def test_streamed_decode_matches_diffusers(pair, splits, chunk_size):
    _, _, ours, z, _, ref_video, _, _ = pair
    cache = WanCausalCache()
    parts, start = [], 0
    with torch.no_grad():
        for n in splits:
            parts.append(ours.decode(z[:, :, start : start + n], chunk_size=chunk_size, cache=cache))
            start += n
    assert [p.shape[2] for p in parts] == [1 + 4 * (splits[0] - 1)] + [4 * n for n in splits[1:]]
    assert maxdiff(torch.cat(parts, dim=2), ref_video) <= TOL


@pytest.mark.parametrize("chunk_size", [1, 2, 3])
def test_encode_matches_diffusers(pair, chunk_size):
    _, _, ours, _, x, _, ref_mean, ref_logvar = pair
    with torch.no_grad():
        mean = ours.encode(x, chunk_size=chunk_size)
        _, logvar = ours.encode(x[:, :, :5], chunk_size=chunk_size, return_logvar=True)
    assert maxdiff(mean, ref_mean) <= TOL
    assert maxdiff(logvar, ref_logvar) <= TOL


@pytest.mark.parametrize(("splits", "chunk_size"), [((1, 12), 2), ((5, 8), 1), ((9, 4), 3), ((1, 4, 8), 2)])
def test_streamed_encode_matches_diffusers(pair, splits, chunk_size):
    _, _, ours, _, x, _, ref_mean, _ = pair
    cache = WanCausalCache()
    parts, start = [], 0
    with torch.no_grad():
        for n in splits:
            parts.append(ours.encode(x[:, :, start : start + n], chunk_size=chunk_size, cache=cache))
            start += n
    assert maxdiff(torch.cat(parts, dim=2), ref_mean) <= TOL


def test_stage_split_matches_diffusers(pair):
    """decode_head / decode_tail with separate caches (as a spatial tiler would run them)."""
    arch, _, ours, z, x, ref_video, ref_mean, _ = pair
    head_cache, tail_cache = WanCausalCache(), WanCausalCache()
    frames = []
    with torch.no_grad():
        for t in range(z.shape[2]):
            h = ours.decode_head(z[:, :, t : t + 1], head_cache)
            assert h.shape[-2:] == z.shape[-2:]
            frames.append(ours.decode_tail(h, tail_cache))
        assert maxdiff(torch.cat(frames, dim=2), ref_video) <= TOL
        assert all(k.startswith(DECODER_HEAD_PREFIXES) for k in head_cache)
        assert all(k.startswith(DECODER_TAIL_PREFIXES) for k in tail_cache)

        front_cache, back_cache = WanCausalCache(), WanCausalCache()
        means = [ours.encode_back(ours.encode_front(x[:, :, :1], front_cache), back_cache)]
        means.append(ours.encode_back(ours.encode_front(x[:, :, 1:], front_cache), back_cache))
        # a first chunk of 1 + 4k frames in one call applies the first-frame rule inside the chunk
        one_call = ours.encode_chunk(x[:, :, :9], WanCausalCache())
    assert maxdiff(torch.cat(means, dim=2)[:, : arch.z_dim], ref_mean) <= TOL
    assert maxdiff(one_call[:, : arch.z_dim], ref_mean[:, :, :3]) <= TOL


def test_posterior_sample_uses_generator(pair):
    _, _, ours, _, x, _, _, _ = pair
    with torch.no_grad():
        mean, logvar = ours.encode(x[:, :, :1], return_logvar=True)
    a = WanVAE.sample_posterior(mean, logvar, torch.Generator().manual_seed(3))
    b = WanVAE.sample_posterior(mean, logvar, torch.Generator().manual_seed(3))
    c = WanVAE.sample_posterior(mean, logvar, torch.Generator().manual_seed(4))
    eps = torch.randn(mean.shape, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b) and not torch.equal(a, c)
    torch.testing.assert_close(a, mean + torch.exp(0.5 * logvar) * eps)


def test_latent_normalisation(pair):
    arch, _, ours, z, _, _, _, _ = pair
    mean = torch.tensor(arch.latents_mean).view(1, -1, 1, 1, 1)
    std = torch.tensor(arch.latents_std).view(1, -1, 1, 1, 1)
    torch.testing.assert_close(ours.normalize_latents(z), (z - mean) / std)
    torch.testing.assert_close(ours.denormalize_latents(ours.normalize_latents(z)), z)
    with pytest.raises(ValueError, match="latents"):
        ours.normalize_latents(z[:, :3])
