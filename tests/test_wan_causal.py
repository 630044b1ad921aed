"""Causal (Self-Forcing / CausVid) mode of the Wan DiT: block-wise KV cache vs one block-causal forward."""

from __future__ import annotations

import pytest
import torch

from framestream.models.wan.transformer import WAN_TINY, KVCacheFullError, WanTransformer, WanTransformerConfig
from framestream.models.wan.transformer.attention import block_causal_mask

H, W = 4, 6  # latent; 2x3 = 6 tokens per frame
TOKENS = 6
TEXT = torch.randn(1, 5, WAN_TINY.text_dim, generator=torch.Generator().manual_seed(11))


def _transformer(n: int = 3, **changes) -> WanTransformer:
    cfg = WanTransformerConfig(
        arch=WAN_TINY,
        allow_random_init=True,
        init_seed=2,
        dtype=torch.float32,
        num_frames=n,
        height=H,
        width=W,
        causal=True,
        **changes,
    )
    t = WanTransformer(cfg).eval()
    gen = torch.Generator().manual_seed(4)
    with torch.no_grad():  # perturb every weight so norms / tables are not at their init values
        for p in t.parameters():
            p.add_(0.1 * torch.randn(p.shape, generator=gen))
    return t


def _rollout(t: WanTransformer, x: torch.Tensor, timestep: torch.Tensor, text: torch.Tensor = TEXT):
    """Block by block: predict_flow on each block, then finalize it into the cache (at the same timestep)."""
    n = t.config.num_frames
    cache = t.initialize_autoregressive_cache(text_embeddings=text)
    outs = []
    for b in range(x.shape[2] // n):
        block = x[:, :, b * n : (b + 1) * n]
        outs.append(t.predict_flow(block, timestep, cache))
        t.finalize_kv_cache(block, timestep, cache)
    return torch.cat(outs, dim=2), cache


def _latent(frames: int, seed: int = 0) -> torch.Tensor:
    return torch.randn(1, 16, frames, H, W, generator=torch.Generator().manual_seed(seed))


def test_blockwise_cache_equals_block_causal_forward_and_block0_equals_bidirectional():
    t = _transformer(kv_cache_frames=12)
    x, ts = _latent(12), torch.tensor(500.0)
    blockwise, cache = _rollout(t, x, ts)
    mask = block_causal_mask(12, 3, TOKENS)
    with torch.no_grad():
        full = t.dit(x, ts, TEXT, self_attn_mask=mask)
        block0 = t.dit(x[:, :, :3], ts, TEXT)
        unmasked = t.dit(x, ts, TEXT)
    assert (blockwise - full).abs().max().item() <= 1e-5
    assert (blockwise[:, :, :3] - block0).abs().max().item() <= 1e-5
    assert (full - unmasked)[:, :, :9].abs().max() > 1e-3  # the mask (causality) matters
    assert cache.fill_frames == 12 and cache.frames_seen == 12


def test_rope_offsets_by_block_frame_index():
    t = _transformer(kv_cache_frames=6)
    x, ts = _latent(6, seed=1), torch.tensor(300.0)
    with torch.no_grad():
        # RoPE is relative: shifting every position of a lone block changes nothing ...
        lone = (t.dit(x[:, :, :3], ts, TEXT), t.dit(x[:, :, :3], ts, TEXT, start_frame=3))
        assert (lone[0] - lone[1]).abs().max() <= 1e-5
        # ... but against cached frames the block must sit at its true frame index (3), as the cache assumes.
        cache = t.initialize_autoregressive_cache(text_embeddings=TEXT)
        t.finalize_kv_cache(x[:, :, :3], ts, cache)
        assert cache.frames_seen == 3
        right = t.dit(x[:, :, 3:], ts, cache=cache)
        wrong = t.dit(x[:, :, 3:], ts, cache=cache, start_frame=0)
        full = t.dit(x, ts, TEXT, self_attn_mask=block_causal_mask(6, 3, TOKENS))
    assert (right - full[:, :, 3:]).abs().max() <= 1e-5
    assert (wrong - right).abs().max() > 1e-4


@pytest.mark.parametrize(
    "n,cache_frames,sink",
    [(3, 3, 0), (3, 6, 3), (2, 4, 1)],  # window of one block; sink = first block; odd sizes
)
def test_rolling_window_and_sink_match_the_masked_forward(n, cache_frames, sink):
    frames = 5 * n
    t = _transformer(n, kv_cache_frames=cache_frames, rolling_kv_cache=True, sink_frames=sink)
    x, ts = _latent(frames, seed=n), torch.tensor(750.0)
    blockwise, cache = _rollout(t, x, ts)
    mask = block_causal_mask(frames, n, TOKENS, kv_cache_frames=cache_frames, sink_frames=sink)
    with torch.no_grad():
        windowed = t.dit(x, ts, TEXT, self_attn_mask=mask)
        unbounded = t.dit(x, ts, TEXT, self_attn_mask=block_causal_mask(frames, n, TOKENS))
    assert (blockwise - windowed).abs().max().item() <= 1e-5
    assert (blockwise - unbounded)[:, :, -n:].abs().max() > 1e-4  # eviction changed what the last block saw
    assert cache.fill_frames == cache_frames and cache.frames_seen == frames


def test_sink_keeps_first_frames_in_the_cache():
    t = _transformer(3, kv_cache_frames=6, rolling_kv_cache=True, sink_frames=3)
    x, ts = _latent(12, seed=7), torch.tensor(100.0)
    _, cache = _rollout(t, x[:, :, :3], ts)
    first_block_k = cache.cached_kv(0)[0].clone()
    for b in range(1, 4):
        block = x[:, :, 3 * b : 3 * b + 3]
        t.predict_flow(block, ts, cache)
        scratch = cache.self_k[0][:, cache.fill_tokens : cache.fill_tokens + 3 * TOKENS].clone()
        t.finalize_kv_cache(block, ts, cache)
    k, _ = cache.cached_kv(0)
    assert k.shape[1] == 6 * TOKENS
    torch.testing.assert_close(k[:, : 3 * TOKENS], first_block_k, rtol=0, atol=0)  # sink kept
    torch.testing.assert_close(k[:, 3 * TOKENS :], scratch, rtol=0, atol=0)  # then the newest block


def test_predict_flow_never_writes_the_cache():
    t = _transformer(kv_cache_frames=9)
    x, ts = _latent(6, seed=3), torch.tensor(1000.0)
    cache = t.initialize_autoregressive_cache(text_embeddings=TEXT)
    t.finalize_kv_cache(x[:, :, :3], ts, cache)
    snapshot = [k[:, : cache.fill_tokens].clone() for k in cache.self_k] + [
        v[:, : cache.fill_tokens].clone() for v in cache.self_v
    ]
    state = (cache.fill_frames, cache.frames_seen)
    first = t.predict_flow(x[:, :, 3:], ts, cache)
    for step in (750.0, 500.0, 250.0):
        t.predict_flow(torch.randn_like(first), torch.tensor(step), cache)
    again = t.predict_flow(x[:, :, 3:], ts, cache)
    assert (cache.fill_frames, cache.frames_seen) == state
    current = [k[:, : cache.fill_tokens] for k in cache.self_k] + [v[:, : cache.fill_tokens] for v in cache.self_v]
    for before, after in zip(snapshot, current):
        torch.testing.assert_close(after, before, rtol=0, atol=0)
    torch.testing.assert_close(first, again, rtol=0, atol=0)  # same input, same cache -> same output


def test_finalize_advances_and_full_cache_raises():
    t = _transformer(kv_cache_frames=6)
    x, ts = _latent(9, seed=5), torch.tensor(0.0)
    cache = t.initialize_autoregressive_cache(text_embeddings=TEXT)
    assert len(cache.self_k) == WAN_TINY.num_layers
    assert cache.self_k[0].shape == (1, (6 + 3) * TOKENS, WAN_TINY.num_attention_heads, WAN_TINY.attention_head_dim)
    t.finalize_kv_cache(x[:, :, :3], ts, cache)
    t.finalize_kv_cache(x[:, :, 3:6], ts, cache)
    assert (cache.fill_frames, cache.frames_seen) == (6, 6)
    t.predict_flow(x[:, :, 6:], ts, cache)  # a full cache still serves a denoising step
    with pytest.raises(KVCacheFullError, match="kv_cache_frames"):
        t.finalize_kv_cache(x[:, :, 6:], ts, cache)
    cache.reset()
    assert (cache.fill_frames, cache.frames_seen) == (0, 0)


def test_causal_guidance_uses_separate_cond_and_uncond_caches():
    t = _transformer(kv_cache_frames=6, guidance_scale=3.0)
    uncond = torch.randn(1, 5, WAN_TINY.text_dim, generator=torch.Generator().manual_seed(9))
    x, ts = _latent(6, seed=8), torch.tensor(400.0)
    cache = t.initialize_autoregressive_cache(text_embeddings=TEXT, negative_text_embeddings=uncond)
    assert cache.self_k[0].shape[0] == 2
    outs = []
    for b in range(2):
        block = x[:, :, 3 * b : 3 * b + 3]
        outs.append(t.predict_flow(block, ts, cache))
        t.finalize_kv_cache(block, ts, cache)
    plain = _transformer(kv_cache_frames=6)  # same seed -> same weights
    cond_out, _ = _rollout(plain, x, ts, TEXT)
    uncond_out, _ = _rollout(plain, x, ts, uncond)
    torch.testing.assert_close(torch.cat(outs, 2), uncond_out + 3.0 * (cond_out - uncond_out), rtol=1e-5, atol=1e-5)


def test_block_causal_mask_layout():
    m = block_causal_mask(6, 2, 1)
    expected = torch.tensor(
        [
            [1, 1, 0, 0, 0, 0],
            [1, 1, 0, 0, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 0, 0],
            [1, 1, 1, 1, 1, 1],
            [1, 1, 1, 1, 1, 1],
        ],
        dtype=torch.bool,
    )
    assert torch.equal(m, expected)
    rolled = block_causal_mask(6, 2, 1, kv_cache_frames=2, sink_frames=1)
    assert rolled[4].tolist() == [True, False, False, True, True, True]  # sink 0, most recent frame 3, own block
    assert block_causal_mask(4, 2, 3).shape == (12, 12)
