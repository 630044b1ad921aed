"""One error path for every command: any failure is one plain line on stderr and a distinct exit code.

=====  ==========================================================================
code   meaning
=====  ==========================================================================
0      success
1      a runtime failure (full disk, a model error, some dataset items failed)
2      bad input (a missing or unreadable file, a wrong option, an existing output)
130    interrupted by Ctrl-C (SIGINT)
143    terminated (SIGTERM)
=====  ==========================================================================

No traceback is printed unless ``-v`` is given. Outputs are all or nothing
(:mod:`framestream.io.atomic`), so a failure or an interrupt leaves no partial file.
"""

from __future__ import annotations

import contextlib
import signal
import sys
import threading
import traceback
import warnings
from collections.abc import Iterator
from typing import Any, TextIO

__all__ = [
    "EXIT_BAD_INPUT",
    "EXIT_FAILURE",
    "EXIT_INTERRUPTED",
    "EXIT_TERMINATED",
    "Terminated",
    "exit_code_and_message",
    "one_line",
    "report_failure",
    "signals_as_exceptions",
    "warnings_as_lines",
]

EXIT_FAILURE = 1
EXIT_BAD_INPUT = 2
EXIT_INTERRUPTED = 128 + signal.SIGINT  # 130, as a shell reports a Ctrl-C
EXIT_TERMINATED = 128 + signal.SIGTERM  # 143

BAD_INPUT = (ValueError, FileNotFoundError, FileExistsError, KeyError, PermissionError, IsADirectoryError, NotADirectoryError, NotImplementedError)
"""Exceptions that mean the user asked for something that cannot be done as asked."""

MAX_MESSAGE = 1000
"""Messages of unexpected errors are cut here (ours are complete sentences, never cut)."""


class Terminated(BaseException):
    """Raised in the main thread on SIGTERM, so every ``finally`` / clean-up runs as for Ctrl-C."""


def one_line(text: Any, limit: int | None = None) -> str:
    """``text`` on one line (newlines and runs of spaces collapsed), cut at ``limit`` characters."""
    line = " ".join(str(text).split())
    return line if limit is None or len(line) <= limit else line[: limit - 1] + "…"


def exit_code_and_message(err: BaseException) -> tuple[int, str]:
    """The exit code for ``err`` and the line that explains it (without the ``framestream CMD:`` prefix)."""
    from framestream.io.atomic import DiskFullError  # here: importing framestream.io pulls in torch
    if isinstance(err, KeyboardInterrupt):
        return EXIT_INTERRUPTED, "interrupted (Ctrl-C); unfinished output was discarded, run the command again to redo it"
    if isinstance(err, Terminated):
        return EXIT_TERMINATED, "terminated (SIGTERM); unfinished output was discarded, run the command again to redo it"
    if isinstance(err, DiskFullError):
        return EXIT_FAILURE, f"error: {one_line(err)}"
    if isinstance(err, BAD_INPUT):
        message = err.args[0] if isinstance(err, KeyError) and err.args else err
        return EXIT_BAD_INPUT, f"error: {one_line(message)}"
    if isinstance(err, MemoryError):
        return EXIT_FAILURE, "error: out of memory; use a smaller --chunk, --tile-size or --tile-size auto --memory-budget"
    text = one_line(err, MAX_MESSAGE)
    if "out of memory" in text.lower():
        return EXIT_FAILURE, f"error: out of memory ({text}); use a smaller --chunk, --tile-size or --tile-size auto --memory-budget"
    return EXIT_FAILURE, f"error: {type(err).__name__}: {text} (run with -v for the traceback)"


def report_failure(command: str, err: BaseException, verbose: bool, stream: TextIO | None = None) -> int:
    """Print the failure (traceback first with ``verbose``) and return its exit code."""
    stream = stream or sys.stderr
    code, message = exit_code_and_message(err)
    if verbose:
        traceback.print_exception(type(err), err, err.__traceback__, file=stream)
    print(f"framestream {command}: {message}", file=stream, flush=True)
    return code


def _raise_terminated(signum: int, frame: Any) -> None:
    raise Terminated()


@contextlib.contextmanager
def signals_as_exceptions() -> Iterator[None]:
    """SIGTERM raises :class:`Terminated` (and SIGINT ``KeyboardInterrupt``) while the block runs.

    Only in the main thread (where Python delivers signals); the previous handlers are
    restored afterwards, so an in-process caller keeps its own.
    """
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = {sig: signal.getsignal(sig) for sig in (signal.SIGTERM, signal.SIGINT)}
    signal.signal(signal.SIGTERM, _raise_terminated)
    if previous[signal.SIGINT] in (signal.SIG_DFL, None):
        signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        yield
    finally:
        for sig, handler in previous.items():
            if handler is not None:
                signal.signal(sig, handler)


@contextlib.contextmanager
def warnings_as_lines(command: str, stream: TextIO | None = None) -> Iterator[None]:
    """Python warnings as one ``framestream CMD: warning: ...`` line each (restored afterwards)."""

    def show(message: Any, category: type, filename: str, lineno: int, file: Any = None, line: Any = None) -> None:
        print(f"framestream {command}: warning: {one_line(message)}", file=stream or sys.stderr, flush=True)

    with warnings.catch_warnings():
        warnings.showwarning = show
        yield
