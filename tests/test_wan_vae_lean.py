"""The lean paths of the Wan VAE and its exact tiler: time slices, one-frame convolutions, cache offload."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F

from framestream.models.wan.vae import WanCausalCache, WanVAE, init_random_weights, tiny_wan21_arch, tiny_wan22_arch
from framestream.models.wan.vae.modules import CausalConv3d
from framestream.tiling import TilingConfig
from framestream.tiling.wan_budget import estimate_exact_decode_memory
from framestream.tiling.wan_exact import decode_tiled, iter_decode_tiled, plan_exact_decode
from framestream.tiling.wan_exact.tile_calls import _cache_on


def _vae(arch, dtype=torch.float64) -> WanVAE:
    return init_random_weights(WanVAE(arch), 0).eval().requires_grad_(False).to(dtype)


@pytest.mark.parametrize("context", ["zeros", "cached"])
def test_one_frame_conv_equals_the_padded_conv3d(context):
    conv = CausalConv3d(5, 7, 3, padding=1).double()
    init_random_weights(conv, 3)
    g = torch.Generator().manual_seed(1)
    x = torch.randn(2, 5, 1, 6, 9, generator=g, dtype=torch.float64)
    prev = None if context == "zeros" else torch.randn(2, 5, 2, 6, 9, generator=g, dtype=torch.float64)
    ctx = torch.zeros(2, 5, 2, 6, 9, dtype=torch.float64) if prev is None else prev
    want = F.conv3d(torch.cat([ctx, x], dim=2), conv.weight, conv.bias, padding=(0, 1, 1))
    got = conv._conv_after(prev, x)
    assert got.shape == want.shape
    assert (got - want).abs().max().item() < 1e-12


@pytest.mark.parametrize("arch", [tiny_wan21_arch(), tiny_wan22_arch()], ids=["wan21", "wan22"])
def test_time_slices_equal_whole_chunks(arch):
    """frame_slice 1 (the default: the last temporal upsampler's spatial half joins the slices) and 2
    give the whole-chunk result, for decode and encode, in chunks of 1 and 2 latents."""
    vae = _vae(arch)
    g = torch.Generator().manual_seed(2)
    z = torch.randn(1, arch.z_dim, 3, 4, 6, generator=g, dtype=torch.float64)
    s = vae.spatial_ratio
    x = torch.rand(1, 3, 9, 4 * s, 6 * s, generator=g, dtype=torch.float64) * 2 - 1
    results = {}
    with torch.no_grad():
        for frame_slice in (None, 1, 2):
            vae.frame_slice = frame_slice
            results[frame_slice] = [vae.decode(z, chunk_size=k) for k in (1, 2)] + [vae.encode(x, chunk_size=k) for k in (1, 2)]
    for frame_slice in (1, 2):
        for got, want in zip(results[frame_slice], results[None]):
            assert (got - want).abs().max().item() < 1e-10


def test_cache_round_trip_to_host_keeps_every_slot():
    cache = WanCausalCache({"a": torch.randn(1, 2, 2, 3, 3), "b": torch.randn(1, 4, 1, 2, 2)})
    moved = _cache_on(cache, torch.device("cpu"))
    assert moved is not cache and moved.keys() == cache.keys()
    for key in cache:
        assert torch.equal(moved[key], cache[key])


def test_offloaded_caches_are_estimated_as_one_call_and_decode_unchanged_on_the_cpu():
    vae = _vae(tiny_wan21_arch(), torch.float32)
    hw = (8, 12)
    plan = plan_exact_decode(vae, hw, TilingConfig(tile_size_px=4 * vae.spatial_ratio, tile_overlap_px=0))
    resident = estimate_exact_decode_memory(vae, plan)
    offloaded = estimate_exact_decode_memory(vae, plan, offload_caches=True)
    assert len(plan.batches) == 6
    assert offloaded.tail_cache < resident.tail_cache / 3
    assert offloaded.total < resident.total
    z = torch.randn(1, vae.arch.z_dim, 3, *hw, generator=torch.Generator().manual_seed(4))
    want = decode_tiled(vae, z, plan)
    assert torch.equal(torch.cat([f for f, _ in iter_decode_tiled(vae, z, plan, offload_caches=True)], dim=2), want)


@pytest.mark.skipif(not torch.cuda.is_available(), reason="host offload of tile caches needs a CUDA device")
def test_offloaded_caches_on_cuda_are_exact_and_lower_the_device_peak():
    vae = _vae(tiny_wan21_arch(16), torch.float32).cuda()
    hw = (24, 32)
    plan = plan_exact_decode(vae, hw, TilingConfig(tile_size_px=8 * vae.spatial_ratio, tile_overlap_px=0))
    z = torch.randn(1, vae.arch.z_dim, 4, *hw, generator=torch.Generator().manual_seed(5)).cuda()
    peaks, outs = {}, {}
    for offload in (False, True):
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
        base = torch.cuda.memory_allocated()
        outs[offload] = [f.cpu() for f, _ in iter_decode_tiled(vae, z, plan, offload_caches=offload)]
        torch.cuda.synchronize()
        peaks[offload] = torch.cuda.max_memory_allocated() - base
    assert all(torch.equal(a, b) for a, b in zip(outs[False], outs[True]))
    assert peaks[True] < peaks[False], peaks


def test_write_through_streams_reuse_their_cache_slots_and_atomic_ones_leave_them_alone():
    vae = _vae(tiny_wan21_arch(), torch.float32)
    z = torch.randn(1, vae.arch.z_dim, 4, 3, 5, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        want = vae.decode(z)
        cache = WanCausalCache()
        parts = [vae.decode(z[:, :, :2], cache=cache)]
        storage = {k: t.data_ptr() for k, t in cache.slots.items()}
        parts.append(vae.decode(z[:, :, 2:], cache=cache))
        assert torch.allclose(torch.cat(parts, dim=2), want, atol=1e-5)
        # Every two-frame slot was shifted in place: no allocation per chunk.
        kept = [k for k, t in cache.slots.items() if t.shape[2] == 2 and t.data_ptr() == storage.get(k)]
        assert len(kept) == sum(1 for t in cache.slots.values() if t.shape[2] == 2) > 10
        # An atomic chunk builds new slots and leaves the old tensors as they were.
        before = {k: t.clone() for k, t in cache.slots.items()}
        old = dict(cache.slots)
        vae.decode(z[:, :, :1], cache=cache, atomic=True)
        assert all(torch.equal(old[k], before[k]) for k in old)
