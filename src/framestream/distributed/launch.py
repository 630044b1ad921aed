"""Run a ``framestream`` command under torchrun: join the job first, then guard the command.

``torchrun --nproc-per-node N -m framestream generate | decode | encode ...`` takes the
same flags as one process. With ``WORLD_SIZE > 1`` every rank joins the process group
*before* any input is checked, so that bad input on one rank (or an exception in one
rank's forward) ends the job on every rank with that error
(:meth:`~framestream.distributed.runtime.ProcessWorld.guard`), never a hang.
``FRAMESTREAM_COLLECTIVE_TIMEOUT_S`` bounds every collective (default 120 s).
"""

from __future__ import annotations

import argparse
import os
from typing import Any

from framestream.distributed.runtime import PeerFailedError, ProcessWorld, world_size_from_env

__all__ = ["run_command", "PeerFailedError", "DEFAULT_TIMEOUT_S", "PARALLEL_COMMANDS"]

DEFAULT_TIMEOUT_S = 120.0
PARALLEL_COMMANDS = frozenset({"generate", "decode", "encode"})
"""Commands whose ranks cooperate on one output (the others, e.g. ``encode-dataset``, shard by rank on their own)."""


def run_command(args: argparse.Namespace) -> Any:
    """``args.func(args)``; under torchrun with ``args.world`` set to this rank's :class:`ProcessWorld`."""
    if world_size_from_env() == 1 or args.command not in PARALLEL_COMMANDS:
        args.world = None  # encode-dataset shards videos by RANK itself, with no collective to wait on
        return args.func(args)
    timeout = float(os.environ.get("FRAMESTREAM_COLLECTIVE_TIMEOUT_S", DEFAULT_TIMEOUT_S))
    device = getattr(args, "device", None) or "auto"
    world = ProcessWorld(timeout_s=timeout, device=device)
    args.world = world
    with world.guard():
        result = args.func(args)
        world.barrier()  # nobody leaves (and tears down the group) while a peer still needs it
        return result
