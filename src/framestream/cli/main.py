"""``framestream`` command line: one sub-command per module in :mod:`framestream.cli`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; returns an exit code).
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import sys

__all__ = ["main", "build_parser"]

# Modules are imported lazily by name so a command's heavy imports never slow the others.
COMMAND_MODULES = ("demo", "decode", "encode", "encode_dataset", "generate", "bench")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="framestream",
        description="Streaming video diffusion inference and memory-bounded Wan VAE encode/decode.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"framestream.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return 2
    if extra and not getattr(args, "accepts_overrides", False):
        parser.error(f"unrecognized arguments: {' '.join(extra)}")
    args.overrides = extra
    from framestream.distributed.launch import PeerFailedError, run_command

    try:
        return int(run_command(args) or 0)  # one process, or a torchrun rank (see framestream.distributed.launch)
    except (ValueError, FileNotFoundError, KeyError, PermissionError, PeerFailedError) as err:
        # Bad input is reported as one clear line, not a traceback.
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        print(f"framestream {args.command}: error: {message}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
