"""What every VAE job item shares: the VAE version, precision, chunking, tiling, device and output policy."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any, ClassVar

import torch

from framestream.tiling.planner import TilingConfig

__all__ = ["VaeJobOptions"]


@dataclass(frozen=True)
class VaeJobOptions:
    """Options shared by :class:`DecodeOptions` and :class:`EncodeOptions` (one set per job, all items)."""

    HALF: ClassVar[str] = ""
    """``load_vae`` keyword of the VAE half the job needs (``include_decoder`` / ``include_encoder``)."""

    version: str
    """Wan VAE version, ``"2.1"`` or ``"2.2"``."""
    dtype: torch.dtype = torch.float32
    """Compute dtype: the job's input is cast to it explicitly (the VAE computes in its input's dtype)."""
    chunk_size: int = 1
    """Latent frames per VAE call."""
    tiling: TilingConfig | None = None
    """Exact spatial tiling; ``None``: untiled."""
    tile_order: str = "frame"
    """``"frame"`` (streamed) or ``"tile"`` (tile-major, lowest memory)."""
    offload_caches: bool = False
    """Frame order: keep idle tile caches in pinned host memory (CUDA; exact, slower)."""
    device: torch.device = torch.device("cpu")
    overwrite: bool = False
    """Replace an existing output (else it is refused)."""
    progress: bool = True
    """Show a progress bar (only on a terminal)."""
    weights_dtype: torch.dtype | None = None
    """Dtype the weights are loaded in (``None``: ``dtype``)."""

    def load_vae(self, checkpoint: str | Path) -> Any:
        """Check ``checkpoint`` from its headers and load the half this job needs, on ``device``."""
        from framestream.jobs.vae import load_vae

        weights = self.weights_dtype or self.dtype
        return load_vae(checkpoint, self.version, weights_dtype=weights, device=self.device, **{self.HALF: True})
