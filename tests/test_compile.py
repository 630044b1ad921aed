"""Compiled static-shape chunks: compiled equals eager, and a stream compiles no graph after
its first compiled chunk (counted with dynamo's counters).

Inductor on a 2-core CPU is slow to compile, so the models are tiny and each test compiles
one shape set. TAEHV and the DiT block compile with inductor. The Wan VAE (decode, encode,
exact tiled decode) compiles with ``aot_eager`` by default — the same dynamo capture, graph
guards and recompile behaviour, without inductor's C++ codegen, which takes minutes for the
VAE's many kernels on this box; ``FRAMESTREAM_TEST_VAE_BACKEND=inductor`` runs it with inductor.
"""

from __future__ import annotations

import dataclasses
import os

import pytest
import torch

from framestream.models.taehv import TAEHV, TAEHVDecodeState, init_taehv_random, tiny_taehv_arch
from framestream.models.wan.vae import WanCausalCache, WanVAE, init_random_weights, tiny_wan21_arch
from framestream.utils.compile import recompiles

TOL = 1e-5
VAE_BACKEND = os.environ.get("FRAMESTREAM_TEST_VAE_BACKEND", "aot_eager")


@pytest.fixture(autouse=True)
def _fresh_dynamo():
    torch._dynamo.reset()
    yield
    torch._dynamo.reset()


def test_taehv_compiled_chunks_equal_eager_with_one_graph():
    model = init_taehv_random(TAEHV(tiny_taehv_arch(16, 8)), 0).eval()
    z = torch.randn(1, 8, 16, 3, 4, generator=torch.Generator().manual_seed(0))
    eager_state = TAEHVDecodeState()
    eager = [model.decode(z[:, i : i + 2], eager_state) for i in range(0, 8, 2)]
    model.compile_chunks()
    state, graphs = TAEHVDecodeState(), []
    compiled = []
    before = recompiles()
    for i in range(0, 8, 2):
        compiled.append(model.decode(z[:, i : i + 2], state))
        graphs.append(recompiles() - before)
    # The memory slots exist (zeros) before the first chunk, so even it shares the graph.
    assert graphs[0] >= 1 and graphs == [graphs[0]] * 4
    torch.testing.assert_close(torch.cat(compiled, 1), torch.cat(eager, 1), atol=TOL, rtol=0)


def _small_vae() -> WanVAE:
    arch = dataclasses.replace(tiny_wan21_arch(4), num_res_blocks=1)  # real layout, fewer convs: faster tracing
    return init_random_weights(WanVAE(arch), 0).eval().requires_grad_(False)


def test_wan_vae_compiled_decode_encode_and_exact_tiled_decode():
    from framestream.tiling import TilingConfig, WanTiledDecodeState, decode_tiled

    vae = _small_vae()
    z = torch.randn(1, 16, 3, 4, 4, generator=torch.Generator().manual_seed(1))
    video = torch.rand(1, 3, 9, 16, 16, generator=torch.Generator().manual_seed(2)) * 2 - 1
    tiling = TilingConfig(tile_size_px=16, tile_overlap_px=0)
    eager_dec = vae.decode(z)
    eager_enc = vae.encode(video)
    eager_tiled = decode_tiled(vae, z, tiling)
    torch.testing.assert_close(eager_tiled, eager_dec, atol=1e-5, rtol=0)

    vae.compile_chunks(backend=VAE_BACKEND)
    before = recompiles()
    cache, parts, counts = WanCausalCache(), [], []
    for i in range(3):  # one latent frame per chunk; the first chunk runs eagerly
        parts.append(vae.decode(z[:, :, i : i + 1], cache=cache))
        counts.append(recompiles() - before)
    assert counts[0] == 0 and counts[1] >= 1 and counts[2] == counts[1]
    torch.testing.assert_close(torch.cat(parts, 2), eager_dec, atol=TOL, rtol=0)

    before = recompiles()
    state, parts, counts = WanTiledDecodeState(), [], []
    for i in range(3):  # the tiler's tile calls: 2x2 tiles of 2x2 latents
        parts.append(decode_tiled(vae, z[:, :, i : i + 1], tiling, state=state))
        counts.append(recompiles() - before)
    assert counts[0] == 0 and counts[1] >= 1 and counts[2] == counts[1]
    torch.testing.assert_close(torch.cat(parts, 2), eager_dec, atol=TOL, rtol=0)

    before = recompiles()
    cache = WanCausalCache()
    first = vae.encode(video[:, :, :5], cache=cache)  # first frame eager, then one compiled chunk
    after_first = recompiles()
    rest = vae.encode(video[:, :, 5:], cache=cache)  # one more chunk of 4 frames
    assert after_first > before and recompiles() == after_first
    torch.testing.assert_close(torch.cat([first, rest], 2), eager_enc, atol=TOL, rtol=0)


def test_dit_block_compiled_equals_eager_without_recompiling_within_a_block():
    from framestream.models.wan.transformer import WAN_TINY, WanTransformer, WanTransformerConfig

    def build(compile_blocks: bool) -> WanTransformer:
        cfg = WanTransformerConfig(arch=WAN_TINY, allow_random_init=True, init_seed=3, dtype=torch.float32,
                                   num_frames=2, height=4, width=4, causal=True, kv_cache_frames=4,
                                   compile=compile_blocks)  # fmt: skip
        return WanTransformer(cfg).eval()

    text = torch.randn(1, 5, WAN_TINY.text_dim, generator=torch.Generator().manual_seed(4))
    x = torch.randn(1, 16, 4, 4, 4, generator=torch.Generator().manual_seed(5))
    timesteps = [torch.tensor(999.0), torch.tensor(500.0), torch.tensor(250.0)]

    def rollout(t: WanTransformer) -> tuple[torch.Tensor, list[int]]:
        before = recompiles()
        cache = t.initialize_autoregressive_cache(text_embeddings=text)
        outs, counts = [], []
        with torch.no_grad():
            for b in range(2):
                block = x[:, :, 2 * b : 2 * b + 2]
                for ts in timesteps:  # the denoising steps of one AR block share shapes
                    outs.append(t.predict_flow(block, ts, cache))
                    counts.append(recompiles() - before)
                t.finalize_kv_cache(block, timesteps[-1], cache)
        return torch.cat(outs, 2), counts

    eager, _ = rollout(build(False))
    compiled, counts = rollout(build(True))
    torch.testing.assert_close(compiled, eager, atol=TOL, rtol=0)
    assert counts[0] >= 1
    assert counts[1:3] == [counts[0]] * 2  # no recompilation within an AR block
    assert counts[4:6] == [counts[3]] * 2  # nor within the next (its KV context is longer: its own graph)
