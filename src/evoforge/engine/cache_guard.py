"""What a cache does when its database fails: never cost a record.

A cache only saves calls, so its faults must not reach the records:

- a database that cannot be opened (not a database, a broken header) is moved aside,
  as the run journal is, and a new one is made;
- a read that fails (a corrupt page, an I/O error) or a stored row that cannot be
  decoded is a miss: the call is made again;
- a write that fails turns caching off for the rest of the run (the records are still
  made, only not cached);
- except a full disk: a write that fails for want of space raises
  ``OSError(ENOSPC)``, which stops the run as any full disk does, resumably.

Each cache warns once per run (once per :class:`CacheFaults`), on stderr.
"""

from __future__ import annotations

import errno
import shutil
import sqlite3
import sys
import time
from collections.abc import Callable
from pathlib import Path

# SQLite's result codes for "database or disk is full" and an I/O error.
_SQLITE_FULL = 13
_SQLITE_IOERR = 10
# An I/O error with less free space than this beside the file is a full disk.
_LOW_SPACE = 1 << 20


def move_aside(path: Path) -> Path:
    """Rename the SQLite database ``path`` (and its ``-wal``, ``-shm``, ``-journal``) to
    ``NAME.broken-YYYYMMDDTHHMMSS`` beside it; the new name."""
    stamp = time.strftime("%Y%m%dT%H%M%S")
    aside = path.with_name(f"{path.name}.broken-{stamp}")
    number = 1
    while aside.exists():
        number += 1
        aside = path.with_name(f"{path.name}.broken-{stamp}-{number}")
    for suffix in ("", "-wal", "-shm", "-journal"):
        broken = Path(f"{path}{suffix}")
        if broken.exists():
            broken.replace(f"{aside}{suffix}")
    return aside


def is_disk_full(exc: BaseException, path: Path) -> bool:
    """True when ``exc``, raised writing the database ``path``, means the disk is full:
    ENOSPC, SQLite's SQLITE_FULL, or an I/O error with under 1 MiB free beside ``path``."""
    if isinstance(exc, OSError):
        return exc.errno in (errno.ENOSPC, errno.EDQUOT)
    if not isinstance(exc, sqlite3.Error):
        return False
    code = getattr(exc, "sqlite_errorcode", None)  # Python 3.11+
    primary = code & 0xFF if isinstance(code, int) else None
    if primary == _SQLITE_FULL or "database or disk is full" in str(exc):
        return True
    if primary == _SQLITE_IOERR or "disk I/O error" in str(exc):
        try:
            return shutil.disk_usage(path.parent).free < _LOW_SPACE
        except OSError:
            return False
    return False


def disk_full_error(exc: BaseException, path: Path) -> OSError:
    """The ``OSError(ENOSPC)`` a cache raises when writing ``path`` found the disk full."""
    return OSError(errno.ENOSPC, f"No space left on device (writing the cache: {exc})", str(path))


def _stderr(message: str) -> None:
    print(message, file=sys.stderr)


class CacheFaults:
    """One cache's fault state for a run: whether writes are still on, and whether the
    warning was shown. ``what`` names the cache in messages ("response cache")."""

    def __init__(self, path: Path, what: str, warn: Callable[[str], None] | None = None) -> None:
        self.path = path
        self.what = what
        self.writable = True
        self.read_faults = 0
        self.write_faults = 0
        self.moved_aside: Path | None = None
        self._warn = warn or _stderr
        self._warned: set[str] = set()  # "read", "write": each warned once per run

    def open_failed(self, exc: BaseException) -> Path:
        """The database could not be opened: move it aside (the caller opens a new one)."""
        self.moved_aside = move_aside(self.path)
        self._warn(
            f"evoforge: warning: {self.path} could not be read ({exc}); moved aside to "
            f"{self.moved_aside} and starting a new {self.what} (calls are made again)."
        )
        return self.moved_aside

    def read_failed(self, exc: BaseException) -> None:
        """A read or a stored row failed: the caller treats it as a miss."""
        self.read_faults += 1
        self._once(
            "read",
            f"evoforge: warning: {self.what} {self.path}: a read failed ({_describe(exc)}); "
            "treated as a miss, the call is made again. Later faults in it are misses too "
            "(warned once per run); delete or move the file to start a new cache.",
        )

    def write_failed(self, exc: BaseException) -> None:
        """A write failed: a full disk raises ``OSError(ENOSPC)``; anything else turns
        caching off for the rest of the run."""
        if is_disk_full(exc, self.path):
            raise disk_full_error(exc, self.path) from exc
        self.write_faults += 1
        self.writable = False
        self._once(
            "write",
            f"evoforge: warning: {self.what} {self.path}: a write failed ({_describe(exc)}); "
            "this run carries on without caching. Delete or move the file to start a new "
            "cache.",
        )

    def _once(self, kind: str, message: str) -> None:
        if kind not in self._warned:
            self._warned.add(kind)
            self._warn(message)


def _describe(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"
