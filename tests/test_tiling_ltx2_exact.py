"""Exact LTX-2 tiling: receptive fields (derived vs measured), tiled == untiled, tile batching, the seed's call counts."""

from __future__ import annotations

import pytest
import torch

from framestream.models.ltx2.vae import (
    LTX2_VAE_ARCH,
    LTX2VAE,
    LTX2VAEArchConfig,
    init_random_weights,
    shallow_ltx2_arch,
    tiny_ltx2_arch,
)
from framestream.tiling import (
    TilingConfig,
    batch_schedule,
    decode_tiled,
    encode_tiled,
    iter_decode_tiled,
    plan_ltx2_decode,
    plan_ltx2_encode,
)
from framestream.tiling.ltx2_receptive_field import derive_ltx2_receptive_field, measure_ltx2_receptive_field


def _vae(arch: LTX2VAEArchConfig, seed: int = 0) -> LTX2VAE:
    return init_random_weights(LTX2VAE(arch), seed).eval()


def test_receptive_field_derived_from_layers_matches_measurement():
    for arch in (tiny_ltx2_arch(), shallow_ltx2_arch(decoder_causal=True)):
        for part in ("decoder", "encoder"):
            derived = derive_ltx2_receptive_field(arch, part)
            measured = measure_ltx2_receptive_field(arch, part)
            assert (derived.space, derived.time) == (measured.space, measured.time), (arch, part)
    dec = derive_ltx2_receptive_field(tiny_ltx2_arch(decoder_causal=True), "decoder")
    assert dec.time[0] == 0 and dec.time[1] > 0  # a causal decoder reaches forward in time only
    # the real LTX-2 layout: 21.625 latents (692 px) of decoder reach, 15.25 (488 px) for the encoder
    real_dec = derive_ltx2_receptive_field(LTX2_VAE_ARCH, "decoder")
    assert real_dec.space == (21.625, 21.625) and real_dec.time == (21.625, 21.625)
    assert derive_ltx2_receptive_field(LTX2_VAE_ARCH, "encoder").space == (15.25, 15.25)


def test_tiled_decode_equals_untiled_at_odd_size_with_batching_and_temporal_tiles():
    vae = _vae(shallow_ltx2_arch())
    halo = derive_ltx2_receptive_field(vae, "decoder").halo_cells()
    tile_px = (max(halo) + 1) * 32  # tiles barely above the halo
    z = torch.randn(1, 8, 2, 13, 11, generator=torch.Generator().manual_seed(0))  # 416 x 352 px
    config = TilingConfig(tile_size_px=tile_px, tile_overlap_px=0, temporal_tile_frames=8, tile_batch_size=4)
    plan = plan_ltx2_decode(vae, (2, 13, 11), config)
    assert len(plan.temporal) == 2 and len(plan.rows) == 3 and len(plan.cols) == 3
    assert len(plan.batches) == 3 and plan.calls == 6  # one shape group: 9 tiles in calls of 4, 4, 1
    # tiles of one call crop at different offsets after some step (edge tiles read more on their inner side)
    first = [plan.tiles[i] for i in plan.batches[0]]
    assert any(len({(r.crops[k], c.crops[k]) for r, c in first}) > 1 for k in range(len(first[0][0].crops)))
    with torch.no_grad():
        ref = vae.decode(z)
        out = decode_tiled(vae, z, config)
    assert out.shape == ref.shape == (1, 3, 9, 416, 352)
    assert (out - ref).abs().max() <= 1e-4


@pytest.mark.parametrize("causal,timestep", [(False, True), (True, False)], ids=["noncausal+timestep", "causal"])
def test_temporal_tiling_streams_frames_in_order_and_is_exact(causal, timestep):
    vae = _vae(shallow_ltx2_arch(decoder_causal=causal, timestep_conditioning=timestep))
    t = 16
    z = torch.randn(2, 8, t, 3, 2, generator=torch.Generator().manual_seed(1))
    temb = torch.tensor([0.05, 0.5]) if timestep else None
    config = TilingConfig(tile_size_px=32, tile_overlap_px=0, temporal_tile_frames=24, tile_batch_size=4)
    plan = plan_ltx2_decode(vae, (t, 3, 2), config)
    assert len(plan.temporal) == 6
    if not causal:  # the temporal halo is cropped on both sides somewhere
        assert any(tt.window[0] > 0 and tt.window[1] < t for tt in plan.temporal)
    else:  # a causal decoder reads no latent after the tile's last one
        assert all(tt.window[1] == (tt.own[1] + 7) // 8 for tt in plan.temporal)
        assert any(tt.window[0] > 0 for tt in plan.temporal)
    with torch.no_grad():
        ref = vae.decode(z, temb)
        parts = list(iter_decode_tiled(vae, z, config, temb=temb))
    starts = [s for _, s in parts]
    assert starts == sorted(starts) and starts[0] == 0
    out = torch.cat([f for f, _ in parts], dim=2)
    assert out.shape == ref.shape == (2, 3, 121, 96, 64)
    assert (out - ref).abs().max() <= 1e-4


def test_tiled_encode_equals_untiled_at_odd_size_with_batching():
    vae = _vae(shallow_ltx2_arch())
    halo = derive_ltx2_receptive_field(vae, "encoder").halo_cells()
    tile_px = (max(halo) + 1) * 32
    x = torch.rand(1, 3, 9, 13 * 32, 11 * 32, generator=torch.Generator().manual_seed(2)) * 2 - 1
    config = TilingConfig(tile_size_px=tile_px, tile_overlap_px=0, tile_batch_size=4)
    plan = plan_ltx2_encode(vae, (9, 13 * 32, 11 * 32), config)
    assert len(plan) == 12 and plan.calls == 3
    assert any(0 < r.window[0] for r in plan.rows) and all(r.window[0] % 32 == 0 for r in plan.rows)
    with torch.no_grad():
        ref_mean, ref_logvar = vae.encode(x, return_logvar=True)
        mean, logvar = encode_tiled(vae, x, config, return_logvar=True)
    assert mean.shape == (1, 8, 2, 13, 11)
    assert (mean - ref_mean).abs().max() <= 1e-4 and (logvar - ref_logvar).abs().max() <= 1e-4


def _seed_boxes(height: int, width: int, tile: int = 512, overlap: int = 128, factor: int = 32):
    """The LTX-2 trainer's tiled_encode_video tile boxes (seed PR #215): edge tiles floored to the factor."""
    stride = tile - overlap
    return [
        (min(tile, height - y) // factor * factor, min(tile, width - x) // factor * factor)
        for y in range(0, height - overlap, stride)
        for x in range(0, width - overlap, stride)
    ]


@pytest.mark.parametrize(
    "width,height,batch,seed_calls,seed_batched,ours_tiles,ours_calls",
    [(1920, 1080, 8, 15, 4, 12, 2), (3840, 2160, 45, 60, 4, 40, 1)],
)
def test_seed_call_counts_from_the_planner(width, height, batch, seed_calls, seed_batched, ours_tiles, ours_calls):
    # the seed's table: tiles per frame, and calls once same-shape tiles are batched
    shapes = _seed_boxes(height, width)
    assert len(batch_schedule(shapes, 1)) == seed_calls
    assert len(batch_schedule(shapes, batch)) == seed_batched
    # ours, same tile size and batch, real LTX-2 layout (on meta: planning needs no weights);
    # every pixel is encoded (the frame is padded to a multiple of 32), and equal stage windows
    # make every tile one shape, so the whole frame goes in ceil(tiles / batch) calls
    with torch.device("meta"):
        vae = LTX2VAE(LTX2_VAE_ARCH)
    padded = -(-height // 32) * 32
    plan = plan_ltx2_encode(vae, (25, padded, width), TilingConfig(tile_size_px=512, tile_overlap_px=128, tile_batch_size=batch))
    assert (len(plan), plan.calls) == (ours_tiles, ours_calls)
    assert plan.calls <= seed_batched and plan.rows[-1].own[1] * 32 == padded


def test_plan_errors_are_clear():
    vae = _vae(shallow_ltx2_arch())
    with pytest.raises(ValueError, match="multiple of the spatial scale 32"):
        plan_ltx2_decode(vae, (2, 4, 4), TilingConfig(tile_size_px=48, tile_overlap_px=0))
    with pytest.raises(ValueError, match="multiple of the temporal ratio 8"):
        plan_ltx2_decode(vae, (2, 4, 4), TilingConfig(tile_size_px=64, tile_overlap_px=0, temporal_tile_frames=12))
    with pytest.raises(ValueError, match="space only"):
        plan_ltx2_encode(vae, (9, 64, 64), TilingConfig(tile_size_px=64, tile_overlap_px=0, temporal_tile_frames=8))
    with pytest.raises(ValueError, match="1 \\+ 8k"):
        encode_tiled(vae, torch.zeros(1, 3, 4, 64, 64), TilingConfig(tile_size_px=64, tile_overlap_px=0))
