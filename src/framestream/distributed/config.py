"""``ParallelConfig``: how a job spreads over the processes torchrun started (plain data, no torch.distributed).

This module imports only :mod:`framestream.config`, so lower floors (the pipeline config)
can carry a ``ParallelConfig`` without pulling in process groups.
"""

from __future__ import annotations

from dataclasses import field
from typing import Literal

from framestream.config import InstantiateConfig, config_dataclass

__all__ = ["ParallelConfig", "ContextParallelMode", "LatentStagePlacement"]

ContextParallelMode = Literal["ulysses", "ring", "hybrid"]
LatentStagePlacement = Literal["every_rank", "rank0"]


def _runtime_class() -> type:
    # Lazy: the runtime imports torch.distributed, the config must stay importable without it.
    from framestream.distributed.runtime import ParallelRuntime

    return ParallelRuntime


@config_dataclass
class ParallelConfig(InstantiateConfig):
    """Layout of a multi-process job; the default (one process) changes nothing.

    ``setup()`` builds a :class:`~framestream.distributed.runtime.ParallelRuntime` from the
    torchrun environment (``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``, ``MASTER_ADDR/PORT``).
    The world is ``cfg_degree x context_parallel_degree`` processes: ranks
    ``[i*cp, (i+1)*cp)`` form context-parallel group ``i``.
    """

    _target: type = field(default_factory=_runtime_class)
    context_parallel_degree: int | None = None
    """Processes sharing one DiT forward's tokens; ``None`` = world size / ``cfg_degree``."""
    mode: ContextParallelMode = "ulysses"
    """``ulysses``: all-to-all, heads split (degree must divide the head count); ``ring``: K/V
    blocks passed around a ring with an online softmax (any degree); ``hybrid``: Ulysses
    inside groups of ``ulysses_degree``, ring across them."""
    ulysses_degree: int | None = None
    """Hybrid only (required there): Ulysses group size, dividing the context-parallel degree and the head count."""
    cfg_parallel: bool = False
    """Run the conditional and unconditional CFG branches on different ranks (guided recipes; needs an even world)."""
    vae_tile_parallel: bool = True
    """Split the exact tiler's tile batches across all ranks (decode and encode) when world size > 1."""
    vae_head: LatentStagePlacement = "every_rank"
    """Decode: run the latent-resolution head on every rank (no traffic) or on rank 0 and broadcast its features."""
    vae_back: LatentStagePlacement = "rank0"
    """Encode: gather the stitched features to rank 0 and run the back there, or all-gather and run it everywhere."""
    collective_timeout_s: float = 120.0
    """A collective that waits longer than this fails on every rank (a dead or stuck rank never hangs the job).
    Used when ``setup()`` creates the process group; the CLI joins the group before reading any config and
    takes ``FRAMESTREAM_COLLECTIVE_TIMEOUT_S`` instead."""
    backend: Literal["auto", "nccl", "gloo"] = "auto"
    """``auto``: nccl on CUDA, gloo on CPU (like the timeout, read when ``setup()`` creates the group)."""

    def __post_init__(self) -> None:
        for name in ("context_parallel_degree", "ulysses_degree"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise ValueError(f"ParallelConfig.{name} must be None or an int >= 1, got {value!r}")
        if self.mode not in ("ulysses", "ring", "hybrid"):
            raise ValueError(f"ParallelConfig.mode must be 'ulysses', 'ring' or 'hybrid', got {self.mode!r}")
        for name in ("vae_head", "vae_back"):
            if getattr(self, name) not in ("every_rank", "rank0"):
                raise ValueError(f"ParallelConfig.{name} must be 'every_rank' or 'rank0', got {getattr(self, name)!r}")
        if self.backend not in ("auto", "nccl", "gloo"):
            raise ValueError(f"ParallelConfig.backend must be 'auto', 'nccl' or 'gloo', got {self.backend!r}")
        if not self.collective_timeout_s > 0:
            raise ValueError(f"ParallelConfig.collective_timeout_s must be > 0, got {self.collective_timeout_s}")

    @property
    def cfg_degree(self) -> int:
        return 2 if self.cfg_parallel else 1

    def degrees(self, world_size: int) -> tuple[int, int, int]:
        """``(cfg, ulysses, ring)`` degrees for ``world_size`` processes; raises a one-line ``ValueError`` if they do not fit."""
        cfg = self.cfg_degree
        if world_size % cfg:
            raise ValueError(f"cfg_parallel needs an even number of processes, got {world_size}")
        cp = self.context_parallel_degree or world_size // cfg
        if cfg * cp != world_size:
            raise ValueError(
                f"cfg degree {cfg} x context-parallel degree {cp} = {cfg * cp} processes, but torchrun started {world_size}"
            )
        if self.mode == "ulysses":
            return cfg, cp, 1
        if self.mode == "ring":
            return cfg, 1, cp
        u = self.ulysses_degree
        if u is None:
            raise ValueError("mode 'hybrid' needs ulysses_degree (the Ulysses group size; the ring spans the rest)")
        if cp % u:
            raise ValueError(f"hybrid: ulysses_degree {u} must divide the context-parallel degree {cp}")
        return cfg, u, cp // u
