"""The LTX-2 model family (video VAE)."""
