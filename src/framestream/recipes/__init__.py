"""Ready-made pipeline configs ("recipes": Wan 2.1, Wan 2.2) and their runner."""

from framestream.recipes.registry import RECIPES, TINY_RECIPES, recipe_summary
from framestream.recipes.wan import (
    MissingWeightsError,
    generate_video,
    prepare_recipe,
    resolve_wan_files,
    wan21_self_forcing_1_3b,
    wan21_self_forcing_1_3b_tiny,
    wan21_t2v_1_3b,
    wan21_t2v_1_3b_tiny,
)
from framestream.recipes.wan22 import (
    resolve_wan22_files,
    wan22_t2v_a14b,
    wan22_t2v_a14b_tiny,
    wan22_ti2v_5b,
    wan22_ti2v_5b_tiny,
    with_image_conditioning,
    with_video_size,
)

__all__ = [
    "RECIPES",
    "TINY_RECIPES",
    "recipe_summary",
    "MissingWeightsError",
    "generate_video",
    "prepare_recipe",
    "resolve_wan_files",
    "wan21_self_forcing_1_3b",
    "wan21_self_forcing_1_3b_tiny",
    "wan21_t2v_1_3b",
    "wan21_t2v_1_3b_tiny",
    "resolve_wan22_files",
    "wan22_t2v_a14b",
    "wan22_t2v_a14b_tiny",
    "wan22_ti2v_5b",
    "wan22_ti2v_5b_tiny",
    "with_image_conditioning",
    "with_video_size",
]
