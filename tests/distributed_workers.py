"""Worker functions the multi-process tests spawn (importable by the spawned interpreters)."""

from __future__ import annotations

from typing import Any

import torch

from framestream.distributed.config import ParallelConfig
from framestream.distributed.runtime import ProcessWorld
from framestream.distributed.wan_dit import attach_wan_parallel
from framestream.models.wan.transformer.config import WanTransformerArchConfig, WanTransformerConfig

# 6 heads: Ulysses degrees 2 and 3 both divide it; 4 does not (the clear-error check).
ARCH6 = WanTransformerArchConfig(
    num_attention_heads=6, attention_head_dim=12, text_dim=32, freq_dim=16, ffn_dim=48, num_layers=2
)


def _transformer(causal: bool, guidance: float = 1.0, **kw) -> torch.nn.Module:
    config = WanTransformerConfig(
        arch=ARCH6,
        allow_random_init=True,
        dtype=torch.float32,
        num_frames=2 if causal else 3,
        height=10,  # 5 token rows: unequal shards for 2 and 3 ranks
        width=6,
        causal=causal,
        guidance_scale=guidance,
        **kw,
    )
    return config.setup().eval()


def _text(seed: int, rows: int = 1) -> torch.Tensor:
    return torch.randn(rows, 7, 32, generator=torch.Generator().manual_seed(seed))


def _bidirectional(world: ProcessWorld, mode: str, ulysses: int | None, guidance: float, cfg: bool) -> float:
    ref = _transformer(False, guidance)
    par = _transformer(False, guidance)
    runtime = ParallelConfig(mode=mode, ulysses_degree=ulysses, cfg_parallel=cfg).setup(world=world)
    attach_wan_parallel(par, runtime)
    ctx = {"text_embeddings": _text(1)}
    if guidance != 1.0:
        ctx["negative_text_embeddings"] = _text(2)
    latent = torch.randn(ref.latent_shape, generator=torch.Generator().manual_seed(3))
    t = torch.tensor(700.0)
    with torch.no_grad():
        expect = ref.predict_flow(latent, t, ref.initialize_autoregressive_cache(**ctx))
        got = par.predict_flow(latent, t, par.initialize_autoregressive_cache(**ctx))
    return float((got - expect).abs().max())


def _causal(world: ProcessWorld, mode: str, ulysses: int | None) -> float:
    # Rolling cache of 4 frames with a 1-frame sink: 4 blocks of 2 frames evict twice.
    kw = dict(kv_cache_frames=4, rolling_kv_cache=True, sink_frames=1)
    ref, par = _transformer(True, **kw), _transformer(True, **kw)
    runtime = ParallelConfig(mode=mode, ulysses_degree=ulysses).setup(world=world)
    attach_wan_parallel(par, runtime)
    caches = [m.initialize_autoregressive_cache(text_embeddings=_text(4)) for m in (ref, par)]
    worst = 0.0
    gen = torch.Generator().manual_seed(5)
    for block in range(4):
        latent = torch.randn(ref.latent_shape, generator=gen)
        flows = []
        for model, cache in zip((ref, par), caches):
            for t in (900.0, 400.0):  # two denoising forwards read the cache, never write it
                flow = model.predict_flow(latent, torch.tensor(t), cache)
            flows.append(flow)
            model.finalize_kv_cache(latent * 0.5, torch.tensor(0.0), cache)
        worst = max(worst, float((flows[0] - flows[1]).abs().max()))
    # Each rank holds 1/P of the cache (Ulysses: heads; ring: token rows).
    full, mine = caches[0].self_k[0], caches[1].self_k[0]
    assert mine.numel() < full.numel(), (mine.shape, full.shape)
    return worst


def _ulysses_error(world: ProcessWorld) -> str:
    """The one-line error when the Ulysses degree does not divide the head count ('' if none)."""
    from framestream.models.wan.transformer.config import WAN_TINY

    model = WanTransformerConfig(arch=WAN_TINY, allow_random_init=True, dtype=torch.float32, height=10, width=6).setup()
    try:
        attach_wan_parallel(model, ParallelConfig(mode="ulysses").setup(world=world))
    except ValueError as error:
        return str(error)
    return ""


def run_checks(rank: int, checks: list[tuple]) -> dict[str, Any]:
    """Run every check on one process group (spawned once): ``{name: result}``."""
    world = ProcessWorld(timeout_s=30)
    out: dict[str, Any] = {}
    with world.guard():
        for name, kind, *args in checks:
            torch.manual_seed(0)
            if kind == "bidirectional":
                out[name] = _bidirectional(world, *args)
            elif kind == "causal":
                out[name] = _causal(world, *args)
            elif kind == "ulysses_error":
                out[name] = _ulysses_error(world)
            elif kind == "vae":
                out[name] = _vae_parity(world, *args)
            elif kind == "generate":
                out[name] = _generate_frames(world, *args)
    return out


# ------------------------------------------------------------------------------ VAE
def _vae():
    from framestream.models.wan.vae import WanVAE, init_random_weights, tiny_wan21_arch

    return init_random_weights(WanVAE(tiny_wan21_arch(4)), 0).eval().requires_grad_(False)


def _vae64():
    """float64: the tiled result then matches untiled to ~1e-12, so any tiling error would stand out."""
    return _vae().double()


def _vae_parity(world: ProcessWorld, latent_hw: tuple[int, int], tile_latents: int) -> dict:
    """Tile-parallel decode (both head placements) and encode (both back placements) vs one-process untiled."""
    from framestream.distributed.vae import iter_decode_parallel, iter_encode_parallel, split_tiles
    from framestream.tiling.planner import TilingConfig
    from framestream.tiling.wan_exact import plan_exact_decode, plan_exact_encode

    rank = world.rank
    out: dict = {}
    runtime = ParallelConfig().setup(world=world)
    vae = _vae64()
    tiling = TilingConfig(tile_size_px=tile_latents * 8, tile_overlap_px=0, tile_batch_size=2)
    z = torch.randn(1, vae.arch.z_dim, 3, *latent_hw, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    expect = vae.decode(z)
    plan = plan_exact_decode(vae, latent_hw, tiling)
    out["tiles_per_rank"] = [len(t) for t in split_tiles(plan, runtime.world_size).tiles]
    for head in ("every_rank", "rank0"):
        chunks = list(iter_decode_parallel(vae, z, plan, runtime, chunk_size=2, head=head))
        if rank == 0:
            got = torch.cat([c for c, _ in chunks], dim=2)
            out[f"decode_{head}"] = float((got - expect).abs().max())
        else:
            assert all(c is None for c, _ in chunks)
    x = expect.clamp(-1, 1)
    mean = vae.encode(x)
    eplan = plan_exact_encode(vae, tuple(x.shape[-2:]), tiling)
    for back in ("rank0", "every_rank"):
        pieces = [x[:, :, :5], x[:, :, 5:]]  # streamed in two pieces, as the encode job reads a video
        chunks = list(iter_encode_parallel(vae, pieces, eplan, runtime, chunk_size=2, back=back))
        if rank == 0 or back == "every_rank":
            got = torch.cat([m for m, _ in chunks], dim=2)[:, : vae.arch.z_dim]
            out[f"encode_{back}"] = float((got - mean).abs().max())
    out["bytes"] = dict(runtime.stats.sent)
    return out


def _generate_frames(world: ProcessWorld, mode: str, num_blocks: int = 3) -> torch.Tensor | None:
    """The tiny self-forcing recipe's float frames generated on this group (rank 0 returns them)."""
    from framestream.config import derive_config
    from framestream.distributed.pipeline import setup_parallel_pipeline
    from framestream.recipes.wan import iter_video_blocks, prepare_recipe, wan21_self_forcing_1_3b_tiny

    config, n = prepare_recipe(wan21_self_forcing_1_3b_tiny(), num_blocks)
    config = derive_config(config, **{"parallel.mode": mode})
    pipeline = setup_parallel_pipeline(config, world)
    with torch.no_grad():
        frames = torch.cat(list(iter_video_blocks(pipeline, "a fox", n)), dim=2)
    return frames if world.is_main else None


def failing_rank(rank: int, how: str) -> str:
    """Rank 1 fails (``bad_input``: before any collective; ``forward``: inside a CP forward; ``stuck``:
    stops answering); rank 0 runs a context-parallel forward. Returns how this rank ended."""
    import time

    from framestream.distributed.runtime import PeerFailedError

    world = ProcessWorld(timeout_s=4 if how == "stuck" else 30)
    start = time.monotonic()
    try:
        with world.guard():
            model = _transformer(False)
            attach_wan_parallel(model, ParallelConfig(mode="ring").setup(world=world))
            cache = model.initialize_autoregressive_cache(text_embeddings=_text(1))
            latent = torch.randn(model.latent_shape)
            if rank == 1 and how == "bad_input":
                raise ValueError("bad latent on rank 1")
            if rank == 1 and how in ("forward", "stuck"):
                block = model.dit.blocks[1]
                original = block.forward

                def broken(*args, **kwargs):
                    if how == "stuck":
                        time.sleep(60)
                    raise RuntimeError("exploded in rank 1's forward")

                block.forward = broken
                del original
            model.predict_flow(latent, torch.tensor(500.0), cache)
            return "finished"
    except PeerFailedError as error:
        raise RuntimeError(f"peer failed after {time.monotonic() - start:.1f} s: {error}") from None
    except Exception as error:
        raise RuntimeError(f"own error after {time.monotonic() - start:.1f} s: {type(error).__name__}: {error}") from None

