"""Planner and blend-mask properties: coverage, bounds, balance, no slivers, weights summing to one."""

from __future__ import annotations

import math

import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from framestream.tiling import (
    MaskCache,
    TilingConfig,
    axis_weights,
    plan_axis,
    plan_latent_grid,
    plan_pixel_grid,
    plan_temporal,
    plan_tiles_2d,
    plan_video_decode,
    ramp,
    trapezoid,
)

FAST = settings(max_examples=150, deadline=None)


@st.composite
def axis_args(draw):
    tile = draw(st.integers(1, 24))
    overlap = draw(st.integers(0, tile - 1))
    minimum = draw(st.integers(1, tile))
    length = draw(st.integers(1, 120))
    return length, tile, overlap, minimum


def _weight_sum(tiles, total: int) -> torch.Tensor:
    acc = torch.zeros(total, dtype=torch.float64)
    for t in tiles:
        w = axis_weights(t, dtype=torch.float32)
        assert w.shape == (t.out_size,)
        assert (w >= 0).all() and (w <= 1).all()
        acc[t.out_start : t.out_end] += w.double()
    return acc


@FAST
@given(axis_args(), st.integers(1, 5), st.integers(1, 4))
def test_plan_axis_covers_balances_and_blends_to_one(args, out_scale, in_scale):
    length, tile, overlap, minimum = args
    tiles = plan_axis(length, tile, overlap, minimum, in_scale=in_scale, out_scale=out_scale)
    # first starts at 0, last ends at the edge: no edge unit dropped
    assert tiles[0].start == 0 and tiles[-1].end == length * in_scale
    assert tiles[0].out_start == 0 and tiles[-1].out_end == length * out_scale
    units = [(t.start // in_scale, t.end // in_scale) for t in tiles]
    covered = [False] * length
    for a, b in units:
        assert 0 <= a < b <= length
        assert b - a <= tile
        for u in range(a, b):
            covered[u] = True
    assert all(covered)
    sizes = [b - a for a, b in units]
    if len(tiles) == 1:
        assert length <= tile
    else:
        assert min(sizes) >= minimum  # no sliver
        assert max(sizes) - min(sizes) <= 1  # balanced
        strides = [b[0] - a[0] for a, b in zip(units, units[1:])]
        assert min(strides) >= 1 and max(strides) - min(strides) <= 1  # even strides
        assert all(a[1] - b[0] >= overlap for a, b in zip(units, units[1:]))  # overlap never below the request
        if math.ceil((length + (len(tiles) - 1) * overlap) / len(tiles)) >= minimum:
            assert len(tiles) == math.ceil((length - overlap) / (tile - overlap))
    acc = _weight_sum(tiles, length * out_scale)
    assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6, rtol=0)
    # owned regions partition the output
    assert tiles[0].own_start == 0 and tiles[-1].own_end == length * out_scale
    for a, b in zip(tiles, tiles[1:]):
        assert a.own_end == b.own_start and a.own_start < a.own_end
        assert b.weight_start <= b.own_start  # a tile owns only positions where it has weight


@FAST
@given(axis_args(), st.integers(1, 5))
def test_causal_time_mapping_blends_to_one(args, scale):
    length, tile, overlap, minimum = args
    overlap = max(overlap, 1) if tile > 1 else 0
    minimum = max(minimum, min(tile, overlap + 1))
    if tile == 1 and length > 1:
        with pytest.raises(ValueError, match="causal"):
            plan_axis(length, tile, overlap, minimum, out_scale=scale, causal=True)
        return
    tiles = plan_axis(length, tile, overlap, minimum, out_scale=scale, causal=True)
    total = 1 + (length - 1) * scale
    for t in tiles:
        assert t.out_size == 1 + (t.size - 1) * scale  # what a causal decoder returns for the tile
        assert t.out_start == t.start * scale
        assert t.lead == (1 if t.start > 0 else 0)  # re-decoded first frame gets weight 0
        if t.lead:
            assert axis_weights(t)[0] == 0
    assert tiles[-1].out_end == total
    acc = _weight_sum(tiles, total)
    assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6, rtol=0)


def test_causal_one_latent_overlap_abuts_exactly():
    tiles = plan_axis(7, 4, 1, out_scale=4, causal=True)
    assert [(t.start, t.end) for t in tiles] == [(0, 4), (3, 7)]
    first, second = tiles
    assert first.out_end == 13 and second.out_start == 12  # frame 12 is latent 3's last frame
    assert second.weight_start == 13 and second.ramp_in == 0 and first.ramp_out == 0
    w = axis_weights(second)
    assert w[0] == 0 and (w[1:] == 1).all()


def test_ramps_are_open_at_both_ends_and_complementary():
    up, down = ramp(4), ramp(4, rising=False)
    assert torch.allclose(up, torch.tensor([0.125, 0.375, 0.625, 0.875]))
    assert (up > 0).all() and (up < 1).all()
    assert torch.equal(down, up.flip(0))
    assert torch.allclose(up + down, torch.ones(4), atol=1e-7, rtol=0)
    w = trapezoid(10, 1, 2, 3, 1)
    assert w[0] == 0 and w[-1] == 0 and w[3] == 1 and w[4] == 1
    with pytest.raises(ValueError):
        trapezoid(3, 1, 2, 2, 0)


@settings(max_examples=60, deadline=None)
@given(
    st.integers(1, 30),
    st.integers(1, 30),
    st.integers(2, 12),
    st.integers(2, 12),
    st.data(),
    st.sampled_from([1, 2, 8]),
)
def test_2d_masks_blend_to_one_and_cover_everything(h, w, th, tw, data, scale):
    oh = data.draw(st.integers(0, th - 1))
    ow = data.draw(st.integers(0, tw - 1))
    plan = plan_tiles_2d(h, w, (th, tw), (oh, ow), in_scale=1, out_scale=scale)
    masks = MaskCache(torch.float32)
    acc = torch.zeros(h * scale, w * scale, dtype=torch.float64)
    seen = torch.zeros(h, w, dtype=torch.bool)
    for tile in plan:
        assert 0 <= tile.h.start < tile.h.end <= h and 0 <= tile.w.start < tile.w.end <= w
        seen[tile.in_slices] = True
        m = masks.spatial(tile)
        acc[tile.h.weight_start : tile.h.weight_end, tile.w.weight_start : tile.w.weight_end] += m.double()
    assert seen.all()
    assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6, rtol=0)
    assert sum(len(g) for g in plan.shape_groups().values()) == len(plan)
    assert len(plan.shape_groups()) <= 4


def test_3d_masks_blend_to_one_causal_and_not():
    for causal in (True, False):
        plan = plan_video_decode(
            (9, 5, 6),
            TilingConfig(tile_size_px=8, tile_overlap_px=4, temporal_tile_frames=12, temporal_overlap_frames=8),
            spatial_scale=2,
            temporal_scale=4,
            causal_temporal=causal,
        )
        assert len(plan.temporal) > 1 and len(plan.spatial) > 1
        masks = MaskCache(torch.float32)
        acc = torch.zeros(plan.out_frames, *plan.spatial.out_hw, dtype=torch.float64)
        for tt in plan.temporal:
            for tile in plan.spatial:
                acc[tt.weight_start : tt.weight_end, tile.h.weight_start : tile.h.weight_end, tile.w.weight_start : tile.w.weight_end] += (
                    masks.video(tt, tile).double()
                )
        assert plan.out_frames == (33 if causal else 36)
        assert torch.allclose(acc, torch.ones_like(acc), atol=1e-6, rtol=0)


def test_plan_grids_units_and_printing():
    cfg = TilingConfig(tile_size_px=64, tile_overlap_px=16)
    dec = plan_latent_grid(20, 13, cfg, spatial_scale=8)
    assert dec.in_hw == (20, 13) and dec.out_hw == (160, 104)
    for tile in dec:
        assert tile.h.out_start == tile.h.start * 8 and tile.w.out_end == tile.w.end * 8
        assert tile.input_shape[0] <= 8 and tile.output_shape == (tile.h.size * 8, tile.w.size * 8)
    enc = plan_pixel_grid(160, 104, cfg, spatial_scale=8)
    assert enc.in_hw == (160, 104) and enc.out_hw == (20, 13)
    for a, b in zip(dec, enc):
        assert (a.h.start, a.w.start) == (b.h.out_start, b.w.out_start)
        assert b.h.start == a.h.start * 8 and b.h.start % 8 == 0
    text = str(dec)
    assert "TilePlan" in text and "shape groups" in text and "[0:64)" in text
    assert text.count("\n") == len(dec) + 2
    video = plan_video_decode((5, 20, 13), TilingConfig(tile_size_px=64, tile_overlap_px=16, temporal_tile_frames=12), 8, 4)
    assert "VideoTilePlan" in str(video) and "causal" in str(video)


def test_single_tile_when_it_fits():
    assert len(plan_axis(5, 5, 2)) == 1 and len(plan_axis(3, 8, 2)) == 1
    tiles = plan_temporal(6, TilingConfig(), temporal_scale=4)
    assert len(tiles) == 1 and tiles[0].out_size == 21 and tiles[0].ramp_in == tiles[0].ramp_out == 0


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(tile_size_px=0), "positive"),
        (dict(tile_overlap_px=-8), ">= 0"),
        (dict(tile_size_px=64, tile_overlap_px=64), "smaller"),
        (dict(tile_size_px=(64, 32), tile_overlap_px=(16, 32)), "smaller"),
        (dict(tile_size_px=(64, 32, 8)), "pair"),
        (dict(tile_size_px=64.0), "integers"),
        (dict(min_tile_px=256, tile_size_px=128), "min_tile_px"),
        (dict(tile_batch_size=0), "tile_batch_size"),
        (dict(tile_batch_size=-1), "tile_batch_size"),
        (dict(temporal_overlap_frames=4), "temporal_tile_frames is None"),
        (dict(temporal_tile_frames=0), "temporal_tile_frames"),
        (dict(temporal_tile_frames=8, temporal_overlap_frames=8), "smaller"),
        (dict(temporal_tile_frames=8, temporal_overlap_frames=-4), ">= 0"),
    ],
)
def test_config_validation(kwargs, match):
    with pytest.raises(ValueError, match=match):
        TilingConfig(**kwargs)


def test_scale_validation_happens_before_planning():
    with pytest.raises(ValueError, match="multiple of the spatial scale 16"):
        TilingConfig(tile_size_px=200, tile_overlap_px=32).in_latents(16)
    with pytest.raises(ValueError, match="tile_overlap_px"):
        TilingConfig(tile_size_px=256, tile_overlap_px=20).in_latents(16)
    with pytest.raises(ValueError, match="temporal scale 4"):
        TilingConfig(temporal_tile_frames=10).in_latents(8, 4)
    with pytest.raises(ValueError, match="overlap below it"):
        TilingConfig(temporal_tile_frames=4).in_latents(8, 4)  # 1 latent tile with the default 1 latent overlap
    with pytest.raises(ValueError, match="causal"):
        plan_temporal(9, TilingConfig(temporal_tile_frames=16, temporal_overlap_frames=0), temporal_scale=4, causal=True)
    assert len(plan_temporal(9, TilingConfig(temporal_tile_frames=16, temporal_overlap_frames=0), temporal_scale=4, causal=False)) == 3
    with pytest.raises(ValueError, match="not a multiple"):
        plan_pixel_grid(1080, 1920, TilingConfig(tile_size_px=512, tile_overlap_px=128), 32)
    lt = TilingConfig(tile_size_px=(64, 128), tile_overlap_px=16).in_latents(16)
    assert lt.tile == (4, 8) and lt.overlap == (1, 1) and lt.minimum == (2, 2)


@pytest.mark.parametrize(
    "args, match",
    [
        ((0, 4, 1), "length"),
        ((10, 0, 0), "tile"),
        ((10, 4, 4), "smaller"),
        ((10, 4, -1), "overlap"),
        ((10, 4, 1, 5), "minimum"),
        ((10, 4, 1, 0), "minimum"),
    ],
)
def test_plan_axis_validation(args, match):
    with pytest.raises(ValueError, match=match):
        plan_axis(*args)
