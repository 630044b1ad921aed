"""Diffusion: flow-prediction transformers, schedulers and the AR diffusion model."""

from framestream.diffusion.model import DiffusionModel, DiffusionModelConfig, FinalState
from framestream.diffusion.transformer import Transformer, TransformerAutoregressiveCache, TransformerConfig

__all__ = [
    "DiffusionModel",
    "DiffusionModelConfig",
    "FinalState",
    "Transformer",
    "TransformerAutoregressiveCache",
    "TransformerConfig",
]
