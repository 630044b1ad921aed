"""Start a small local process group on 127.0.0.1 (tests, ``framestream bench --scenario distributed``).

:func:`run_local_group` spawns ``world_size`` processes with the torchrun environment
variables set, runs ``fn(rank, *args)`` in each and returns every rank's result (or
every rank's error). The parent hosts the rendezvous store, as torchrun's agent does, so
it outlives any rank. Everything is bounded by ``timeout_s``: stragglers are killed.
"""

from __future__ import annotations

import io
import multiprocessing as mp
import os
import queue
import socket
import time
import traceback
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import torch

__all__ = ["run_local_group", "free_port", "LocalGroupError"]


class LocalGroupError(RuntimeError):
    """Some rank of a local group failed or timed out; ``errors`` maps rank -> message."""

    def __init__(self, message: str, errors: dict[int, str], results: dict[int, Any]) -> None:
        super().__init__(message)
        self.errors = errors
        self.results = results


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free right now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _worker(rank: int, world_size: int, port: int, fn: Callable, args: tuple, results: Any, env: dict[str, str]) -> None:
    os.environ.update(env)
    os.environ.update(
        RANK=str(rank),
        LOCAL_RANK=str(rank),
        WORLD_SIZE=str(world_size),
        LOCAL_WORLD_SIZE=str(world_size),
        MASTER_ADDR="127.0.0.1",
        MASTER_PORT=str(port),
        TORCHELASTIC_USE_AGENT_STORE="True",
    )
    if "OMP_NUM_THREADS" in env:  # torch was imported (unpickling fn) before the variable was set
        torch.set_num_threads(int(env["OMP_NUM_THREADS"]))
    try:
        # Serialised to bytes: torch's queue pickling would share tensors through this (exiting) process.
        buffer = io.BytesIO()
        torch.save(fn(rank, *args), buffer)
        results.put((rank, True, buffer.getvalue()))
    except BaseException as error:  # reported to the parent, which raises
        results.put((rank, False, f"{type(error).__name__}: {error}\n{traceback.format_exc()}"))


def run_local_group(
    fn: Callable[..., Any],
    world_size: int,
    args: tuple = (),
    *,
    timeout_s: float = 60.0,
    env: dict[str, str] | None = None,
    allow_errors: bool = False,
    grace_s: float = 10.0,
) -> dict[int, Any]:
    """Run ``fn(rank, *args)`` on ``world_size`` spawned processes; ``{rank: result}``.

    ``fn`` must be importable (a module-level function). With ``allow_errors`` a failed rank's
    entry is its error text and nothing is raised unless a rank timed out. As torchrun does,
    once a rank has failed the others get ``grace_s`` to finish, then are killed (their
    entry says so).
    """
    import torch.distributed as dist

    port = free_port()
    store = dist.TCPStore("127.0.0.1", port, world_size + 1, is_master=True, timeout=timedelta(seconds=timeout_s), wait_for_workers=False)
    ctx = mp.get_context("spawn")
    results = ctx.Queue()
    env = {"OMP_NUM_THREADS": "1", **(env or {})}
    procs = [ctx.Process(target=_worker, args=(r, world_size, port, fn, args, results, env), daemon=True) for r in range(world_size)]
    for p in procs:
        p.start()
    done: dict[int, Any] = {}
    errors: dict[int, str] = {}
    deadline = time.monotonic() + timeout_s
    first_error = float("inf")
    try:
        while len(done) + len(errors) < world_size:
            if errors:
                deadline = min(deadline, first_error + grace_s)
            left = deadline - time.monotonic()
            if left <= 0:
                break
            try:
                rank, ok, value = results.get(timeout=min(left, 0.5))
            except queue.Empty:
                # A rank that died without reporting (killed, segfault) counts as failed.
                for r, p in enumerate(procs):
                    if not p.is_alive() and r not in done and r not in errors and p.exitcode not in (0, None):
                        errors[r] = f"exited with code {p.exitcode}"
                        first_error = min(first_error, time.monotonic())
                continue
            if ok:
                done[rank] = torch.load(io.BytesIO(value), weights_only=False)
            else:
                errors[rank] = value
                first_error = min(first_error, time.monotonic())
    finally:
        for p in procs:
            p.join(timeout=max(0.1, min(5.0, deadline - time.monotonic())))
        for r, p in enumerate(procs):
            if p.is_alive():
                p.kill()
                p.join(timeout=5)
                if errors and r not in done and r not in errors:
                    errors[r] = f"killed {grace_s:g} s after rank {min(errors)} failed"
        del store
    missing = [r for r in range(world_size) if r not in done and r not in errors]
    if missing:
        raise LocalGroupError(f"ranks {missing} did not finish within {timeout_s:g} s", errors, done)
    if errors and not allow_errors:
        first = min(errors)
        raise LocalGroupError(f"rank {first} failed: {errors[first]}", errors, done)
    return {**done, **errors}
