"""All-or-nothing outputs: a reader never sees half a file or folder, a failed run leaves nothing.

Every output (file or folder) is built under a hidden temporary name beside its target,
``.<name>.<random>.partial``, and published by one rename when it is complete; on an
error or an interrupt the temporary is removed and the target is left as it was.

- :func:`atomic_path` / :func:`atomic_dir`: the temporary path of a file / folder output;
- :func:`remove_stale_partials`: the temporaries a killed run (SIGKILL, power loss) left
  for a target, removed by the next run for it (a live writer's, locked, are kept);
- :func:`check_writable`, :func:`check_new_output`, :func:`check_free_space`: checks
  that run before any work;
- :class:`DiskFullError`: ENOSPC / EFBIG / EDQUOT while writing, with the output's name.

Published files get mode ``0666 & ~umask`` and folders ``0777 & ~umask``, whatever the
writer created them with (``mkstemp``'s 0600, or a library that recreates the file).
"""

from __future__ import annotations

import contextlib
import ctypes
import ctypes.util
import errno
import fcntl
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from framestream.utils.units import human_bytes

__all__ = [
    "DiskFullError",
    "as_disk_full",
    "NotEnoughSpaceError",
    "atomic_dir",
    "atomic_path",
    "check_free_space",
    "check_new_output",
    "check_writable",
    "output_mode",
    "remove_stale_partials",
]

PARTIAL_SUFFIX = ".partial"
_FULL_ERRNOS = (errno.ENOSPC, errno.EFBIG, errno.EDQUOT)


class DiskFullError(OSError):
    """The disk (or a quota, or the file-size limit) ran out for an output; ``filename`` is the output."""

    def __str__(self) -> str:
        why = {errno.EFBIG: "the file grew past the file-size limit (ulimit -f)", errno.EDQUOT: "the disk quota is exhausted"}
        reason = why.get(self.errno, "the disk is full")
        return f"cannot write {self.filename}: {reason}; nothing was written (free some space or choose another place)"


class NotEnoughSpaceError(DiskFullError):
    """Found before any work: the disk has less free space than the output needs."""

    def __init__(self, path: Path, need: int, free: int) -> None:
        super().__init__(errno.ENOSPC, os.strerror(errno.ENOSPC), str(path))
        self.need, self.free = need, free

    def __str__(self) -> str:
        return (
            f"not enough space for {self.filename}: it needs {human_bytes(self.need)} and {human_bytes(self.free)} "
            "are free; free some space or choose another place"
        )


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


def output_mode(directory: bool = False) -> int:
    """The mode a newly created output gets under the process umask."""
    return (0o777 if directory else 0o666) & ~_current_umask()


def as_disk_full(err: BaseException, final_path: str | Path) -> BaseException:
    """``err`` as a :class:`DiskFullError` naming ``final_path`` when it is a full-disk error, else ``err``."""
    seen: set[int] = set()
    cause: BaseException | None = err
    while cause is not None and id(cause) not in seen:  # PyAV and others wrap the OSError
        seen.add(id(cause))
        if isinstance(cause, DiskFullError):
            return cause
        if isinstance(cause, OSError) and cause.errno in _FULL_ERRNOS:
            return DiskFullError(cause.errno, os.strerror(cause.errno), str(final_path))
        cause = cause.__cause__ or cause.__context__
    return err


def _lock(fd: int) -> None:
    """Mark a temporary as in use: :func:`remove_stale_partials` skips it while this fd is open."""
    with contextlib.suppress(OSError):
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)


@contextlib.contextmanager
def atomic_path(final_path: str | Path) -> Iterator[Path]:
    """Yield a temporary path beside ``final_path``; rename it into place on success.

    The temporary name is ``.<name>.<random>.partial``: hidden, and never matching a
    scan for the real suffix, so a killed writer's leftovers are never mistaken for
    output (:func:`remove_stale_partials` cleans them). Writers that choose a format
    by suffix must be told the format explicitly. On an exception the temporary file
    is removed and ``final_path`` is left as it was; a full disk is re-raised as
    :class:`DiskFullError` naming ``final_path``.
    """
    final_path = Path(final_path)
    final_path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp_name = tempfile.mkstemp(prefix=f".{final_path.name}.", suffix=PARTIAL_SUFFIX, dir=final_path.parent)
    tmp_path = Path(tmp_name)
    try:
        _lock(fd)
        yield tmp_path
        os.chmod(tmp_path, output_mode())  # after writing: some writers recreate the file 0600
        os.replace(tmp_path, final_path)
    except BaseException as err:
        tmp_path.unlink(missing_ok=True)
        converted = as_disk_full(err, final_path)
        if converted is not err:
            raise converted from err
        raise
    finally:
        os.close(fd)


def _exchange(a: Path, b: Path) -> bool:
    """Swap two existing paths in one step (Linux ``renameat2(RENAME_EXCHANGE)``); False if unsupported."""
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        renameat2 = libc.renameat2
    except (OSError, AttributeError):
        return False
    at_fdcwd, rename_exchange = -100, 2
    if renameat2(at_fdcwd, os.fsencode(a), at_fdcwd, os.fsencode(b), rename_exchange) == 0:
        return True
    code = ctypes.get_errno()
    if code in (errno.ENOSYS, errno.EINVAL, errno.ENOTSUP):
        return False
    raise OSError(code, os.strerror(code), str(b))


def _publish_dir(tmp_dir: Path, final_dir: Path) -> None:
    """Put the finished folder ``tmp_dir`` at ``final_dir``; an existing folder there is replaced whole."""
    try:
        os.rename(tmp_dir, final_dir)  # no folder there, or an empty one
        return
    except OSError as err:
        if err.errno not in (errno.ENOTEMPTY, errno.EEXIST):
            raise
    # A folder with an earlier output: swap the two in one step, then delete the old one
    # (now under the temporary name, so a kill here leaves only a stale partial).
    if not _exchange(tmp_dir, final_dir):
        old = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=PARTIAL_SUFFIX, dir=final_dir.parent))
        os.rename(final_dir, old)  # replaces the empty placeholder
        os.rename(tmp_dir, final_dir)
        tmp_dir = old
    shutil.rmtree(tmp_dir, ignore_errors=True)


@contextlib.contextmanager
def atomic_dir(final_dir: str | Path) -> Iterator[Path]:
    """Yield a temporary folder beside ``final_dir``; publish it whole on success.

    On success the folder replaces ``final_dir`` (an existing one is swapped out in one
    rename and deleted, so no file of an earlier output survives); on an exception it is
    deleted and ``final_dir`` is left as it was.
    """
    final_dir = Path(final_dir)
    final_dir.parent.mkdir(parents=True, exist_ok=True)
    tmp_dir = Path(tempfile.mkdtemp(prefix=f".{final_dir.name}.", suffix=PARTIAL_SUFFIX, dir=final_dir.parent))
    fd = os.open(tmp_dir, os.O_RDONLY)
    try:
        _lock(fd)
        yield tmp_dir
        os.chmod(tmp_dir, output_mode(directory=True))
        _publish_dir(tmp_dir, final_dir)
    except BaseException as err:
        shutil.rmtree(tmp_dir, ignore_errors=True)
        converted = as_disk_full(err, final_dir)
        if converted is not err:
            raise converted from err
        raise
    finally:
        os.close(fd)


def _partial_pattern(name: str) -> re.Pattern[str]:
    # tempfile's random part: 8 characters of [a-z0-9_]
    return re.compile(rf"\.{re.escape(name)}\.[a-z0-9_]{{8}}{re.escape(PARTIAL_SUFFIX)}")


def _in_use(path: Path) -> bool:
    """True if a live writer holds the temporary's lock."""
    try:
        fd = os.open(path, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        return True
    finally:
        os.close(fd)  # closing releases the probe lock
    return False


def remove_stale_partials(final_path: str | Path) -> int:
    """Delete temporaries a killed :func:`atomic_path` / :func:`atomic_dir` left for ``final_path``.

    A temporary whose writer is still running (it holds a lock on it) is kept. Returns
    the number removed.
    """
    final_path = Path(final_path)
    if not final_path.parent.is_dir():
        return 0
    pattern = _partial_pattern(final_path.name)
    removed = 0
    for path in final_path.parent.iterdir():
        if not pattern.fullmatch(path.name) or _in_use(path):
            continue
        if path.is_dir() and not path.is_symlink():
            shutil.rmtree(path, ignore_errors=True)
        else:
            path.unlink(missing_ok=True)
        removed += 1
    return removed


def _existing_dir(path: Path) -> Path:
    probe = path
    while not probe.exists():
        if probe.parent == probe:
            break
        probe = probe.parent
    return probe


def check_writable(path: str | Path, *, directory: bool = False) -> Path:
    """Raise ``PermissionError`` now (before any work) if ``path`` cannot be created.

    The check creates (and removes) a temporary file in the nearest folder that exists,
    so places that look writable but are not (``/proc``, a read-only mount, a full
    quota) are found too. ``directory``: ``path`` is a folder output (built beside it
    and renamed into place, so its parent must be writable).
    """
    path = Path(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise PermissionError(f"output path not writable: {path} exists and is not a directory")
    elif path.exists() and (path.is_dir() or not os.access(path, os.W_OK)):
        raise PermissionError(f"output path not writable: {path}")
    probe_dir = _existing_dir(path.parent if str(path.parent) else Path("."))
    if not probe_dir.is_dir():
        raise PermissionError(f"output path not writable: {path} ({probe_dir} is not a directory)")
    try:
        fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=PARTIAL_SUFFIX, dir=probe_dir)
    except OSError as err:
        raise PermissionError(f"output path not writable: {path} (cannot create files in {probe_dir}: {err.strerror})") from None
    try:
        os.close(fd)
    finally:  # even when interrupted right here
        os.unlink(name)
    return path


def check_new_output(path: str | Path, overwrite: bool, *, directory: bool = False) -> Path:
    """Refuse an existing output unless ``overwrite``; remove stale temporaries of killed runs.

    For a folder output (``directory=True``) an empty folder counts as new; with
    ``overwrite`` an existing folder is replaced only if it holds files alone (no
    subfolders), so a wrong ``-o`` never deletes a tree.
    """
    path = Path(path)
    remove_stale_partials(path)
    if directory:
        if path.exists() and not path.is_dir():
            raise PermissionError(f"output path not writable: {path} exists and is not a directory")
        entries = list(path.iterdir()) if path.is_dir() else []
        if entries and not overwrite:
            raise FileExistsError(f"output {path} already exists and is not empty; pass --overwrite to replace it")
        if entries and any(e.is_dir() and not e.is_symlink() for e in entries):
            raise FileExistsError(f"output folder {path} holds subfolders, so it is not an earlier output; choose a new folder")
    elif path.exists() and not overwrite:
        raise FileExistsError(f"output {path} already exists; pass --overwrite to replace it")
    return path


def check_free_space(path: str | Path, need_bytes: int) -> None:
    """Raise :class:`NotEnoughSpaceError` now if the disk holding ``path`` has less than ``need_bytes`` free."""
    path = Path(path)
    probe = _existing_dir(path.parent if str(path.parent) else Path("."))
    try:
        free = shutil.disk_usage(probe).free
    except OSError:
        return
    if need_bytes > free:
        raise NotEnoughSpaceError(path, need_bytes, free)
