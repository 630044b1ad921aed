"""Process groups from the torchrun environment, rank-0 output, and failure propagation.

:class:`ProcessWorld` joins the job (``init_process_group``: nccl on CUDA, gloo on CPU,
with a collective timeout) and holds the rendezvous store; :class:`ParallelRuntime` (built
by :meth:`ParallelConfig.setup`) cuts the world into CFG, context-parallel, Ulysses and
ring groups. One process (no ``WORLD_SIZE`` or ``WORLD_SIZE=1``) builds no group at all.

A failing rank must end the job on every rank, never hang it: :meth:`ProcessWorld.guard`
wraps a command; the rank that raises writes its error to the store and leaves (its
sockets close, so peers blocked in a collective fail at once; a stuck rank is bounded by
the collective timeout), and the peers re-raise that error as :class:`PeerFailedError`.
"""

from __future__ import annotations

import logging
import os
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import timedelta

import torch
import torch.distributed as dist

from framestream.distributed.comm import CommStats, RankGroup
from framestream.distributed.config import ParallelConfig

__all__ = ["ProcessWorld", "ParallelRuntime", "PeerFailedError", "world_size_from_env"]

logger = logging.getLogger(__name__)

_ERROR_KEY = "framestream/failed"


class PeerFailedError(RuntimeError):
    """Another rank of the job failed; the message carries its rank and error."""


def world_size_from_env() -> int:
    """``WORLD_SIZE`` set by torchrun (1 when absent)."""
    value = os.environ.get("WORLD_SIZE", "1")
    try:
        return int(value)
    except ValueError:
        raise ValueError(f"WORLD_SIZE must be an int, got {value!r}") from None


class _RankZeroFilter(logging.Filter):
    def __init__(self, rank: int) -> None:
        super().__init__()
        self.rank = rank

    def filter(self, record: logging.LogRecord) -> bool:
        # Warnings and errors of every rank still show: they say which rank went wrong.
        return self.rank == 0 or record.levelno >= logging.WARNING


class ProcessWorld:
    """This process's place in the job: rank, world size, device, default group, store.

    Built from the torchrun variables ``RANK``, ``WORLD_SIZE``, ``LOCAL_RANK``,
    ``MASTER_ADDR``, ``MASTER_PORT``. ``device='auto'`` takes ``cuda:LOCAL_RANK`` when CUDA
    is there, else CPU; the backend follows (nccl / gloo) unless given.
    """

    def __init__(self, *, timeout_s: float = 120.0, backend: str = "auto", device: str | torch.device = "auto") -> None:
        self.world_size = world_size_from_env()
        self.rank = int(os.environ.get("RANK", "0"))
        self.local_rank = int(os.environ.get("LOCAL_RANK", "0"))
        self.timeout_s = float(timeout_s)
        if device == "auto":
            device = f"cuda:{self.local_rank}" if torch.cuda.is_available() else "cpu"
        elif torch.device(device).type == "cuda" and self.world_size > 1:
            device = f"cuda:{self.local_rank}"  # one GPU per rank, whatever index was asked for
        self.device = torch.device(device)
        if backend == "auto":
            backend = "nccl" if self.device.type == "cuda" else "gloo"
        self.backend = backend
        self.store: dist.Store | None = None
        self.owns_group = False
        self._log_filter: _RankZeroFilter | None = None
        if self.world_size == 1:
            return
        if self.device.type == "cuda":
            torch.cuda.set_device(self.device)
        host = os.environ.get("MASTER_ADDR", "127.0.0.1")
        port = int(os.environ.get("MASTER_PORT", "29500"))
        timeout = timedelta(seconds=self.timeout_s)
        # torchrun's agent hosts the store; without it (a hand-made launch), rank 0 does.
        agent_store = os.environ.get("TORCHELASTIC_USE_AGENT_STORE", "").lower() == "true"
        self.store = dist.TCPStore(host, port, self.world_size, is_master=self.rank == 0 and not agent_store, timeout=timeout)
        if not dist.is_initialized():
            dist.init_process_group(self.backend, store=self.store, rank=self.rank, world_size=self.world_size, timeout=timeout)
            self.owns_group = True
        self._log_filter = _RankZeroFilter(self.rank)
        for handler in logging.getLogger().handlers:
            handler.addFilter(self._log_filter)

    @property
    def is_main(self) -> bool:
        """Rank 0: the only rank that logs progress and writes files."""
        return self.rank == 0

    def group(self, ranks: list[int] | tuple[int, ...]) -> RankGroup:
        """A :class:`RankGroup` over ``ranks``. Every rank must call this for every group, in the same order."""
        ranks = tuple(ranks)
        handle = None  # one rank: no traffic; every rank: the default group (no extra communicator)
        if 1 < len(ranks) < self.world_size:
            handle = dist.new_group(list(ranks), timeout=timedelta(seconds=self.timeout_s))
        index = ranks.index(self.rank) if self.rank in ranks else -1
        return RankGroup(handle, ranks, index)

    # ------------------------------------------------------------------ failures
    def report_failure(self, error: BaseException) -> None:
        """Leave this rank's error where the peers find it (first writer wins)."""
        if self.store is None:
            return
        try:
            self.store.compare_set(_ERROR_KEY, "", f"rank {self.rank}: {type(error).__name__}: {error}")
        except Exception:  # the store may be gone with rank 0; the peers then time out instead
            logger.debug("could not publish rank %d's failure", self.rank, exc_info=True)

    def peer_error(self, wait_s: float = 2.0) -> str | None:
        """The error a peer published, waiting up to ``wait_s`` for it to appear."""
        if self.store is None:
            return None
        deadline = time.monotonic() + wait_s
        while True:
            try:
                if self.store.check([_ERROR_KEY]):
                    return self.store.get(_ERROR_KEY).decode()
            except Exception:
                return None
            if time.monotonic() >= deadline:
                return None
            time.sleep(0.05)

    @contextmanager
    def guard(self) -> Iterator["ProcessWorld"]:
        """Run a command so that a failure on any rank ends it on every rank with that error."""
        try:
            yield self
        except PeerFailedError:
            raise
        except BaseException as error:
            if self.world_size == 1:
                raise
            # A collective that broke under us: did a peer fail first (its sockets closed)?
            message = self.peer_error(wait_s=2.0) if isinstance(error, RuntimeError) else None
            if message is not None and not message.startswith(f"rank {self.rank}:"):
                raise PeerFailedError(message) from error
            self.report_failure(error)
            raise
        finally:
            self.close()

    def barrier(self) -> None:
        if self.world_size > 1:
            dist.barrier()

    def close(self) -> None:
        """Leave the job (destroys the default group if this world created it)."""
        if self._log_filter is not None:
            for handler in logging.getLogger().handlers:
                handler.removeFilter(self._log_filter)
            self._log_filter = None
        if self.owns_group and dist.is_initialized():
            dist.destroy_process_group()
        self.owns_group = False


class ParallelRuntime:
    """The groups a :class:`ParallelConfig` asks for, over a :class:`ProcessWorld`.

    World rank ``r`` is CFG branch ``r // cp`` and context-parallel rank ``r % cp``; inside
    a context-parallel group, Ulysses groups are ``ulysses_degree`` consecutive ranks
    (on one node: all-to-all wants the fastest links) and the ring spans them.
    """

    def __init__(self, config: ParallelConfig, world: ProcessWorld | None = None, device: str = "auto") -> None:
        self.config = config
        if world is None:
            world = ProcessWorld(timeout_s=config.collective_timeout_s, backend=config.backend, device=device)
        self.world = world
        w, r = self.world.world_size, self.world.rank
        self.cfg_degree, self.ulysses_degree, self.ring_degree = config.degrees(w)
        self.cp_degree = self.ulysses_degree * self.ring_degree
        self.stats = CommStats()
        cp, u = self.cp_degree, self.ulysses_degree
        # Every rank creates every group, in the same order (new_group is collective).
        cp_groups = [self.world.group(range(i * cp, (i + 1) * cp)) for i in range(self.cfg_degree)]
        cfg_groups = [self.world.group(range(j, w, cp)) for j in range(cp)]
        uly_groups = [self.world.group(range(s, s + u)) for s in range(0, w, u)]
        ring_groups = [
            self.world.group([i * cp + q * u + j for q in range(self.ring_degree)])
            for i in range(self.cfg_degree)
            for j in range(u)
        ]
        self.all = self.world.group(range(w))
        self.cp = cp_groups[r // cp]
        self.cfg = cfg_groups[r % cp]
        self.ulysses = uly_groups[r // u]
        self.ring = next(g for g in ring_groups if r in g.ranks)

    @property
    def world_size(self) -> int:
        return self.world.world_size

    @property
    def rank(self) -> int:
        return self.world.rank

    @property
    def is_main(self) -> bool:
        return self.world.is_main

    @property
    def device(self) -> torch.device:
        return self.world.device

    @property
    def distributed(self) -> bool:
        return self.world.world_size > 1

    def layout(self, vae_split: str | None = None, dit: bool = True) -> str:
        """One line stating the layout (printed by rank 0 at start-up); ``dit=False`` for VAE-only jobs."""
        c = self.config
        parts = [f"{self.world_size} process(es) ({self.world.backend}, {self.device.type})"]
        if dit:
            parts += [
                f"context-parallel {self.cp_degree} ({c.mode}: ulysses {self.ulysses_degree} x ring {self.ring_degree})",
                f"cfg-parallel {self.cfg_degree}",
            ]
        if vae_split:
            parts.append(f"VAE {vae_split}")
        return "framestream parallel layout: " + ", ".join(parts)

    def close(self) -> None:
        self.world.close()
