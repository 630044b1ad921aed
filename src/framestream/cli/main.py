"""``framestream`` command line: one sub-command per module in :mod:`framestream.cli`.

Each command module defines ``register(subparsers)``, which adds its parser and sets
``func`` (called with the parsed namespace; returns an exit code). Every failure goes
through :mod:`framestream.cli.errors`: one line on stderr, exit code 2 (bad input),
1 (runtime failure), 130 (Ctrl-C) or 143 (SIGTERM); ``-v`` (anywhere) adds the traceback.
"""

from __future__ import annotations

import argparse
import importlib
import importlib.util
import logging
import re
import sys
from typing import NoReturn

from framestream.cli.errors import EXIT_BAD_INPUT, report_failure, signals_as_exceptions, warnings_as_lines

__all__ = ["main", "build_parser", "plain_text"]

# Modules are imported lazily by name so a command's heavy imports never slow the others.
COMMAND_MODULES = ("demo", "decode", "encode", "encode_dataset", "generate", "bench")


class OneLineArgumentParser(argparse.ArgumentParser):
    """Usage errors as one line (``framestream decode: error: ...``), exit code 2."""

    def error(self, message: str) -> NoReturn:
        self.exit(EXIT_BAD_INPUT, f"{self.prog}: error: {' '.join(message.split())} (see {self.prog} --help)\n")


def plain_text(text: str | None) -> str | None:
    """Help text without reStructuredText markup (double backticks, roles, ``Examples::``)."""
    if not text:
        return text
    text = re.sub(r":\w+:`~?([^`]+)`", r"\1", text)  # :func:`x` -> x
    text = text.replace("``", "")
    return re.sub(r"(\S)::$", r"\1:", text, flags=re.MULTILINE)


def _finish_subparser(parser: argparse.ArgumentParser) -> None:
    """-v after the command too, and help texts as plain text."""
    parser.add_argument("-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help="show tracebacks and debug messages")
    parser.description = plain_text(parser.description)
    parser.epilog = plain_text(parser.epilog)
    for action in parser._actions:
        action.help = plain_text(action.help)


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineArgumentParser(
        prog="framestream",
        description="Streaming video diffusion inference and memory-bounded Wan VAE encode/decode.",
        epilog="Exit codes: 0 success, 1 runtime failure, 2 bad input, 130 Ctrl-C, 143 SIGTERM. "
        "-v (anywhere) shows tracebacks.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="show tracebacks and debug messages")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name in COMMAND_MODULES:
        module_name = f"framestream.cli.{name}"
        if importlib.util.find_spec(module_name) is None:
            continue
        importlib.import_module(module_name).register(subparsers)
    for subparser in subparsers.choices.values():
        _finish_subparser(subparser)
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    try:
        args, extra = parser.parse_known_args(argv)
    except SystemExit as done:  # --help, or a usage error already printed as one line
        return int(done.code or 0)
    logging.basicConfig(
        level=logging.DEBUG if args.verbose else logging.INFO,
        format="%(levelname)s %(name)s: %(message)s",
    )
    if args.command is None:
        parser.print_help()
        return EXIT_BAD_INPUT
    if extra and not getattr(args, "accepts_overrides", False):
        print(f"framestream {args.command}: error: unrecognized arguments: {' '.join(extra)} "
              f"(see framestream {args.command} --help)", file=sys.stderr)
        return EXIT_BAD_INPUT
    args.overrides = extra
    try:
        with signals_as_exceptions(), warnings_as_lines(args.command):
            return int(args.func(args) or 0)
    except BaseException as err:  # noqa: BLE001 - every failure becomes one line and an exit code
        if isinstance(err, SystemExit):
            raise
        return report_failure(args.command, err, args.verbose)


if __name__ == "__main__":
    sys.exit(main())
