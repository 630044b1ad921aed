"""Build a streaming pipeline for this rank of a torchrun job (``framestream generate``)."""

from __future__ import annotations

import logging
from typing import Any

from framestream.distributed.runtime import ParallelRuntime, ProcessWorld
from framestream.distributed.wan_dit import attach_wan_parallel

__all__ = ["setup_parallel_pipeline"]

logger = logging.getLogger(__name__)


def setup_parallel_pipeline(config: Any, world: ProcessWorld) -> Any:
    """``config.setup()`` on this rank's device, its Wan DiT on the groups ``config.parallel`` asks for.

    Every rank draws the same noise (same seed, full latent) and runs the scheduler on the
    full latent, so all ranks stay identical and equal to one process; the DiT forward is
    what is split (tokens, CFG branches). The VAE decode of the pipeline runs on every rank
    (only rank 0 writes). Logs the layout line (rank 0 only).
    """
    runtime = ParallelRuntime(config.parallel, world)
    pipeline = config.setup().to(world.device).eval()
    attach_wan_parallel(pipeline.diffusion_model.transformer, runtime)
    logger.info(runtime.layout("decode replicated on every rank (rank 0 writes)"))
    return pipeline
