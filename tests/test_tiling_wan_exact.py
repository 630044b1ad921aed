"""Exact spatial tiling of the Wan VAE: receptive fields, exactness, streaming, batching, budget."""

from __future__ import annotations

import dataclasses
import threading

import pytest
import torch

from framestream.bench.memory_breakdown import LiveBytes as LiveTensorBytes
from framestream.models.wan.vae import WanCausalCache, WanVAE, init_random_weights, tiny_wan21_arch, tiny_wan22_arch
from framestream.tiling import TilingConfig
from framestream.tiling.receptive_field import (
    derive_decoder_receptive_field,
    derive_encoder_receptive_field,
    measure_decoder_receptive_field,
    measure_encoder_receptive_field,
)
from framestream.tiling.wan_budget import choose_exact_tiling, estimate_exact_decode_memory
from framestream.tiling.wan_exact import (
    WanTiledDecodeState,
    WanTiledEncodeState,
    decode_tiled,
    encode_tiled,
    iter_decode_tiled,
    iter_encode_tiled,
    plan_exact_decode,
    plan_exact_encode,
)

ARCHS = {"wan21": tiny_wan21_arch(), "wan22": tiny_wan22_arch()}
ATOL = 1e-4


pytestmark = pytest.mark.usefixtures("one_thread")


def _build(arch, seed: int = 0) -> WanVAE:
    return init_random_weights(WanVAE(arch), seed).eval().requires_grad_(False)


@pytest.fixture(scope="module")
def vaes() -> dict[str, WanVAE]:
    return {name: _build(arch) for name, arch in ARCHS.items()}


def cfg(vae: WanVAE, tile_latents: int, batch: int = 1) -> TilingConfig:
    return TilingConfig(tile_size_px=tile_latents * vae.spatial_ratio, tile_overlap_px=0, tile_batch_size=batch)


def rand_latents(vae: WanVAE, t: int, hw: tuple[int, int], seed: int = 0, batch: int = 1) -> torch.Tensor:
    return torch.randn(batch, vae.arch.z_dim, t, *hw, generator=torch.Generator().manual_seed(seed))


def rand_video(vae: WanVAE, t: int, hw: tuple[int, int], seed: int = 0) -> torch.Tensor:
    s = vae.spatial_ratio
    return torch.rand(1, 3, t, hw[0] * s, hw[1] * s, generator=torch.Generator().manual_seed(seed)) * 2 - 1


def max_err(a: torch.Tensor, b: torch.Tensor) -> float:
    assert a.shape == b.shape, (a.shape, b.shape)
    return (a - b).abs().max().item()


# ---------------------------------------------------------------------------- receptive fields
@pytest.mark.parametrize("name", list(ARCHS))
def test_measured_receptive_fields_equal_the_derived_ones_and_the_halos(name, vaes):
    vae = vaes[name]
    s = vae.spatial_ratio
    dec, enc = measure_decoder_receptive_field(vae), measure_encoder_receptive_field(vae)
    for measured, derived in ((dec, derive_decoder_receptive_field(vae)), (enc, derive_encoder_receptive_field(vae))):
        assert (measured.before, measured.after, measured.chunks) == (derived.before, derived.after, 3)
    assert dec.radius_latents == 12.25  # 6 convs at latent res, then 3x3 convs after each 2x upsample, ..., conv_out
    assert dec.halo_cells() == ((13, 13), (13, 13))
    assert enc.before[0] == 61 * s // 8 and enc.after[0] == 68 * s // 8  # asymmetric: ZeroPad2d(0, 1, 0, 1)
    # The plans use exactly these halos for tiles away from the borders (tight), and never less.
    for plan, halo in (
        (plan_exact_decode(vae, (40, 40), cfg(vae, 8)), dec.halo_cells()),
        (plan_exact_encode(vae, (40 * s, 40 * s), cfg(vae, 8)), enc.halo_cells()),
    ):
        f = 1 if plan.kind == "decode" else s
        for axis, length, (need_before, need_after) in zip((plan.rows, plan.cols), plan.in_hw, halo):
            for a in axis:
                before, after = a.halo
                assert before == min(need_before * f, a.own[0] * f)
                assert after == min(need_after * f, length - a.own[1] * f)


def assert_same_support_and_close(got: torch.Tensor, want: torch.Tensor) -> None:
    """Non-zero exactly where the reference is (the cone's faint edge included), values equal up to rounding."""
    assert torch.equal(got.ne(0), want.ne(0))
    torch.testing.assert_close(got, want, atol=1e-5 * want.abs().max().item(), rtol=1e-4)


def _zero_biases(vae: WanVAE) -> WanVAE:
    with torch.no_grad():
        for n, p in vae.named_parameters():
            if n.endswith("bias"):
                p.zero_()
    return vae


@pytest.mark.parametrize("name", list(ARCHS))
def test_decode_halo_is_tight_one_cell_less_breaks_exactness(name, monkeypatch):
    """Tail input zero except one cell exactly one halo away from a tile; zero biases keep zero at zero."""
    vae = _zero_biases(_build(ARCHS[name], seed=1))
    hw, t = (1, 36), 2
    plan = plan_exact_decode(vae, hw, cfg(vae, 8))
    tile = next(a for a in plan.cols if a.halo == (13, 13))  # both halos inside the frame
    hb, ha = tile.halo
    channels = vae.decoder.up_blocks[0].resnets[0].in_dim
    feats = torch.zeros(1, channels, t, *hw)
    g = torch.Generator().manual_seed(0)
    left, right = tile.own[0] - hb, tile.own[1] - 1 + ha
    feats[0, :, 0, 0, left] = torch.randn(channels, generator=g)  # first frame: later frames see it via the cache
    feats[0, :, 1, 0, right] = torch.randn(channels, generator=g)
    frame = iter(range(t))

    def head(z, cache, num_padded=0, atomic=True):  # the tail input, chunk by chunk (chunk_size 1)
        i = next(frame)
        return feats[:, :, i : i + 1]

    monkeypatch.setattr(vae, "decode_head", head)
    ref = torch.cat([vae.decode_tail(feats[:, :, i : i + 1], c) for c in [WanCausalCache()] for i in range(t)], dim=2)
    owned = ref[..., tile.own_out]
    assert owned.ne(0).any(), "the cell one halo away must reach the tile's owned pixels"
    z = torch.zeros(1, vae.arch.z_dim, t, *hw)
    for staged in (True, False):
        frame = iter(range(t))
        exact = decode_tiled(vae, z, plan_exact_decode(vae, hw, cfg(vae, 8), staged=staged))
        assert_same_support_and_close(exact, ref)
        frame = iter(range(t))
        short = decode_tiled(vae, z, plan_exact_decode(vae, hw, cfg(vae, 8), staged=staged, halo_margin=-1))
        wrong = short[..., tile.own_out].ne(owned)
        assert wrong.any() and short[..., tile.own_out][wrong].eq(0).all()


@pytest.mark.parametrize("name", list(ARCHS))
def test_encode_halo_is_tight_one_cell_less_breaks_exactness(name, monkeypatch):
    vae = _zero_biases(_build(ARCHS[name], seed=1))
    s = vae.spatial_ratio
    rf = derive_encoder_receptive_field(vae)
    hw = (1, 32)
    plan = plan_exact_encode(vae, (s, 32 * s), cfg(vae, 8))
    full = (rf.halo_cells()[1][0] * s, rf.halo_cells()[1][1] * s)
    tile = next(a for a in plan.cols if a.halo == full)
    x = torch.zeros(1, 3, 5, s, hw[1] * s)
    x[0, :, 0, :, tile.own[0] * s - rf.before[1]] = 0.5  # the farthest pixels the owned cells depend on
    x[0, :, 2, :, tile.own[1] * s - 1 + rf.after[1]] = -0.5
    cache = WanCausalCache()
    ref = torch.cat([vae.encode_front(x[:, :, :1], cache), vae.encode_front(x[:, :, 1:], cache)], dim=2)
    seen = []
    original = vae.encode_back
    monkeypatch.setattr(vae, "encode_back", lambda h, cache, num_padded=0, atomic=True: seen.append(h.clone()) or original(h, cache, num_padded=num_padded, atomic=atomic))
    owned = ref[..., tile.own[0] : tile.own[1]]
    assert owned.ne(0).any()
    for staged in (True, False):
        seen.clear()
        encode_tiled(vae, x, plan_exact_encode(vae, (s, 32 * s), cfg(vae, 8), staged=staged))
        assert_same_support_and_close(torch.cat(seen, dim=2), ref)
        seen.clear()
        encode_tiled(vae, x, plan_exact_encode(vae, (s, 32 * s), cfg(vae, 8), staged=staged, halo_margin=-1))
        short = torch.cat(seen, dim=2)[..., tile.own[0] : tile.own[1]]
        wrong = short.ne(owned)
        assert wrong.any() and short[wrong].eq(0).all()


# ---------------------------------------------------------------------------- exactness
DECODE_CASES = [
    # (latent hw, tile latents, tile batch, chunk size, latent frames, staged)
    pytest.param((7, 11), 3, 2, 2, 5, True, id="odd-7x11-tile3-k2"),
    pytest.param((6, 10), 2, 4, 1, 3, False, id="tiles-under-halo-unstaged-k1"),
    pytest.param((2, 36), 8, 3, 1, 3, True, id="wide-strip-halos-inside"),
]


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("hw, tile, batch, k, t, staged", DECODE_CASES)
def test_tiled_decode_equals_untiled(name, vaes, hw, tile, batch, k, t, staged):
    vae = vaes[name]
    z = rand_latents(vae, t, hw)
    with torch.no_grad():
        ref = vae.decode(z, chunk_size=k)
    out = decode_tiled(vae, z, cfg(vae, tile, batch), chunk_size=k, staged=staged)
    assert max_err(out, ref) <= ATOL


@pytest.mark.parametrize("name", list(ARCHS))
def test_tiled_decode_stream_over_three_calls_equals_one_untiled_decode(name, vaes):
    vae = vaes[name]
    z = rand_latents(vae, 5, (5, 9), seed=3)
    with torch.no_grad():
        ref = vae.decode(z)
    state = WanTiledDecodeState()
    parts = [decode_tiled(vae, z[:, :, a:b], cfg(vae, 3, 2), chunk_size=2, state=state) for a, b in ((0, 2), (2, 3), (3, 5))]
    assert [p.shape[2] for p in parts] == [5, 4, 8]
    assert (state.latent_frames, state.frames) == (5, 17)
    assert max_err(torch.cat(parts, dim=2), ref) <= ATOL
    # The state keeps its plan: a continuing call needs no tiling, and a different one is refused.
    more = rand_latents(vae, 1, (5, 9), seed=4)
    with torch.no_grad():
        ref_more = vae.decode(torch.cat([z, more], dim=2))[:, :, 17:]
    assert max_err(decode_tiled(vae, more, state=state), ref_more) <= ATOL
    with pytest.raises(ValueError, match="another tile plan"):
        decode_tiled(vae, more, cfg(vae, 4), state=state)
    with pytest.raises(ValueError, match="batch size"):
        decode_tiled(vae, torch.cat([more, more]), state=state)


ENCODE_CASES = [
    pytest.param((6, 10), 2, 4, 1, 9, True, id="tiles-under-halo-k1"),
    pytest.param((5, 7), 3, 2, 2, 13, False, id="odd-unstaged-k2-padded"),
    pytest.param((2, 30), 8, 3, 2, 9, True, id="wide-strip"),
]


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("hw, tile, batch, k, frames, staged", ENCODE_CASES)
def test_tiled_encode_equals_untiled(name, vaes, hw, tile, batch, k, frames, staged):
    vae = vaes[name]
    x = rand_video(vae, frames, hw)
    with torch.no_grad():
        mean, logvar = vae.encode(x, chunk_size=k, return_logvar=True)
    got_mean, got_logvar = encode_tiled(vae, x, cfg(vae, tile, batch), chunk_size=k, staged=staged, return_logvar=True)
    assert max_err(got_mean, mean) <= ATOL and max_err(got_logvar, logvar) <= ATOL
    tm_mean, tm_logvar = encode_tiled(
        vae, x, cfg(vae, tile, batch), chunk_size=k, staged=staged, return_logvar=True, order="tile"
    )
    assert max_err(tm_mean, mean) <= ATOL and max_err(tm_logvar, logvar) <= ATOL


def test_tile_major_encode_holds_one_batch_of_caches(vaes):
    vae = vaes["wan21"]
    x = rand_video(vae, 9, (6, 12), seed=23)
    plan = plan_exact_encode(vae, tuple(n * vae.spatial_ratio for n in (6, 12)), cfg(vae, 2))
    peaks = {}
    for order in ("frame", "tile"):
        meter = LiveTensorBytes()
        with meter:
            out = encode_tiled(vae, x, plan, chunk_size=1, order=order)
            del out
        peaks[order] = meter.peak
    print(f"encode peak live tensor bytes: {peaks}")
    assert peaks["tile"] < 0.6 * peaks["frame"], peaks
    with pytest.raises(ValueError, match="self-contained"):
        encode_tiled(vae, x, plan, state=WanTiledEncodeState(), order="tile")
    with pytest.raises(ValueError, match="order must be"):
        encode_tiled(vae, x, plan, order="column")


@pytest.mark.parametrize("name", list(ARCHS))
def test_tiled_encode_stream_over_three_calls(name, vaes):
    vae = vaes[name]
    x = rand_video(vae, 13, (4, 6), seed=2)
    with torch.no_grad():
        ref = vae.encode(x)
    state = WanTiledEncodeState()
    parts = [encode_tiled(vae, x[:, :, a:b], cfg(vae, 2, 3), chunk_size=2, state=state) for a, b in ((0, 5), (5, 9), (9, 13))]
    assert [p.shape[2] for p in parts] == [2, 1, 1] and (state.frames, state.latent_frames) == (13, 4)
    assert max_err(torch.cat(parts, dim=2), ref) <= ATOL
    items = list(iter_encode_tiled(vae, x[:, :, :9], cfg(vae, 2), chunk_size=1))
    assert [start for _, start in items] == [0, 1, 2]
    assert max_err(torch.cat([m[:, : vae.arch.z_dim] for m, _ in items], dim=2), ref[:, :, :3]) <= ATOL


def test_video_batch_rows_stay_apart(vaes):
    vae = vaes["wan21"]
    z = rand_latents(vae, 2, (4, 6), seed=11, batch=2)
    x = torch.cat([rand_video(vae, 5, (4, 6), seed=s) for s in (12, 13)])
    with torch.no_grad():
        ref_z, ref_x = vae.decode(z), vae.encode(x)
    assert max_err(decode_tiled(vae, z, cfg(vae, 2, 3)), ref_z) <= ATOL
    assert max_err(encode_tiled(vae, x, cfg(vae, 2, 3)), ref_x) <= ATOL


# ---------------------------------------------------------------------------- batching
def test_batched_equals_sequential_and_calls_follow_the_shape_groups(vaes, monkeypatch):
    vae = vaes["wan21"]
    hw, t, k = (2, 48), 3, 2
    z = rand_latents(vae, t, hw, seed=5)
    calls: list[int] = []
    original = vae.decode_tail
    monkeypatch.setattr(vae, "decode_tail", lambda h, cache, **kw: calls.append(h.shape[0]) or original(h, cache, **kw))
    outs = {}
    for batch in (1, 2, 64):
        plan = plan_exact_decode(vae, hw, cfg(vae, 4, batch))
        calls.clear()
        outs[batch] = decode_tiled(vae, z, plan, chunk_size=k)
        n_chunks = -(-t // k)
        assert len(calls) == len(plan.batches) * n_chunks
        assert sorted(calls[: len(plan.batches)]) == sorted(len(b) for b in plan.batches)
        groups = plan.num_groups
        assert 1 < groups < len(plan)  # interior tiles share a shape: batching has something to do
        if batch == 1:
            assert len(plan.batches) == len(plan)
        if batch == 64:
            assert len(plan.batches) == groups
    assert max_err(outs[2], outs[1]) <= 1e-5 and max_err(outs[64], outs[1]) <= 1e-5


# ---------------------------------------------------------------------------- streaming
def test_frames_come_in_order_each_exactly_once(vaes):
    vae = vaes["wan22"]
    z = rand_latents(vae, 5, (3, 5), seed=6)
    full = decode_tiled(vae, z, cfg(vae, 2, 4), chunk_size=2)
    seen = torch.zeros(full.shape[2], dtype=torch.int64)
    expect = 0
    chunks = list(iter_decode_tiled(vae, z, cfg(vae, 2, 4), chunk_size=2))
    assert len(chunks) == 3
    for frames, start in chunks:
        assert start == expect
        seen[start : start + frames.shape[2]] += 1
        assert torch.equal(frames, full[:, :, start : start + frames.shape[2]])
        expect += frames.shape[2]
    assert expect == full.shape[2] == 17 and seen.eq(1).all()


def test_concurrent_tiled_decodes_equal_sequential(vaes):
    vae = vaes["wan21"]
    zs = [rand_latents(vae, 3, (4, 7), seed=s) for s in (7, 8)]
    sequential = [decode_tiled(vae, z, cfg(vae, 2, 2), chunk_size=1) for z in zs]
    results: list[torch.Tensor | None] = [None, None]
    errors: list[BaseException] = []

    def work(i: int) -> None:
        try:
            results[i] = decode_tiled(vae, zs[i], cfg(vae, 2, 2), chunk_size=1)
        except BaseException as err:  # pragma: no cover - reported below
            errors.append(err)

    threads = [threading.Thread(target=work, args=(i,)) for i in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    assert not errors
    for got, want in zip(results, sequential):
        assert torch.equal(got, want)


def test_exceptions_leave_nothing_behind(vaes, monkeypatch):
    vae = vaes["wan21"]
    z = rand_latents(vae, 4, (4, 6), seed=9)
    with torch.no_grad():
        ref = vae.decode(z)

    def boom(frames, start):
        if start > 0:
            raise RuntimeError("callback failed")

    with pytest.raises(RuntimeError, match="callback failed"):
        decode_tiled(vae, z, cfg(vae, 2, 2), on_frames_ready=boom)
    assert max_err(decode_tiled(vae, z, cfg(vae, 2, 2)), ref) <= ATOL  # a fresh call is unaffected

    # With atomic chunks a failure inside a chunk leaves the state where it was; the same call can be retried.
    state = WanTiledDecodeState()
    first = decode_tiled(vae, z[:, :, :2], cfg(vae, 2, 2), state=state, atomic_chunks=True)
    snapshot = (state.latent_frames, state.frames, state.head, state.calls)
    original, count = vae.decode_tail, [0]

    def flaky(h, cache, **kw):
        count[0] += 1
        if count[0] == 3:
            raise RuntimeError("tail failed")
        return original(h, cache, **kw)

    monkeypatch.setattr(vae, "decode_tail", flaky)
    with pytest.raises(RuntimeError, match="tail failed"):
        decode_tiled(vae, z[:, :, 2:], state=state, atomic_chunks=True)
    assert (state.latent_frames, state.frames, state.head, state.calls) == snapshot
    rest = decode_tiled(vae, z[:, :, 2:], state=state, atomic_chunks=True)
    assert max_err(torch.cat([first, rest], dim=2), ref) <= ATOL

    # Without atomic chunks a failure mid-chunk breaks the state, which then refuses to go on.
    state, count[0] = WanTiledDecodeState(), 0
    with pytest.raises(RuntimeError, match="tail failed"):
        decode_tiled(vae, z, cfg(vae, 2, 2), state=state, atomic_chunks=False)
    with pytest.raises(ValueError, match="fresh state"):
        decode_tiled(vae, z, state=state, atomic_chunks=False)
    assert max_err(decode_tiled(vae, z, cfg(vae, 2, 2), atomic_chunks=False), ref) <= ATOL


def test_everything_is_checked_before_any_work(vaes, monkeypatch):
    vae = vaes["wan21"]
    monkeypatch.setattr(vae, "decode_head", lambda *a, **k: pytest.fail("work started"))
    monkeypatch.setattr(vae, "encode_front", lambda *a, **k: pytest.fail("work started"))
    z = rand_latents(vae, 2, (4, 6))
    x = rand_video(vae, 5, (4, 6))
    bad_decode = [
        (dict(tiling=TilingConfig(tile_size_px=12, tile_overlap_px=0)), "multiple of the spatial scale"),
        (dict(tiling=TilingConfig(tile_size_px=16, tile_overlap_px=4)), "multiple of the spatial scale"),
        (dict(tiling=TilingConfig(tile_size_px=16, tile_overlap_px=0, temporal_tile_frames=8)), "temporal_tile_frames"),
        (dict(chunk_size=0), "chunk_size"),
        (dict(state=WanTiledEncodeState()), "WanTiledDecodeState"),
    ]
    for kwargs, match in bad_decode:
        with pytest.raises((ValueError, TypeError), match=match):
            iter_decode_tiled(vae, z, **kwargs)  # raises on the call, not at the first next()
    with pytest.raises(ValueError, match="tile_batch_size"):
        TilingConfig(tile_batch_size=0)
    with pytest.raises(ValueError, match="tile_batch_size"):
        plan_exact_decode(vae, (4, 6), cfg(vae, 2), tile_batch_size=0)
    with pytest.raises(ValueError, match="z_dim"):
        iter_decode_tiled(vae, z[:, :3])
    with pytest.raises(ValueError, match="tensor"):
        iter_decode_tiled(vae, z[0])
    with pytest.raises(ValueError, match="plan is for"):
        iter_decode_tiled(vae, z, plan_exact_decode(vae, (4, 7), cfg(vae, 2)))
    with pytest.raises(ValueError, match="1 \\+ 4k"):
        iter_encode_tiled(vae, x[:, :, :4], cfg(vae, 2))
    with pytest.raises(ValueError, match="multiples of 8"):
        iter_encode_tiled(vae, x[..., :-4], cfg(vae, 2))
    with pytest.raises(ValueError, match="channels"):
        iter_encode_tiled(vae, x[:, :2], cfg(vae, 2))
    with pytest.raises(ValueError, match="decode plan"):
        iter_encode_tiled(vae, x, plan_exact_decode(vae, (4, 6), cfg(vae, 2)))
    with torch.device("meta"):
        attn = WanVAE(dataclasses.replace(tiny_wan21_arch(), attn_scales=(1.0,)))
    with pytest.raises(ValueError, match="attention"):
        plan_exact_encode(attn, (32, 48), cfg(attn, 2))


# ---------------------------------------------------------------------------- memory
def test_memory_estimate_matches_live_tensor_bytes_and_does_not_grow_with_frames(vaes):
    vae = vaes["wan21"]
    hw, k = (6, 12), 1
    plan = plan_exact_decode(vae, hw, cfg(vae, 4, 2))
    est = estimate_exact_decode_memory(vae, plan, chunk_size=k, atomic_chunks=True)
    lean = estimate_exact_decode_memory(vae, plan, chunk_size=k)
    peaks = []
    for t, atomic in ((2, True), (5, True), (5, False)):
        z = rand_latents(vae, t, hw, seed=10)
        meter = LiveTensorBytes()
        with meter:
            for frames, _ in iter_decode_tiled(vae, z, plan, chunk_size=k, atomic_chunks=atomic):
                del frames
        peaks.append(meter.peak)
    assert peaks[1] <= peaks[0] * 1.05  # 2.5x the frames, same peak
    assert 0.8 * peaks[1] <= est.total <= 1.5 * peaks[1], (est, peaks)
    assert 0.8 * peaks[2] <= lean.total <= 1.5 * peaks[2], (lean, peaks)
    assert peaks[2] < 0.8 * peaks[1] and est.tail_cache > 0 and est.call_peak > 0


def test_choose_exact_tiling_fits_the_budget(vaes):
    vae = vaes["wan22"]
    hw = (20, 30)

    def total(tile: int, batch: int = 1) -> int:
        plan = plan_exact_decode(vae, hw, cfg(vae, tile, batch))
        return estimate_exact_decode_memory(vae, plan, chunk_size=2).total

    # A budget some tilings fit and others not (with the time-sliced tail, caches dominate at
    # this size, so smaller tiles are not always leaner: take the median estimate).
    totals = sorted({total(t) for t in range(1, 31)})
    budget = totals[len(totals) // 2]
    choice = choose_exact_tiling(vae, hw, budget, chunk_size=2)
    tile = choice.tile_size_px // vae.spatial_ratio
    assert total(tile, choice.tile_batch_size) <= budget

    def owned(t: int) -> tuple:
        plan = plan_exact_decode(vae, hw, cfg(vae, t))
        return tuple(a.own for a in plan.rows), tuple(a.own for a in plan.cols)

    larger = [t for t in range(tile + 1, 31) if owned(t) != owned(tile)]
    assert all(total(t) > budget for t in larger)  # no larger tiling fits
    assert max(b - a for axis in owned(tile) for a, b in axis) == tile  # the canonical size of the plan
    assert choose_exact_tiling(vae, hw, 10 * total(30), chunk_size=2).tile_size_px == 30 * vae.spatial_ratio
    leanest = min(total(tile) for tile in range(1, 31))
    with pytest.raises(ValueError, match="no exact tiling"):
        choose_exact_tiling(vae, hw, leanest - 1, chunk_size=2)


# ---------------------------------------------------------------------------- tile-major order
TILE_MAJOR_CASES = [
    # (latent hw, tile latents, tile batch, chunk size, latent frames)
    pytest.param((5, 7), 3, 2, 2, 3, id="odd-5x7-tile3-b2-k2-padded"),
    pytest.param((3, 5), 2, 1, 1, 2, id="odd-3x5-tile2-b1-k1"),
    pytest.param((1, 41), 3, 4, 1, 2, id="strip-1x41-tile3-b4-k1-batched-calls"),
]


@pytest.mark.parametrize("name", list(ARCHS))
@pytest.mark.parametrize("hw, tile, batch, k, t", TILE_MAJOR_CASES)
def test_tile_major_decode_equals_frame_major_and_untiled(name, vaes, hw, tile, batch, k, t):
    vae = vaes[name]
    z = rand_latents(vae, t, hw, seed=21)
    with torch.no_grad():
        ref = vae.decode(z, chunk_size=k)
    seen: list[tuple[int, int]] = []
    got = decode_tiled(
        vae, z, cfg(vae, tile, batch), chunk_size=k, order="tile", on_frames_ready=lambda f, s: seen.append((s, f.shape[2]))
    )
    assert max_err(got, ref) <= ATOL
    assert [s for s, _ in seen] == [0, *torch.tensor([n for _, n in seen]).cumsum(0)[:-1].tolist()]
    assert sum(n for _, n in seen) == ref.shape[2]
    if batch == 4:  # interior tiles share a shape: some calls really stack tiles
        assert max(len(b) for b in plan_exact_decode(vae, hw, cfg(vae, tile, batch)).batches) == 4
    if k == 2:  # same pixels as the frame-major order (same chunk shapes, padding and crops)
        assert max_err(got, decode_tiled(vae, z, cfg(vae, tile, batch), chunk_size=k)) <= 1e-5
    if batch > 1:  # uint8 output: frames_to_uint8 of the float output, whichever the order
        from framestream.io.transfer import frames_to_uint8

        want = frames_to_uint8(got, channels_last=False)
        for order in ("tile", "frame") if k == 1 else ("tile",):
            u8 = decode_tiled(vae, z, cfg(vae, tile, batch), chunk_size=k, order=order, out_dtype=torch.uint8)
            assert u8.dtype == torch.uint8 and torch.equal(u8, want)


def test_tile_major_peak_memory_is_below_frame_major_and_estimated(vaes):
    vae = vaes["wan21"]
    hw, t, k = (8, 16), 2, 1
    plan = plan_exact_decode(vae, hw, cfg(vae, 4, 2))
    z = rand_latents(vae, t, hw, seed=22)
    peaks = {}
    for order in ("frame", "tile"):
        meter = LiveTensorBytes()
        with meter:
            out = decode_tiled(vae, z, plan, chunk_size=k, order=order)
            del out
        peaks[order] = meter.peak
    print(f"peak live tensor bytes: {peaks}")
    frame = estimate_exact_decode_memory(vae, plan, chunk_size=k)
    tile = estimate_exact_decode_memory(vae, plan, chunk_size=k, order="tile", latent_frames=t)
    output = 4 * 3 * vae.decoded_frames(t, False) * hw[0] * hw[1] * vae.spatial_ratio**2
    assert peaks["tile"] < 0.6 * peaks["frame"], peaks
    assert tile.order == "tile" and tile.tail_cache < frame.tail_cache
    assert 0.8 * peaks["tile"] <= tile.total <= 1.5 * peaks["tile"], (tile, peaks)
    assert 0.8 * peaks["frame"] <= frame.total + output <= 1.5 * peaks["frame"], (frame, peaks)
    # choose_exact_tiling sizes the tile-major mode too: a budget between two tilings' estimates.
    def total(tile_latents: int) -> int:
        p = plan_exact_decode(vae, hw, cfg(vae, tile_latents))
        return estimate_exact_decode_memory(vae, p, chunk_size=k, order="tile", latent_frames=t).total

    choice = choose_exact_tiling(vae, hw, total(4), chunk_size=k, order="tile", latent_frames=t)
    assert total(choice.tile_size_px // vae.spatial_ratio) <= total(4)
    with pytest.raises(ValueError, match="latent_frames"):
        estimate_exact_decode_memory(vae, plan, order="tile")


def test_tile_major_refuses_a_stream_state_and_bad_options(vaes, monkeypatch):
    vae = vaes["wan21"]
    z = rand_latents(vae, 2, (4, 6))
    monkeypatch.setattr(vae, "decode_head", lambda *a, **k: pytest.fail("work started"))
    with pytest.raises(ValueError, match="cannot continue a stream"):
        decode_tiled(vae, z, cfg(vae, 2), order="tile", state=WanTiledDecodeState())
    with pytest.raises(ValueError, match="order"):
        decode_tiled(vae, z, cfg(vae, 2), order="tiles")
    with pytest.raises(ValueError, match="out_dtype"):
        decode_tiled(vae, z, cfg(vae, 2), order="tile", out_dtype=torch.int32)
