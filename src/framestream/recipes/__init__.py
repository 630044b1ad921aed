"""Ready-made pipeline configs ("recipes") and their runner."""

from framestream.recipes.wan import (
    RECIPES,
    MissingWeightsError,
    generate_video,
    prepare_recipe,
    resolve_wan_files,
    wan21_self_forcing_1_3b,
    wan21_self_forcing_1_3b_tiny,
    wan21_t2v_1_3b,
    wan21_t2v_1_3b_tiny,
)

__all__ = [
    "RECIPES",
    "MissingWeightsError",
    "generate_video",
    "prepare_recipe",
    "resolve_wan_files",
    "wan21_self_forcing_1_3b",
    "wan21_self_forcing_1_3b_tiny",
    "wan21_t2v_1_3b",
    "wan21_t2v_1_3b_tiny",
]
