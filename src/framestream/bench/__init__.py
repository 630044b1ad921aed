"""Benchmark suite: framestream's Wan VAE against diffusers, in fresh processes, alternated.

Run ``python -m framestream.bench [--quick] [--scenario NAME ...]`` or
``framestream bench ...``; see bench/README.md. Modules: :mod:`.harness` (subprocess
runs, alternation, errors), :mod:`.worker` (one case in one process), :mod:`.cases`
(the case functions), :mod:`.scenarios` (settings and the suite), :mod:`.roofline`
(FLOP counting), :mod:`.report` (JSON, markdown, plots). Kept import-light: the worker
imports this package in every run.
"""

from __future__ import annotations

import argparse
from pathlib import Path

__all__ = ["SCENARIO_NAMES", "add_arguments"]

SCENARIO_NAMES = (
    "decode_untiled", "decode_tiled", "encode_tiled", "stream_memory", "roofline", "distributed",
    "ltx2_decode_tiled", "ltx2_encode_tiled",
)
"""Suite order (each defined in :mod:`framestream.bench.scenarios`)."""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """The suite's options, shared by ``python -m framestream.bench`` and ``framestream bench``."""
    parser.add_argument("--quick", action="store_true", help="small sizes, 2 repeats: a few minutes on a 2-core CPU")
    parser.add_argument("--scenario", action="append", choices=SCENARIO_NAMES, metavar="NAME",
                        help=f"run only this scenario (repeatable): {', '.join(SCENARIO_NAMES)}")
    parser.add_argument("--repeats", type=int, default=None, help="runs per case (default: 2 quick, 3 CPU, 5 CUDA)")
    parser.add_argument("--results-dir", type=Path, default=None,
                        help="where the JSON, RESULTS.md and PNGs go (default: bench/results; --quick: bench/results/quick)")
    parser.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="device of the cases (default: auto)")
    parser.add_argument("--threads", type=int, default=None, help="torch threads in every case process (default: torch's)")
    parser.add_argument("--timeout", type=float, default=900, help="seconds one case run may take (default: 900)")
