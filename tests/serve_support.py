"""Test helpers: the tiny demo server used by the serve tests."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from framestream.serve.launch import ServerProcess, launched_server, wait_until

__all__ = ["serve", "wait_until", "TINY_DEMO"]

# Small demo frames (64x64 px) and one torch thread keep the tests cheap on two cores.
TINY_DEMO = ("--threads", "1", "--diffusion-model.transformer.height", "8", "--diffusion-model.transformer.width", "8")


@contextlib.contextmanager
def serve(*args: str) -> Iterator[ServerProcess]:
    """``framestream serve demo`` (tiny) on a free loopback port; always killed afterwards."""
    with launched_server("demo", *TINY_DEMO, *args) as server:
        yield server
