"""Every ready-made recipe by name (Wan 2.1 and Wan 2.2), as ``framestream generate --list`` shows them."""

from __future__ import annotations

from collections.abc import Callable

from framestream.pipeline.config import StreamInferencePipelineConfig
from framestream.recipes.wan import RECIPES as WAN21_RECIPES
from framestream.recipes.wan22 import WAN22_RECIPES

__all__ = ["RECIPES", "TINY_RECIPES", "recipe_summary"]

RECIPES: dict[str, Callable[..., StreamInferencePipelineConfig]] = {**WAN21_RECIPES, **WAN22_RECIPES}
"""Recipe name -> function ``(checkpoint_dir | None, *, seed) -> StreamInferencePipelineConfig``.
For ``-tiny`` recipes the positional argument is an optional small UMT5 directory instead."""

TINY_RECIPES = frozenset(name for name in RECIPES if name.endswith("-tiny"))


def recipe_summary(name: str) -> str:
    """First line of a recipe's docstring."""
    doc = (RECIPES[name].__doc__ or "").strip()
    return doc.splitlines()[0] if doc else ""
