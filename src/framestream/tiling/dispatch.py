"""One set of exact-tiling entry points for every VAE family: Wan and LTX-2.

``framestream.tiling.decode_tiled(vae, z, TilingConfig(...))`` / ``encode_tiled(vae, x, ...)`` /
``iter_decode_tiled`` pick the family from the model: an :class:`~framestream.models.ltx2.vae.LTX2VAE`
goes to :mod:`framestream.tiling.ltx2_exact`, anything else to :mod:`framestream.tiling.wan_exact`
(which keeps its own checks and messages). Family-specific keywords pass through unchanged.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import torch

from framestream.models.ltx2.vae.model import LTX2VAE
from framestream.tiling import ltx2_exact, wan_exact

__all__ = ["decode_tiled", "encode_tiled", "iter_decode_tiled"]


def decode_tiled(vae: Any, z: torch.Tensor, tiling: Any = None, **kwargs: Any) -> torch.Tensor:
    """Exact tiled decode (see :func:`framestream.tiling.wan_exact.decode_tiled` /
    :func:`framestream.tiling.ltx2_exact.decode_tiled_ltx2`)."""
    if isinstance(vae, LTX2VAE):
        return ltx2_exact.decode_tiled_ltx2(vae, z, tiling, **kwargs)
    return wan_exact.decode_tiled(vae, z, tiling, **kwargs)


def iter_decode_tiled(vae: Any, z: torch.Tensor, tiling: Any = None, **kwargs: Any) -> Iterator[tuple[torch.Tensor, int]]:
    """Exact tiled decode yielding ``(frames, start)`` as frames become final."""
    if isinstance(vae, LTX2VAE):
        return ltx2_exact.iter_decode_tiled_ltx2(vae, z, tiling, **kwargs)
    return wan_exact.iter_decode_tiled(vae, z, tiling, **kwargs)


def encode_tiled(vae: Any, x: torch.Tensor, tiling: Any = None, **kwargs: Any) -> Any:
    """Exact tiled encode returning the posterior mean (or ``(mean, logvar)`` with ``return_logvar``)."""
    if isinstance(vae, LTX2VAE):
        return ltx2_exact.encode_tiled_ltx2(vae, x, tiling, **kwargs)
    return wan_exact.encode_tiled(vae, x, tiling, **kwargs)
