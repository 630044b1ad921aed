"""Wan VAE explicit caches, padded static-shape chunks, streaming adapters, frame rules and dtypes."""

from __future__ import annotations

import threading

import pytest
import torch

from framestream.config import load_config, save_config
from framestream.decoders.wan import WanVAEDecoder, WanVAEDecoderConfig
from framestream.encoders.wan import WanVAEEncoder, WanVAEEncoderConfig
from framestream.models.wan.vae import (
    DECODER_HEAD_PREFIXES,
    DECODER_TAIL_PREFIXES,
    WanCausalCache,
    WanVAE,
    build_wan_vae,
    stack_caches,
    tiny_wan21_arch,
    tiny_wan22_arch,
    unstack_cache,
)

ARCHS = {"wan21": tiny_wan21_arch(), "wan22": tiny_wan22_arch()}
HW = (4, 6)  # latent size


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module", params=list(ARCHS))
def vae(request) -> WanVAE:
    return build_wan_vae(ARCHS[request.param], seed=0)


@pytest.fixture(scope="module")
def vae21() -> WanVAE:
    return build_wan_vae(ARCHS["wan21"], seed=0)


def latents(arch, frames: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, arch.z_dim, frames, *HW, generator=torch.Generator().manual_seed(seed))


def video(arch, frames: int, seed: int = 0, batch: int = 1) -> torch.Tensor:
    s = arch.scale_factor_spatial
    g = torch.Generator().manual_seed(seed)
    return torch.rand(batch, 3, frames, HW[0] * s, HW[1] * s, generator=g) * 2 - 1


def assert_same_cache(a: WanCausalCache, b: WanCausalCache, atol: float = 1e-4) -> None:
    """Same slots; values equal up to float rounding (a dirty slot is off by O(0.1))."""
    assert a.keys() == b.keys()
    for k in a:
        assert a[k].shape == b[k].shape, k
        torch.testing.assert_close(a[k], b[k], atol=atol, rtol=0, msg=k)


# ---------------------------------------------------------------------------- padded chunks
def test_padded_decode_chunk_leaves_the_cache_clean(vae):
    arch = vae.arch
    z = latents(arch, 5)
    with torch.no_grad():
        # 2 real frames padded to chunk 4 vs. the same frames unpadded, then continue both.
        padded, plain = WanCausalCache(), WanCausalCache()
        a = vae.decode(z[:, :, :2], chunk_size=4, cache=padded)
        b = vae.decode(z[:, :, :2], chunk_size=1, cache=plain)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert_same_cache(padded, plain)
        c = vae.decode(z[:, :, 2:], chunk_size=4, cache=padded)
        d = vae.decode(z[:, :, 2:], chunk_size=2, cache=plain)
    assert c.shape[2] == d.shape[2] == 12
    torch.testing.assert_close(c, d, atol=1e-5, rtol=0)
    assert_same_cache(padded, plain)


def test_padded_encode_chunk_leaves_the_cache_clean(vae):
    arch = vae.arch
    x = video(arch, 13)
    with torch.no_grad():
        padded, plain = WanCausalCache(), WanCausalCache()
        a = vae.encode(x[:, :, :5], chunk_size=3, cache=padded)  # 1 + 4 frames, chunk of 12 padded
        b = vae.encode(x[:, :, :5], chunk_size=1, cache=plain)
        torch.testing.assert_close(a, b, atol=1e-5, rtol=0)
        assert_same_cache(padded, plain)
        c = vae.encode(x[:, :, 5:], chunk_size=3, cache=padded)
        d = vae.encode(x[:, :, 5:], chunk_size=1, cache=plain)
    assert c.shape[2] == 2
    torch.testing.assert_close(c, d, atol=1e-5, rtol=0)
    assert_same_cache(padded, plain)


def _boom(module, args, output):
    raise RuntimeError("injected failure in the tail")


def test_failed_atomic_chunk_does_not_touch_the_cache(vae21):
    cache = WanCausalCache()
    z = latents(vae21.arch, 2)
    with torch.no_grad():
        vae21.decode(z[:, :, :1], cache=cache, atomic=True)
        before = cache.clone()
        handle = vae21.decoder.up_blocks[2].register_forward_hook(_boom)
        try:
            with pytest.raises(RuntimeError, match="injected"):
                vae21.decode(z[:, :, 1:], cache=cache, atomic=True)
        finally:
            handle.remove()
        assert_same_cache(cache, before, atol=0)
        # the stream still continues exactly
        torch.testing.assert_close(vae21.decode(z[:, :, 1:], cache=cache), vae21.decode(z)[:, :, 1:], atol=1e-5, rtol=0)


def test_failed_write_through_chunk_marks_the_stream_broken(vae21):
    cache = WanCausalCache()
    z = latents(vae21.arch, 2)
    with torch.no_grad():
        vae21.decode(z[:, :, :1], cache=cache)
        assert not cache.broken
        handle = vae21.decoder.up_blocks[2].register_forward_hook(_boom)
        try:
            with pytest.raises(RuntimeError, match="injected"):
                vae21.decode(z[:, :, 1:], cache=cache)
        finally:
            handle.remove()
        assert cache.broken
        with pytest.raises(ValueError, match="fresh cache"):
            vae21.decode(z[:, :, 1:], cache=cache)
        # a new stream is unaffected
        torch.testing.assert_close(vae21.decode(z), vae21.decode(z, atomic=True), atol=0, rtol=0)


# ---------------------------------------------------------------------------- cache independence
def test_interleaved_rollouts_equal_separate_ones(vae):
    arch = vae.arch
    za, zb = latents(arch, 4, seed=1), latents(arch, 4, seed=2)
    with torch.no_grad():
        sep_a = vae.decode(za, chunk_size=2)
        sep_b = vae.decode(zb, chunk_size=2)
        ca, cb = WanCausalCache(), WanCausalCache()
        outs_a, outs_b = [], []
        for t in range(0, 4, 2):
            outs_a.append(vae.decode(za[:, :, t : t + 2], chunk_size=2, cache=ca))
            outs_b.append(vae.decode(zb[:, :, t : t + 2], chunk_size=2, cache=cb))
    torch.testing.assert_close(torch.cat(outs_a, 2), sep_a, atol=1e-6, rtol=0)
    torch.testing.assert_close(torch.cat(outs_b, 2), sep_b, atol=1e-6, rtol=0)
    assert not torch.allclose(sep_a, sep_b)


def test_threads_decode_independently(vae21):
    arch = vae21.arch
    inputs = [latents(arch, 3, seed=s) for s in (3, 4, 5)]
    with torch.no_grad():
        expected = [vae21.decode(z, chunk_size=1) for z in inputs]
    results: dict[int, torch.Tensor] = {}
    errors: list[BaseException] = []
    start = threading.Barrier(len(inputs))

    def work(i: int) -> None:
        try:
            cache = WanCausalCache()
            start.wait()
            with torch.no_grad():
                results[i] = torch.cat([vae21.decode(inputs[i][:, :, t : t + 1], cache=cache) for t in range(3)], 2)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(len(inputs))]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for i, exp in enumerate(expected):
        torch.testing.assert_close(results[i], exp, atol=1e-6, rtol=0)


def test_clone_forks_a_stream(vae21):
    z = latents(vae21.arch, 3)
    with torch.no_grad():
        cache = WanCausalCache()
        vae21.decode(z[:, :, :1], cache=cache)
        fork = cache.clone()
        a = vae21.decode(z[:, :, 1:], cache=cache)
        b = vae21.decode(z[:, :, 1:], cache=fork)
        c = vae21.decode(z[:, :, 1:], cache=cache)  # the original has moved on
    torch.testing.assert_close(a, b, atol=0, rtol=0)
    assert not torch.allclose(a, c)


def test_stacked_caches_decode_a_batch(vae):
    """Per-stream caches stacked along batch continue as one batch, then unstack."""
    arch = vae.arch
    z1, z2 = latents(arch, 3, seed=11), latents(arch, 3, seed=12)
    with torch.no_grad():
        c1, c2 = WanCausalCache(), WanCausalCache()
        vae.decode(z1[:, :, :1], cache=c1)
        vae.decode(z2[:, :, :1], cache=c2)
        ref1 = vae.decode(z1[:, :, 1:], cache=c1.clone())
        ref2 = vae.decode(z2[:, :, 1:], cache=c2.clone())
        both = stack_caches([c1, c2])
        assert both.batch_size == 2 and both.keys() == c1.keys()
        out = vae.decode(torch.cat([z1[:, :, 1:], z2[:, :, 1:]]), cache=both)
    torch.testing.assert_close(out[:1], ref1, atol=1e-5, rtol=0)
    torch.testing.assert_close(out[1:], ref2, atol=1e-5, rtol=0)
    parts = unstack_cache(both, 2)
    assert [p.batch_size for p in parts] == [1, 1]
    for k in both:
        torch.testing.assert_close(torch.cat([parts[0][k], parts[1][k]]), both[k], atol=0, rtol=0)
    with pytest.raises(ValueError, match="stream positions"):
        WanCausalCache.stack([c1, WanCausalCache()])
    with pytest.raises(ValueError, match="equal parts"):
        both.unstack(3)


def test_cache_prefix_tools(vae21):
    cache = WanCausalCache()
    with torch.no_grad():
        vae21.decode(latents(vae21.arch, 2), cache=cache)
    head, tail, rest = cache.split(DECODER_HEAD_PREFIXES, DECODER_TAIL_PREFIXES)
    assert len(head) and len(tail) and not len(rest)
    assert len(head) + len(tail) == len(cache)
    assert head.keys() == cache.select(DECODER_HEAD_PREFIXES).keys()
    assert tail.keys() == cache.without(DECODER_HEAD_PREFIXES).keys()
    assert WanCausalCache.merge([head, tail]).keys() == sorted(cache.keys(), key=cache.keys().index)
    with pytest.raises(ValueError, match="share slots"):
        WanCausalCache.merge([head, head])
    # slots are keyed by module path; causal convs hold 2 frames, batch first
    conv = "decoder.up_blocks.0.resnets.0.conv1"
    assert cache[conv].shape[:3] == (1, vae21.decoder.up_blocks[0].resnets[0].conv1.in_channels, 2)
    assert "decoder.up_blocks.0.upsamplers.0.time_conv" in cache
    assert cache.started("decoder") and not cache.started("encoder")
    assert cache.select("decoder.mid_block").started("decoder.mid_block")
    crop = cache.apply(lambda t: t[..., :1, :1])
    assert all(t.shape[-2:] == (1, 1) for t in crop.slots.values())
    assert cache.nbytes == sum(t.numel() * 4 for t in cache.slots.values())


def test_rep_rule_first_frame_skips_temporal_upsampling(vae21):
    """The first latent frame gives one frame; the time_conv slot starts as zeros."""
    cache = WanCausalCache()
    with torch.no_grad():
        out = vae21.decode(latents(vae21.arch, 1), cache=cache)
    assert out.shape[2] == 1
    slot = cache["decoder.up_blocks.0.upsamplers.0.time_conv"]
    assert slot.shape[2] == 2 and torch.count_nonzero(slot) == 0


# ---------------------------------------------------------------------------- frame rules and errors
def test_frame_count_rules(vae21):
    arch = vae21.arch
    with torch.no_grad():
        assert vae21.decode(latents(arch, 3)).shape[2] == 9
        cache = WanCausalCache()
        vae21.decode(latents(arch, 1), cache=cache)
        assert vae21.decode(latents(arch, 2), cache=cache).shape[2] == 8
        assert vae21.encode(video(arch, 9)).shape[2] == 3
        enc_cache = WanCausalCache()
        vae21.encode(video(arch, 1), cache=enc_cache)
        assert vae21.encode(video(arch, 8), cache=enc_cache).shape[2] == 2


@pytest.mark.parametrize(
    ("shape", "continuing", "match"),
    [
        ((1, 3, 4, 32, 48), False, "1 \\+ 4k frames"),
        ((1, 3, 5, 32, 48), True, "multiple of 4 frames"),
        ((1, 3, 0, 32, 48), False, "1 \\+ 4k frames"),
        ((1, 4, 5, 32, 48), False, "3 channels"),
        ((1, 3, 5, 30, 48), False, "multiples of 8"),
        ((1, 3, 5, 32, 4), False, "multiples of 8"),
        ((1, 3, 5, 32), False, "\\(B, C, T, H, W\\)"),
        ((2, 3, 4, 32, 48), True, "does not continue"),
    ],
)
def test_encode_errors(vae21, shape, continuing, match):
    cache = WanCausalCache()
    if continuing:
        with torch.no_grad():
            vae21.encode(video(vae21.arch, 1), cache=cache)
    before = cache.clone()
    with pytest.raises(ValueError, match=match):
        vae21.encode(torch.zeros(shape), cache=cache)
    assert_same_cache(cache, before, atol=0)


def test_decode_errors(vae21):
    with pytest.raises(ValueError, match="z_dim=16 channels"):
        vae21.decode(torch.zeros(1, 8, 2, *HW))
    with pytest.raises(ValueError, match="at least one frame"):
        vae21.decode(torch.zeros(1, 16, 0, *HW))
    with pytest.raises(ValueError, match="floating-point"):
        vae21.decode(torch.zeros(1, 16, 2, *HW, dtype=torch.long))
    with pytest.raises(ValueError, match="chunk_size"):
        vae21.decode(torch.zeros(1, 16, 2, *HW), chunk_size=0)
    with pytest.raises(ValueError, match="num_padded"):
        vae21.decode_chunk(torch.zeros(1, 16, 2, *HW), WanCausalCache(), num_padded=2)
    cache = WanCausalCache()
    with torch.no_grad():
        vae21.decode(torch.zeros(1, 16, 1, *HW), cache=cache)
    with pytest.raises(ValueError, match="does not continue"):
        vae21.decode(torch.zeros(1, 16, 1, 4, 4), cache=cache)


def test_output_is_clamped(vae21):
    model = build_wan_vae(vae21.arch, seed=0, include_encoder=False)
    z = latents(vae21.arch, 2)
    with torch.no_grad():
        base = model.decode(z)
        assert base.abs().max() < 1  # random init stays inside the range...
        model.decoder.conv_out.bias.copy_(torch.tensor([10.0, -10.0, 0.0]))
        out = model.decode(z)
    assert torch.all(out[:, 0] == 1.0) and torch.all(out[:, 1] == -1.0)  # ...so this is the clamp
    assert out[:, 2].abs().max() <= 1.0


# ---------------------------------------------------------------------------- dtypes
@pytest.mark.parametrize("name", list(ARCHS))
def test_bf16_compute_close_to_fp32(name):
    arch = ARCHS[name]
    z = latents(arch, 2)
    x = video(arch, 5)
    ref = build_wan_vae(arch, seed=0)
    with torch.no_grad():
        want_dec = ref.decode(z, chunk_size=2)
        want_enc = ref.encode(x)
    bf16 = build_wan_vae(arch, seed=0, weights_dtype=torch.bfloat16)
    assert all(p.dtype == torch.bfloat16 for p in bf16.parameters())
    with torch.no_grad():
        got_dec = bf16.decode(z.bfloat16(), chunk_size=2)
        got_enc = bf16.encode(x.bfloat16())
        mixed = ref.decode(z.bfloat16(), chunk_size=2)  # fp32 weights, bf16 compute
    assert got_dec.dtype == got_enc.dtype == mixed.dtype == torch.bfloat16
    for got, want in ((got_dec, want_dec), (got_enc, want_enc), (mixed, want_dec)):
        err = (got.float() - want).abs()
        assert err.max() < 0.1 and err.mean() < 0.02 * want.abs().mean() + 5e-3


def test_bf16_weights_fp32_compute_matches_cast_weights(vae21):
    z = latents(vae21.arch, 2)
    bf16 = build_wan_vae(vae21.arch, seed=0, weights_dtype="bf16", include_encoder=False)
    upcast = build_wan_vae(vae21.arch, seed=0, include_encoder=False)
    upcast.load_state_dict({k: v.float() for k, v in bf16.state_dict().items()})
    with torch.no_grad():
        a = bf16.decode(z)
        b = upcast.decode(z)
    assert a.dtype == torch.float32
    torch.testing.assert_close(a, b, atol=1e-6, rtol=0)


# ---------------------------------------------------------------------------- streaming adapters
def test_decoder_adapter_streams(vae):
    arch = vae.arch
    cfg = WanVAEDecoderConfig(arch=arch, chunk_size=2, seed=0)
    dec = cfg.setup()
    assert isinstance(dec, WanVAEDecoder)
    assert dec.spatial_compression_ratio == arch.scale_factor_spatial
    assert dec.temporal_compression_ratio == 4
    assert dec.get_output_temporal_size(0, 3) == 9 and dec.get_output_temporal_size(1, 3) == 12
    assert dec.get_input_temporal_size(1, 8) == 2
    z = latents(arch, 4)
    zn = vae.normalize_latents(z)
    with torch.no_grad():
        want = vae.decode(z, chunk_size=1)  # same seed: same weights
    cache = dec.initialize_autoregressive_cache()
    outs = [dec(zn[:, :, :1], 0, cache), dec(zn[:, :, 1:3], 1, cache), dec(zn[:, :, 3:], 2, cache)]
    assert [o.shape[2] for o in outs] == [dec.get_output_temporal_size(i, n) for i, n in enumerate((1, 2, 1))]
    torch.testing.assert_close(torch.cat(outs, 2), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="fresh initialize_autoregressive_cache"):
        dec(zn[:, :, :1], 0, cache)
    with pytest.raises(ValueError, match="continues a stream"):
        dec(zn[:, :, :1], 1, dec.initialize_autoregressive_cache())
    with pytest.raises(ValueError, match="continues a stream"):
        dec(zn[:, :, :1], 1, None)


def test_encoder_adapter_streams(vae):
    arch = vae.arch
    enc = WanVAEEncoderConfig(arch=arch, chunk_size=1, seed=0).setup()
    raw = WanVAEEncoderConfig(arch=arch, chunk_size=2, seed=0, normalize_latents=False).setup()
    assert isinstance(enc, WanVAEEncoder) and not enc.vae.has_decoder
    assert enc.get_input_temporal_size(0, 2) == 5 and enc.get_input_temporal_size(1, 2) == 8
    x = video(arch, 9)
    with torch.no_grad():
        want = vae.encode(x)
    cache = enc.initialize_autoregressive_cache()
    got = torch.cat([enc(x[:, :, :5], 0, cache), enc(x[:, :, 5:], 1, cache)], 2)
    torch.testing.assert_close(got, vae.normalize_latents(want), atol=1e-5, rtol=0)
    torch.testing.assert_close(raw(x), want, atol=1e-5, rtol=0)
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        enc(x[:, :, :4], 0, enc.initialize_autoregressive_cache())
    with pytest.raises(ValueError, match="multiple of 4"):
        enc(x[:, :, :5], 1, cache)


def test_adapter_configs_round_trip_and_validate(tmp_path):
    cfg = WanVAEDecoderConfig(arch=tiny_wan22_arch(), compute_dtype=torch.bfloat16, chunk_size=3)
    path = save_config(cfg, tmp_path / "dec.yaml")
    assert load_config(path) == cfg
    enc = WanVAEEncoderConfig(arch=tiny_wan21_arch(), weights_dtype=torch.float16)
    assert load_config(save_config(enc, tmp_path / "enc.json")) == enc
    with pytest.raises(ValueError, match="chunk_size"):
        WanVAEDecoderConfig(chunk_size=0)
    with pytest.raises(ValueError, match="weights_dtype"):
        WanVAEEncoderConfig(weights_dtype=torch.int32)


def test_random_init_is_seeded_and_shared_between_halves():
    arch = tiny_wan21_arch()
    full = build_wan_vae(arch, seed=5).state_dict()
    dec = build_wan_vae(arch, seed=5, include_encoder=False).state_dict()
    other = build_wan_vae(arch, seed=6, include_encoder=False).state_dict()
    for k, v in dec.items():
        assert torch.equal(v, full[k]), k
    assert not torch.equal(dec["decoder.conv_in.weight"], other["decoder.conv_in.weight"])


def test_checkpoint_path_goes_through_load_wan_vae(monkeypatch):
    import framestream.models.wan.vae.checkpoint as ckpt

    seen = {}

    def fake_load(path, arch=None, dtype=None, device=None, include_encoder=True, include_decoder=True):
        seen.update(path=path, arch=arch, dtype=dtype, include_encoder=include_encoder, include_decoder=include_decoder)
        return build_wan_vae(
            arch, seed=1, weights_dtype=dtype, include_encoder=include_encoder, include_decoder=include_decoder
        )

    monkeypatch.setattr(ckpt, "load_wan_vae", fake_load)
    arch = tiny_wan21_arch()
    dec = WanVAEDecoderConfig(arch=arch, checkpoint_path="some/vae.pth", weights_dtype=torch.bfloat16).setup()
    assert seen == dict(
        path="some/vae.pth", arch=arch, dtype=torch.bfloat16, include_encoder=False, include_decoder=True
    )
    assert not dec.vae.has_encoder and next(dec.vae.parameters()).dtype == torch.bfloat16
