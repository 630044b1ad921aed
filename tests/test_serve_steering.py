"""Prompt steering mid-stream: the demo model's prompt conditioning and re-caching on a switch."""

from __future__ import annotations

import pytest
import torch

from framestream.config import derive_config
from framestream.models.demo import DemoTransformerConfig, demo_pipeline_config
from framestream.models.demo.transformer import hashed_prompt_features
from framestream.serve.recipes import prompt_context_builder, resolve_recipe
from framestream.serve.steering import SteerableRollout

TINY = ["--diffusion-model.transformer.height", "4", "--diffusion-model.transformer.width", "4",
        "--diffusion-model.transformer.dim", "32", "--diffusion-model.transformer.num-heads", "2",
        "--decoder.hidden-channels", "8", "--decoder.spatial-upsample", "2"]


@pytest.fixture(scope="module")
def pipeline():
    return resolve_recipe("demo", overrides=TINY).config.setup().eval()


def run(pipeline, prompt: str, blocks: int, switch: tuple[int, str] | None = None, seed: int = 3) -> list[torch.Tensor]:
    rollout = SteerableRollout(pipeline, prompt_context_builder(pipeline), prompt, seed=seed)
    out = []
    for index in range(blocks):
        if switch is not None and index == switch[0]:
            rollout.set_prompt(switch[1])
        out.append(rollout.next_block())
    return out


def test_hashed_prompt_features_are_deterministic_and_word_based() -> None:
    a = hashed_prompt_features("A red fox", 16)
    torch.testing.assert_close(a, hashed_prompt_features("a  red, FOX!", 16))
    assert not torch.allclose(a, hashed_prompt_features("a blue fox", 16))
    assert torch.count_nonzero(hashed_prompt_features("  ", 16)) == 0


def test_prompt_conditions_the_demo_transformer_and_none_is_unconditioned() -> None:
    transformer = DemoTransformerConfig(latent_channels=2, chunk_frames=2, height=4, width=4, dim=32, num_heads=2).setup().eval()
    tokens = torch.randn(1, 2 * transformer.tokens_per_chunk, transformer.patch_dim)
    t = torch.tensor(500.0)
    with torch.no_grad():
        plain = transformer.predict_flow_block_causal(tokens, t)
        fox = transformer.predict_flow_block_causal(tokens, t, prompt="a fox")
        cat = transformer.predict_flow_block_causal(tokens, t, prompt="a cat")
        cache = transformer.initialize_autoregressive_cache()
        cache.start(0)
        uncached = transformer.predict_flow(tokens[:, : transformer.tokens_per_chunk], t, cache)
    assert cache.text_condition is None
    torch.testing.assert_close(uncached, plain[:, : transformer.tokens_per_chunk])
    assert (fox - cat).abs().max() > 1e-3 and (fox - plain).abs().max() > 1e-3


@pytest.fixture(scope="module")
def wan_pipeline():
    # Latents only (no VAE): steering lives in the transformer cache, and this keeps the test fast.
    config = resolve_recipe("wan2.1-self-forcing-1.3b-tiny", max_blocks=4).config
    return derive_config(config, decoder=None).setup().eval()


@pytest.mark.parametrize("which", ["demo", "wan"])
def test_switch_changes_the_next_block_only(which, request) -> None:
    pipeline = request.getfixturevalue("pipeline" if which == "demo" else "wan_pipeline")
    base = run(pipeline, "a red fox", 4)
    steered = run(pipeline, "a red fox", 4, switch=(2, "a blue whale at night"))
    for index in range(2):  # blocks before the switch: identical
        torch.testing.assert_close(steered[index], base[index], rtol=0, atol=0)
    assert (steered[2] - base[2]).abs().max() > 1e-3  # the block right after the switch differs
    # Same prompt, same seed: same video, so the difference above is the switch, not noise.
    torch.testing.assert_close(run(pipeline, "a red fox", 4)[3], base[3], rtol=0, atol=0)


def test_recache_equals_a_rollout_under_the_new_prompt(pipeline) -> None:
    """After the switch the cache holds what a rollout under the new prompt would, for the same frames."""
    builder = prompt_context_builder(pipeline)
    switched = SteerableRollout(pipeline, builder, "a red fox", seed=5)
    for _ in range(3):
        switched.next_block()
    switched.set_prompt("a blue whale")
    switched.next_block()
    history = switched._history[:3]
    # Reference: a fresh cache under the new prompt, advanced block by block with the same clean latents.
    reference = pipeline.diffusion_model.transformer.initialize_autoregressive_cache(prompt="a blue whale")
    model = pipeline.diffusion_model
    with torch.no_grad():
        for block in history:
            reference.start(block.autoregressive_index)
            model.transformer.finalize_kv_cache(block.clean_latent, torch.tensor(0.0), reference)
            reference.finalize(block.autoregressive_index)
    got = switched.cache.transformer_cache
    n = reference.num_cached_tokens
    assert n == 3 * reference.tokens_per_chunk
    torch.testing.assert_close(got.keys[:, :, :, :n], reference.keys[:, :, :, :n])
    torch.testing.assert_close(got.text_condition, reference.text_condition)
    # Swapping the condition alone would have kept the old K/V: they really differ.
    stale = pipeline.diffusion_model.transformer.initialize_autoregressive_cache(prompt="a red fox")
    with torch.no_grad():
        for block in history:
            stale.start(block.autoregressive_index)
            model.transformer.finalize_kv_cache(block.clean_latent, torch.tensor(0.0), stale)
            stale.finalize(block.autoregressive_index)
    assert (stale.keys[:, :, :, :n] - reference.keys[:, :, :, :n]).abs().max() > 1e-3


def test_sessions_interleaved_on_one_pipeline_match_solo_runs(pipeline) -> None:
    builder = prompt_context_builder(pipeline)
    solo_a, solo_b = run(pipeline, "fox", 3, seed=1), run(pipeline, "whale", 3, seed=2)
    a = SteerableRollout(pipeline, builder, "fox", seed=1)
    b = SteerableRollout(pipeline, builder, "whale", seed=2)
    for index in range(3):
        torch.testing.assert_close(b.next_block(), solo_b[index], rtol=0, atol=0)
        torch.testing.assert_close(a.next_block(), solo_a[index], rtol=0, atol=0)


def test_demo_recipe_served_without_fixed_seed() -> None:
    recipe = resolve_recipe("demo", max_blocks=5)
    assert recipe.config.diffusion_model.seed is None and recipe.max_blocks == 5
    assert demo_pipeline_config().diffusion_model.seed == 0  # the demo command keeps its seed
    with pytest.raises(ValueError, match="unknown recipe"):
        resolve_recipe("nope")
