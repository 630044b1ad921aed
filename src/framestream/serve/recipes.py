"""Resolve a recipe name into a pipeline config the server can run, and its prompt -> context rule."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from framestream.config import apply_overrides, derive_config
from framestream.pipeline import StreamInferencePipeline, StreamInferencePipelineConfig

__all__ = ["ServedRecipe", "resolve_recipe", "prompt_context_builder", "recipe_names"]


@dataclass(frozen=True)
class ServedRecipe:
    """A checked pipeline config plus the facts the server needs about it."""

    config: StreamInferencePipelineConfig
    max_blocks: int
    """Most AR blocks one session may generate (the cache is sized for it)."""
    random_weights: bool
    """True for the demo and ``-tiny`` recipes (say so to the viewer)."""


def recipe_names() -> list[str]:
    """Every recipe ``framestream serve`` accepts."""
    from framestream.recipes.registry import RECIPES

    return ["demo", *RECIPES]


def resolve_recipe(
    name: str,
    *,
    checkpoint_dir: Path | None = None,
    overrides: list[str] | None = None,
    max_blocks: int | None = None,
) -> ServedRecipe:
    """Build (and check, before any weights load) the served config of recipe ``name``.

    The noise seed is cleared (``diffusion_model.seed = None``): each session seeds its
    own RNG state (see :mod:`framestream.serve.steering`).
    """
    overrides = list(overrides or [])
    if name == "demo":
        from framestream.models.demo import demo_pipeline_config

        config = apply_overrides(demo_pipeline_config(), overrides)
        blocks = 64 if max_blocks is None else max_blocks
        random_weights = True
    else:
        from framestream.recipes.registry import RECIPES, TINY_RECIPES
        from framestream.recipes.wan import prepare_recipe

        if name not in RECIPES:
            raise ValueError(f"unknown recipe {name!r}; choose one of: {', '.join(recipe_names())}")
        if checkpoint_dir is None and name not in TINY_RECIPES:
            raise ValueError(f"{name} needs --checkpoint-dir (the folder with its weights)")
        config = RECIPES[name](checkpoint_dir)
        config, blocks = prepare_recipe(config, max_blocks)
        config = apply_overrides(config, overrides)
        config, blocks = prepare_recipe(config, blocks)
        random_weights = name in TINY_RECIPES
    if blocks < 1:
        raise ValueError(f"--max-blocks must be >= 1, got {blocks}")
    if config.encoder is not None:
        raise ValueError(f"{name}: serve runs text-to-video pipelines; this one needs a per-step encoder input")
    if config.decoder is None:
        raise ValueError(f"{name}: serve needs a pipeline with a decoder (it streams RGB frames)")
    from framestream.diffusion.two_expert import TwoExpertTransformerConfig

    if isinstance(config.diffusion_model.transformer, TwoExpertTransformerConfig):
        raise ValueError(f"{name}: serve streams one-transformer recipes; the two-expert A14B recipes run with framestream generate")
    if config.diffusion_model.transformer.batch_size != 1:  # type: ignore[attr-defined]
        raise ValueError(f"{name}: serve streams one video per session: transformer.batch_size must be 1")
    config = derive_config(config, **{"diffusion_model.seed": None})
    return ServedRecipe(config=config, max_blocks=blocks, random_weights=random_weights)


def prompt_context_builder(pipeline: StreamInferencePipeline) -> Callable[[str], dict[str, Any]]:
    """The ``transformer_context`` for a prompt, for the pipeline's transformer family."""
    from framestream.models.demo import DemoTransformer

    transformer = pipeline.diffusion_model.transformer
    if isinstance(transformer, DemoTransformer):
        return lambda prompt: {"prompt": prompt}
    from framestream.models.wan.transformer import WanTransformer

    if isinstance(transformer, WanTransformer):
        if transformer.context_encoder is not None:
            return lambda prompt: {"prompt": [prompt]}
        # Tiny recipes without a text encoder: the same prompt-seeded features `generate` uses.
        from framestream.recipes.runner import fallback_embeddings

        text_dim = transformer.config.arch.text_dim

        def fallback(prompt: str) -> dict[str, Any]:
            context = {"text_embeddings": fallback_embeddings(prompt, text_dim)}
            if transformer.guidance:
                context["negative_text_embeddings"] = fallback_embeddings("", text_dim)
            return context

        return fallback
    raise ValueError(f"serve does not know how to condition {type(transformer).__name__} on a prompt")
