"""Multi-process inference: process groups, context-parallel Wan DiT, tile-parallel exact VAE.

Import the pieces from their modules (``framestream.distributed.runtime``,
``.wan_dit``, ``.vae``, ``.local``); this package root stays light so that configs can
carry a :class:`ParallelConfig` without importing ``torch.distributed``.
"""

from framestream.distributed.config import ParallelConfig

__all__ = ["ParallelConfig"]
