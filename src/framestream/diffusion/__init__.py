"""Diffusion: flow-prediction transformers, schedulers and the AR diffusion model."""

from framestream.diffusion.model import DiffusionModel, DiffusionModelConfig, FinalState
from framestream.diffusion.transformer import Transformer, TransformerAutoregressiveCache, TransformerConfig
from framestream.diffusion.two_expert import TwoExpertCache, TwoExpertTransformer, TwoExpertTransformerConfig

__all__ = [
    "DiffusionModel",
    "DiffusionModelConfig",
    "FinalState",
    "Transformer",
    "TransformerAutoregressiveCache",
    "TransformerConfig",
    "TwoExpertCache",
    "TwoExpertTransformer",
    "TwoExpertTransformerConfig",
]
