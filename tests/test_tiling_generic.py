"""Generic blended tiled decode/encode, streaming, batching and budgets.

The reference decoders here are exactly local: every output pixel depends on one latent
and on its position inside that latent's block, so a correctly placed and blended tiled
decode must equal the untiled decode (to float rounding).
"""

from __future__ import annotations

import threading
import time
import weakref
from dataclasses import dataclass

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from torch.utils._python_dispatch import TorchDispatchMode
from torch.utils._pytree import tree_flatten

from framestream.decoders import StreamingDecoderCache, StreamingVideoDecoder
from framestream.tiling import (
    TilingConfig,
    as_decode_fn,
    axis_weights,
    batch_schedule,
    blend_buffer_bytes,
    choose_tiling,
    iter_tiled_decode,
    linear_activation_estimate,
    map_batched,
    map_batched_with_state,
    plan_pixel_grid,
    plan_video_decode,
    tiled_decode,
    tiled_encode,
)


class LocalDecoder:
    """(B, C, T, h, w) -> (B, 3, T', h*f, w*f): pointwise mix + nearest upsample + position-in-block offsets.

    Causal: each latent becomes ``s`` frames and the first ``s - 1`` frames of the video are
    dropped (``1 + (T-1)*s``). With ``junk_first_frame`` the first output frame is replaced by
    garbage, like a causal VAE decoding a chunk's first latent as an image: exact tiling must
    then give every re-decoded first frame weight 0.
    """

    def __init__(self, channels: int, f: int, s: int, causal: bool, junk_first_frame: bool = False, seed: int = 0) -> None:
        g = torch.Generator().manual_seed(seed)
        self.weight = torch.randn(3, channels, generator=g, dtype=torch.float64)
        self.pos_t = torch.randn(s, generator=g, dtype=torch.float64)
        self.pos_hw = torch.randn(f, f, generator=g, dtype=torch.float64)
        self.f, self.s, self.causal, self.junk = f, s, causal, junk_first_frame
        self.calls = 0

    def __call__(self, z: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        f, s = self.f, self.s
        x = torch.einsum("oc,bcthw->bothw", self.weight.to(z.dtype), z)
        x = x.repeat_interleave(s, dim=2).repeat_interleave(f, dim=3).repeat_interleave(f, dim=4)
        t = z.shape[2]
        x = x + self.pos_t.to(z.dtype).repeat(t).view(1, 1, -1, 1, 1)
        x = x + self.pos_hw.to(z.dtype).repeat(z.shape[3], z.shape[4]).view(1, 1, 1, z.shape[3] * f, z.shape[4] * f)
        if self.causal:
            x = x[:, :, s - 1 :]
            if self.junk:
                x = x.clone()
                x[:, :, 0] = 1000.0
        return x


def _latents(b=1, c=4, t=7, h=6, w=5, seed=0, dtype=torch.float64):
    return torch.randn(b, c, t, h, w, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def _cfg(tile=3, overlap=1, t_tile=None, t_overlap=None, f=2, s=4, batch=1):
    return TilingConfig(
        tile_size_px=tile * f,
        tile_overlap_px=overlap * f,
        temporal_tile_frames=None if t_tile is None else t_tile * s,
        temporal_overlap_frames=None if t_overlap is None else t_overlap * s,
        tile_batch_size=batch,
    )


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("t_tile, t_overlap", [(None, None), (3, 1), (3, 2), (2, 1), (4, 3)])
def test_tiled_decode_is_exact_for_a_local_decoder(causal, t_tile, t_overlap):
    dec = LocalDecoder(4, f=2, s=4, causal=causal, junk_first_frame=causal)
    z = _latents()
    ref = dec(z)
    out = tiled_decode(dec, z, _cfg(3, 1, t_tile, t_overlap), spatial_scale=2, temporal_scale=4, causal_temporal=causal)
    assert out.shape == ref.shape == (1, 3, 25 if causal else 28, 12, 10)
    assert out.dtype == ref.dtype
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)


@settings(max_examples=25, deadline=None)
@given(
    t=st.integers(1, 6),
    h=st.integers(1, 6),
    w=st.integers(1, 6),
    f=st.sampled_from([1, 2, 3]),
    s=st.sampled_from([1, 2, 4]),
    causal=st.booleans(),
    data=st.data(),
)
def test_tiled_decode_exact_random_plans(t, h, w, f, s, causal, data):
    tile = data.draw(st.integers(1, 4))
    overlap = data.draw(st.integers(0, tile - 1))
    t_tile = data.draw(st.one_of(st.none(), st.integers(2, 4)))
    t_overlap = None if t_tile is None else data.draw(st.integers(1, t_tile - 1))
    batch = data.draw(st.integers(1, 5))
    dec = LocalDecoder(2, f=f, s=s, causal=causal, junk_first_frame=causal)
    z = _latents(b=2, c=2, t=t, h=h, w=w, seed=t * 100 + h * 10 + w)
    cfg = _cfg(tile, overlap, t_tile, t_overlap, f=f, s=s, batch=batch)
    out = tiled_decode(dec, z, cfg, spatial_scale=f, temporal_scale=s, causal_temporal=causal)
    torch.testing.assert_close(out, dec(z), atol=1e-5, rtol=0)


def test_float32_decode_blends_to_within_1e5():
    dec = LocalDecoder(4, f=2, s=4, causal=True)
    z = _latents(dtype=torch.float32)
    out = tiled_decode(dec, z, _cfg(3, 2, 3, 2), spatial_scale=2, temporal_scale=4)
    assert out.dtype == torch.float32
    torch.testing.assert_close(out, dec(z), atol=1e-5, rtol=0)
    half = tiled_decode(dec, z, _cfg(3, 2, 3, 2), spatial_scale=2, temporal_scale=4, out_dtype=torch.bfloat16)
    assert half.dtype == torch.bfloat16


def test_wrong_tile_output_shape_raises_instead_of_cropping():
    dec = LocalDecoder(4, f=2, s=4, causal=True)
    z = _latents()
    with pytest.raises(ValueError, match="refusing to crop"):
        tiled_decode(lambda x: dec(x)[:, :, :-1], z, _cfg(3, 1, 3, 1), spatial_scale=2, temporal_scale=4)
    with pytest.raises(ValueError, match="refusing to crop"):
        tiled_decode(lambda x: dec(x)[..., :-1], z, _cfg(3, 1), spatial_scale=2, temporal_scale=4)
    # the time mapping is checked too: a non-causal output for a causal plan is rejected
    nc = LocalDecoder(4, f=2, s=4, causal=False)
    with pytest.raises(ValueError, match="tile output has shape"):
        tiled_decode(nc, z, _cfg(3, 1, 3, 1), spatial_scale=2, temporal_scale=4, causal_temporal=True)


def test_missing_scales_and_bad_inputs_fail_before_decoding():
    dec = LocalDecoder(4, f=2, s=4, causal=True)
    z = _latents()
    with pytest.raises(ValueError, match="spatial_scale"):
        iter_tiled_decode(dec, z, _cfg())
    with pytest.raises(ValueError, match="multiple of the spatial scale"):
        iter_tiled_decode(dec, z, TilingConfig(tile_size_px=6, tile_overlap_px=2), spatial_scale=4, temporal_scale=4)
    with pytest.raises(ValueError, match="tile_batch_size"):
        iter_tiled_decode(dec, z, _cfg(), spatial_scale=2, temporal_scale=4, tile_batch_size=0)
    with pytest.raises(ValueError, match="latents"):
        iter_tiled_decode(dec, z[0], _cfg(), spatial_scale=2, temporal_scale=4)
    assert dec.calls == 0


# ----------------------------------------------------------------------------- streaming


def _collect(gen):
    chunks = []
    for frames, start in gen:
        chunks.append((start, frames.clone()))
    return chunks


@pytest.mark.parametrize("causal", [True, False])
@pytest.mark.parametrize("t, t_tile, t_overlap", [(7, None, None), (7, 3, 1), (9, 3, 2), (9, 2, 1), (1, 3, 1)])
def test_streaming_frames_in_order_exactly_once_at_the_true_boundary(causal, t, t_tile, t_overlap):
    s = 4
    dec = LocalDecoder(4, f=2, s=s, causal=causal, junk_first_frame=causal)
    z = _latents(t=t)
    cfg = _cfg(3, 1, t_tile, t_overlap, s=s)
    plan = plan_video_decode(tuple(z.shape[2:]), cfg, 2, s, causal)
    n_spatial = len(plan.spatial)
    calls_at_yield = []
    chunks = []
    for frames, start in iter_tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=s, causal_temporal=causal):
        calls_at_yield.append(dec.calls)
        chunks.append((start, frames.clone()))
    starts = [start for start, _ in chunks]
    lengths = [c.shape[2] for _, c in chunks]
    assert starts == [sum(lengths[:i]) for i in range(len(lengths))]  # in order, no gap, no repeat
    assert sum(lengths) == plan.out_frames and all(n > 0 for n in lengths)
    assert len(chunks) == len(plan.temporal)
    # each chunk is emitted right after its temporal tile, not later
    assert calls_at_yield == [n_spatial * (k + 1) for k in range(len(plan.temporal))]
    # ... and it reaches up to the first frame a later tile has weight on (independently from the masks)
    for k, (start, frames) in enumerate(chunks[:-1]):
        later = [tt.out_start + int(torch.nonzero(axis_weights(tt))[0]) for tt in plan.temporal[k + 1 :]]
        assert start + frames.shape[2] == min(later)
    torch.testing.assert_close(torch.cat([c for _, c in chunks], dim=2), dec(z), atol=1e-5, rtol=0)


def test_callback_gets_the_same_frames_also_for_a_single_temporal_tile():
    dec = LocalDecoder(4, f=2, s=4, causal=True)
    z = _latents()
    for cfg in (_cfg(3, 1), _cfg(3, 1, 3, 1)):
        got = []
        out = tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4, on_frames_ready=lambda fr, i: got.append((i, fr.clone())))
        streamed = _collect(iter_tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4))
        assert len(got) == len(streamed) >= 1
        for (i, a), (j, b) in zip(got, streamed):
            assert i == j and torch.equal(a, b)
        assert torch.equal(torch.cat([fr for _, fr in got], dim=2), out)


def test_exception_mid_decode_leaves_nothing_behind():
    dec = LocalDecoder(4, f=2, s=4, causal=True, junk_first_frame=True)
    z = _latents(t=9)
    cfg = _cfg(3, 1, 3, 1)
    ref = tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4)
    calls = {"n": 0}

    def flaky(x):
        calls["n"] += 1
        if calls["n"] == 9:
            raise RuntimeError("boom")
        return dec(x)

    got = []
    with pytest.raises(RuntimeError, match="boom"):
        tiled_decode(flaky, z, cfg, spatial_scale=2, temporal_scale=4, on_frames_ready=lambda fr, i: got.append(i))
    assert got == [0]  # the first chunk was delivered before the failure
    # an abandoned generator, too
    gen = iter_tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4)
    next(gen)
    del gen
    again = _collect(iter_tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4))
    assert again[0][0] == 0
    assert torch.equal(torch.cat([c for _, c in again], dim=2), ref)
    assert torch.equal(tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4), ref)


def test_two_concurrent_decodes_equal_sequential_ones():
    dec = LocalDecoder(4, f=2, s=4, causal=True, junk_first_frame=True)

    def slow(x):
        time.sleep(0.002)
        return dec(x)

    inputs = [_latents(t=9, seed=1), _latents(t=6, seed=2, h=4)]
    cfg = _cfg(3, 1, 3, 1)
    sequential = [tiled_decode(slow, z, cfg, spatial_scale=2, temporal_scale=4) for z in inputs]
    results: dict[int, object] = {}
    streams: dict[int, list[int]] = {0: [], 1: []}

    def run(k):
        try:
            results[k] = tiled_decode(slow, inputs[k], cfg, spatial_scale=2, temporal_scale=4, on_frames_ready=lambda fr, i: streams[k].append(i))
        except BaseException as err:  # pragma: no cover - reported below
            results[k] = err

    threads = [threading.Thread(target=run, args=(k,)) for k in range(2)]
    for th in threads:
        th.start()
    for th in threads:
        th.join()
    for k in range(2):
        assert isinstance(results[k], torch.Tensor), results[k]
        assert torch.equal(results[k], sequential[k])
        assert streams[k][0] == 0 and streams[k] == sorted(streams[k])


class LiveBytes(TorchDispatchMode):
    """Peak bytes of tensor storages created under the mode and still referenced (CPU stand-in for a memory profiler)."""

    def __init__(self, ignore: list[torch.Tensor]) -> None:
        super().__init__()
        self.ignore = {t.untyped_storage().data_ptr() for t in ignore}
        self.refs: list[weakref.ref] = []
        self.peak = 0

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        self.refs.extend(weakref.ref(t) for t in tree_flatten(out)[0] if isinstance(t, torch.Tensor))
        live: dict[int, int] = {}
        alive = []
        for ref in self.refs:
            t = ref()
            if t is not None:
                alive.append(ref)
                storage = t.untyped_storage()
                if storage.data_ptr() not in self.ignore:
                    live[storage.data_ptr()] = storage.nbytes()
        self.refs = alive
        self.peak = max(self.peak, sum(live.values()))
        return out


def _peak(fn) -> int:
    with LiveBytes(fn.ignore) as mode:
        fn()
    return mode.peak


def test_streaming_buffers_do_not_grow_with_video_length():
    dec = LocalDecoder(4, f=2, s=4, causal=True, junk_first_frame=True)
    cfg = _cfg(3, 1, 3, 2)  # a two-latent overlap: a non-empty carry between temporal tiles

    def streamed(z):
        def run():
            n = 0
            for frames, _ in iter_tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4):
                n += frames.shape[2]
                del frames
            assert n == 1 + (z.shape[2] - 1) * 4

        run.ignore = [z]
        return run

    def whole(z):
        def run():
            tiled_decode(dec, z, cfg, spatial_scale=2, temporal_scale=4)

        run.ignore = [z]
        return run

    short, long = _latents(t=7, dtype=torch.float32), _latents(t=41, dtype=torch.float32)
    peak_short, peak_long = _peak(streamed(short)), _peak(streamed(long))
    full_output = 3 * (1 + 40 * 4) * 12 * 10 * 4
    assert peak_long == peak_short, (peak_short, peak_long)
    assert peak_long < full_output / 3
    # the instrument sees growth where there is some: the whole-video wrapper must hold the output
    whole_short, whole_long = _peak(whole(short)), _peak(whole(long))
    assert whole_long >= full_output and whole_long > 3 * whole_short


# ----------------------------------------------------------------------------- adapters


class ToyStreamingDecoder(StreamingVideoDecoder):
    """Stateless toy StreamingVideoDecoder whose cache records whether it was reused."""

    def __init__(self) -> None:
        super().__init__(config=None)
        self.local = LocalDecoder(4, f=2, s=4, causal=True)
        self.seen_indices: list[int] = []

    @property
    def spatial_compression_ratio(self) -> int:
        return 2

    @property
    def temporal_compression_ratio(self) -> int:
        return 4

    def initialize_autoregressive_cache(self, **context):
        cache = StreamingDecoderCache()
        cache.used = False
        return cache

    def forward(self, latent, autoregressive_index=0, cache=None):
        assert cache is not None and not cache.used, "tiles must get a fresh cache"
        cache.used = True
        self.seen_indices.append(autoregressive_index)
        return self.local(latent)


def test_streaming_video_decoder_adapter_uses_fresh_cache_and_declared_scales():
    model = ToyStreamingDecoder()
    z = _latents()
    out = tiled_decode(model, z, _cfg(3, 1, 3, 1, batch=2))
    torch.testing.assert_close(out, model.local(z), atol=1e-5, rtol=0)
    assert set(model.seen_indices) == {0} and len(model.seen_indices) > 1


def test_diffusers_vae_adapter():
    diffusers = pytest.importorskip("diffusers")

    @dataclass
    class Out:
        sample: torch.Tensor

    class FakeVAE(torch.nn.Module):  # the diffusers call shape without loading a model
        spatial_compression_ratio = 2

        def __init__(self):
            super().__init__()
            self.local = LocalDecoder(4, f=2, s=4, causal=True)
            self.config = type("C", (), {"scale_factor_temporal": 4})()

        def decode(self, z):
            return Out(self.local(z))

        def forward(self, x):  # a VAE's forward is encode+decode: must not be used
            raise AssertionError("forward called")

    vae = FakeVAE()
    z = _latents()
    torch.testing.assert_close(tiled_decode(vae, z, _cfg(3, 1, 3, 1)), vae.local(z), atol=1e-5, rtol=0)

    tiny = diffusers.AutoencoderKLWan(base_dim=8, z_dim=4, dim_mult=[1, 1], num_res_blocks=1, temperal_downsample=[True], attn_scales=[])
    tiny.eval()
    assert as_decode_fn(tiny) is not tiny
    zz = torch.randn(1, 4, 2, 3, 3)
    with torch.no_grad():
        ref = tiny.decode(zz).sample
        out = tiled_decode(tiny, zz, TilingConfig(tile_size_px=64, tile_overlap_px=16), spatial_scale=2, temporal_scale=2)
    assert out.shape == ref.shape
    torch.testing.assert_close(out, ref, atol=1e-5, rtol=0)  # one tile: the adapter is the plain decode


# ----------------------------------------------------------------------------- encode


class LocalEncoder:
    """(B, 3, T, H, W) -> (B, 4, T, H/f, W/f): f x f average pooling + pointwise mix (exactly local)."""

    def __init__(self, f: int) -> None:
        self.f = f
        self.weight = torch.randn(4, 3, generator=torch.Generator().manual_seed(3), dtype=torch.float64)
        self.calls = 0

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.calls += 1
        pooled = torch.nn.functional.avg_pool3d(x, (1, self.f, self.f))
        return torch.einsum("oc,bcthw->bothw", self.weight.to(x.dtype), pooled)


@pytest.mark.parametrize("batch", [1, 3, 100])
def test_tiled_encode_is_exact_for_a_local_encoder(batch):
    enc = LocalEncoder(4)
    video = torch.randn(2, 3, 3, 44, 36, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    cfg = TilingConfig(tile_size_px=16, tile_overlap_px=8, tile_batch_size=batch)
    out = tiled_encode(enc, video, cfg, spatial_scale=4)
    plan = plan_pixel_grid(44, 36, cfg, 4)
    torch.testing.assert_close(out, enc(video), atol=1e-5, rtol=0)
    enc.calls = 0
    tiled_encode(enc, video, cfg, spatial_scale=4)
    assert enc.calls == sum(-(-len(g) // batch) for g in plan.shape_groups().values())
    with pytest.raises(ValueError, match="not a multiple"):
        tiled_encode(enc, video[..., :-1], cfg, spatial_scale=4)
    with pytest.raises(ValueError, match="space only"):
        tiled_encode(enc, video, TilingConfig(tile_size_px=16, tile_overlap_px=8, temporal_tile_frames=8), spatial_scale=4)


# ----------------------------------------------------------------------------- batching


def test_batched_decode_equals_sequential_and_cuts_calls():
    dec = LocalDecoder(4, f=2, s=4, causal=True, junk_first_frame=True)
    z = _latents(b=2, t=9, h=8, w=7)
    base = dict(spatial_scale=2, temporal_scale=4)
    sequential = tiled_decode(dec, z, _cfg(3, 1, 3, 1), **base)
    calls_seq = dec.calls
    plan = plan_video_decode((9, 8, 7), _cfg(3, 1, 3, 1), 2, 4)
    assert calls_seq == len(plan.temporal) * len(plan.spatial)
    dec.calls = 0
    batched = tiled_decode(dec, z, _cfg(3, 1, 3, 1, batch=4), **base)
    torch.testing.assert_close(batched, sequential, atol=1e-12, rtol=0)
    per_t = sum(-(-len(g) // 4) for g in plan.spatial.shape_groups().values())
    assert dec.calls == len(plan.temporal) * per_t < calls_seq


def test_stateful_batching_stacks_and_splits_per_tile_state():
    inputs = [torch.full((1, 2, 3), float(i)) for i in range(5)] + [torch.full((2, 2, 4), 9.0)]
    states = [[torch.full((1, 1), float(i)), {"n": torch.tensor([[i]])}] for i in range(5)] + [[torch.zeros(2, 1), {"n": torch.zeros(2, 1, dtype=torch.long)}]]
    calls = []

    def step(x, state):
        calls.append(x.shape[0])
        cache, extra = state
        return x + cache[:, :, None], [cache + 1, {"n": extra["n"] * 2}]

    outs, new_states = map_batched_with_state(step, inputs, states, batch_size=3)
    assert calls == [3, 2, 2]  # five same-shape tiles in chunks of 3 and 2, then the other shape
    for i in range(5):
        assert torch.equal(outs[i], torch.full((1, 2, 3), 2.0 * i))
        assert torch.equal(new_states[i][0], torch.full((1, 1), i + 1.0))
        assert torch.equal(new_states[i][1]["n"], torch.tensor([[2 * i]]))
    assert outs[5].shape == (2, 2, 4) and torch.equal(new_states[5][0], torch.ones(2, 1))
    # states of different shapes are never stacked together
    mixed = [[torch.zeros(1, 1)], [torch.zeros(1, 2)]]
    calls.clear()
    map_batched_with_state(lambda x, s: (calls.append(x.shape[0]) or x, s), inputs[:2], mixed, batch_size=8)
    assert calls == [1, 1]
    with pytest.raises(ValueError, match="stacked batch"):
        map_batched(lambda x: x[:1], inputs[:3], batch_size=3)
    with pytest.raises(ValueError, match="batch_size"):
        map_batched(lambda x: x, inputs, batch_size=0)


def _pr_tiles(height: int, width: int, tile: int = 512, overlap: int = 128, factor: int = 32):
    """LTX-2 trainer tiled_encode_video tile boxes (PR #215): edge tiles floor to the factor."""
    stride = tile - overlap
    boxes = []
    for y in range(0, height - overlap, stride):
        for x in range(0, width - overlap, stride):
            th = min(tile, height - y) // factor * factor
            tw = min(tile, width - x) // factor * factor
            boxes.append((y, x, th, tw))
    return boxes


def _count_calls(shapes, batch_size):
    calls = []
    map_batched(lambda x: calls.append(x.shape[0]) or x, [torch.empty(1, 3, 1, h, w, device="meta") for h, w in shapes], batch_size)
    return len(calls)


# resolution (W x H): (sequential calls, batch size for the minimum, minimum calls, shape groups) from PR #215's table
PR_TABLE = {
    (896, 896): (4, 4, 1, {(512, 512): 4}),
    (1280, 720): (6, 3, 2, {(512, 512): 3, (320, 512): 3}),
    (1920, 1080): (15, 8, 4, {(512, 512): 8, (288, 512): 4, (512, 384): 2, (288, 384): 1}),
    (2560, 1440): (28, 18, 4, {(512, 512): 18, (288, 512): 6, (512, 256): 3, (288, 256): 1}),
    (3840, 2160): (60, 45, 4, {(512, 512): 45, (224, 512): 9, (512, 384): 5, (224, 384): 1}),
}

# ours, same settings, on the frame padded up to a multiple of 32 (we encode every pixel):
# (padded W x H, tiles, one tile shape (h, w) in px, sequential calls, minimum calls)
OUR_TABLE = {
    (896, 896): ((896, 896), 4, (512, 512), 4, 1),
    (1280, 720): ((1280, 736), 6, (448, 512), 6, 1),
    (1920, 1080): ((1920, 1088), 15, (448, 512), 15, 1),
    (2560, 1440): ((2560, 1440), 28, (480, 480), 28, 1),
    (3840, 2160): ((3840, 2176), 60, (480, 512), 60, 1),
}


@pytest.mark.parametrize("resolution", list(PR_TABLE))
def test_pr215_call_count_table_and_ours(resolution):
    width, height = resolution
    sequential, batch_for_min, min_calls, groups = PR_TABLE[resolution]
    boxes = _pr_tiles(height, width)
    shapes = [(th, tw) for _, _, th, tw in boxes]
    found: dict[tuple[int, int], int] = {}
    for shape in shapes:
        found[shape] = found.get(shape, 0) + 1
    assert found == groups
    assert _count_calls(shapes, 1) == sequential
    assert _count_calls(shapes, batch_for_min) == min_calls
    assert _count_calls(shapes, batch_for_min - 1) > min_calls or batch_for_min == 1
    # the PR's floor-to-factor edge tiles drop rows: 1080p loses 24, 2160p loses 16
    covered_rows = max(y + th for y, _, th, _ in boxes)
    assert height - covered_rows == {720: 16, 1080: 24, 2160: 16}.get(height, 0)

    (pw, ph), n_tiles, tile_shape, our_seq, our_min = OUR_TABLE[resolution]
    assert ph == -(-height // 32) * 32 and pw == -(-width // 32) * 32
    plan = plan_pixel_grid(ph, pw, TilingConfig(tile_size_px=512, tile_overlap_px=128), 32)
    assert len(plan) == n_tiles and {k: len(v) for k, v in plan.shape_groups().items()} == {tile_shape: n_tiles}
    ours = [t.input_shape for t in plan]
    assert _count_calls(ours, 1) == our_seq and _count_calls(ours, n_tiles) == our_min
    assert plan.rows[-1].end == ph and plan.cols[-1].end == pw


def test_batch_schedule_keeps_first_appearance_order():
    assert batch_schedule(["a", "b", "a", "a", "b"], 2) == [[0, 2], [3], [1, 4]]


# ----------------------------------------------------------------------------- budget


def test_choose_tiling_picks_largest_tile_then_batch():
    est = linear_activation_estimate(10.0, spatial_scale=8, frames=5)
    # whole 30x40 latent grid: 240x320 px x 5 frames x 10 B = 3.84 MB
    assert choose_tiling(4e6, (30, 40), spatial_scale=8, estimate_fn=est) == (320, 1)
    tile, batch = choose_tiling(1e6, (30, 40), spatial_scale=8, bytes_per_output_pixel=10.0, frames=5, overlap_px=16)
    plan_tiles = plan_pixel_grid(240, 320, TilingConfig(tile_size_px=tile, tile_overlap_px=16), 8)
    h, w = plan_tiles[0].input_shape
    assert est((h // 8, w // 8), batch) <= 1e6
    # one latent more per side would not fit with batch 1
    bigger = plan_pixel_grid(240, 320, TilingConfig(tile_size_px=tile + 8, tile_overlap_px=16), 8)[0].input_shape
    assert est((bigger[0] // 8, bigger[1] // 8), 1) > 1e6
    # a generous budget batches the whole shape group, a capped one does not
    t2, b2 = choose_tiling(1e9, (30, 40), spatial_scale=8, estimate_fn=est, max_tile_px=128, overlap_px=16)
    assert t2 == 128 and b2 == len(plan_pixel_grid(240, 320, TilingConfig(tile_size_px=128, tile_overlap_px=16), 8))
    assert choose_tiling(1e9, (30, 40), spatial_scale=8, estimate_fn=est, max_tile_px=128, overlap_px=16, max_batch_size=3) == (128, 3)
    with pytest.raises(ValueError, match="even the smallest tile"):
        choose_tiling(1e3, (30, 40), spatial_scale=8, estimate_fn=est, overlap_px=16)
    with pytest.raises(ValueError, match="exactly one"):
        choose_tiling(1e6, (30, 40), spatial_scale=8)
    assert blend_buffer_bytes((240, 320), 13) == 3 * 13 * 240 * 320 * 4
