"""Wan 2.1 / 2.2 model family (VAE, transformer)."""
