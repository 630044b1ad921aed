"""framestream: streaming video diffusion inference with memory-bounded Wan VAE encode/decode."""

__version__ = "0.1.0"
