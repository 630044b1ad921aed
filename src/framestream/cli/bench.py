"""``framestream bench``: the benchmark suite (same options as ``python -m framestream.bench``).

Examples::

    framestream bench --quick
    framestream bench --scenario decode_tiled --scenario roofline --repeats 5
    framestream bench --results-dir bench/results

Every case runs in a fresh process, implementations alternated; results go to
``<results-dir>/<scenario>.json``, ``RESULTS.md`` and PNG plots. See bench/README.md.
"""

from __future__ import annotations

import argparse

__all__ = ["register", "run"]


def register(subparsers: argparse._SubParsersAction) -> None:
    from framestream.bench import add_arguments

    parser = subparsers.add_parser(
        "bench",
        help="benchmark the Wan VAE decode/encode (tiled, streaming) against diffusers",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    add_arguments(parser)
    parser.set_defaults(func=run)


def run(args: argparse.Namespace) -> int:
    from framestream.bench.scenarios import run_suite

    return run_suite(args)
