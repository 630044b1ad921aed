"""Atomic file writes: a reader never sees half a file, a killed job leaves no partial output."""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Iterator
from pathlib import Path

__all__ = ["atomic_path", "check_writable", "remove_stale_partials"]


def _current_umask() -> int:
    """The process umask, read without changing it (os.umask would race with other threads)."""
    try:
        with open("/proc/self/status") as handle:
            for line in handle:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except OSError:
        pass
    return 0o022


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary name is ``.<name>.<random>.partial``: hidden, and never matching a
    scan for the real suffix, so a killed writer's leftovers are never mistaken for
    output (:func:`remove_stale_partials` cleans them). Writers that choose a format
    by suffix must be told the format explicitly. On an exception the temporary file
    is removed and ``final_path`` is left as it was.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=".partial", dir=final_path.parent)
    # mkstemp creates 0600; published files get the usual 0666 & ~umask.
    os.fchmod(fd, 0o666 & ~_current_umask())
    os.close(fd)
    tmp_path = Path(tmp_name)
    try:
        yield tmp_path
        os.replace(tmp_path, final_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise


def check_writable(path: str | Path) -> Path:
    """Raise ``PermissionError`` now (before any work) if ``path`` cannot be created."""
    path = Path(path)
    parent = path.parent if str(path.parent) else Path(".")
    probe_dir = parent
    while not probe_dir.exists():
        probe_dir = probe_dir.parent
    if not probe_dir.is_dir() or not os.access(probe_dir, os.W_OK | os.X_OK):
        raise PermissionError(f"output path not writable: {path} ({probe_dir} is not a writable directory)")
    if path.exists() and (path.is_dir() or not os.access(path, os.W_OK)):
        raise PermissionError(f"output path not writable: {path}")
    return path


def remove_stale_partials(final_path: str | Path) -> int:
    """Delete temporary files a killed :func:`atomic_path` left for ``final_path``; returns the count."""
    final_path = Path(final_path)
    if not final_path.parent.is_dir():
        return 0
    stale = list(final_path.parent.glob(f".{final_path.name}.*.partial"))
    for path in stale:
        path.unlink(missing_ok=True)
    return len(stale)
