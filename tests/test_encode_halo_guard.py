"""Exact tiled encode never recomputes more than the cap: small tiles are enlarged (up to untiled)."""

from __future__ import annotations

import torch

from framestream.encoders.wan import WanVAEEncoderConfig
from framestream.models.wan.vae import WanVAE, tiny_wan21_arch
from framestream.tiling import TilingConfig, plan_exact_encode
from framestream.tiling.wan_exact.plan import MAX_ENCODE_HALO_OVERHEAD, encode_halo_overhead


def test_small_encode_tiles_are_enlarged_until_the_halo_pays_off():
    vae = WanVAE(tiny_wan21_arch(4), include_decoder=False)
    hw = (480, 832)
    asked = plan_exact_encode(vae, hw, TilingConfig(tile_size_px=128, tile_overlap_px=0))
    assert encode_halo_overhead(asked.rows, asked.cols, hw) > 3  # 128 px tiles read >3x the frame
    capped = plan_exact_encode(vae, hw, TilingConfig(tile_size_px=128, tile_overlap_px=0), max_halo_overhead=1.5)
    assert encode_halo_overhead(capped.rows, capped.cols, hw) <= 1.5
    assert 1 < len(capped.tiles) < len(asked.tiles)
    whole = plan_exact_encode(vae, (64, 64), TilingConfig(tile_size_px=16, tile_overlap_px=0), max_halo_overhead=1.0)
    assert len(whole.tiles) == 1  # nothing smaller pays off: one tile, the untiled encode


def test_pipeline_encoder_uses_the_capped_plan_and_stays_exact():
    arch = tiny_wan21_arch(4)
    x = torch.rand(1, 3, 5, 64, 64, generator=torch.Generator().manual_seed(0)) * 2 - 1
    plain = WanVAEEncoderConfig(arch=arch).setup()
    tiled = WanVAEEncoderConfig(arch=arch, tiling=TilingConfig(tile_size_px=16, tile_overlap_px=0)).setup()
    cache = tiled.initialize_autoregressive_cache()
    out = tiled(x, 0, cache)
    assert encode_halo_overhead(cache.plan.rows, cache.plan.cols, (64, 64)) <= MAX_ENCODE_HALO_OVERHEAD
    torch.testing.assert_close(out, plain(x, 0, plain.initialize_autoregressive_cache()), atol=1e-4, rtol=0)
