"""A write that fails (a full disk, a quota, a file-size limit, an I/O error) stops the
run with exit 3 and one line saying what to free; nothing already written is lost.

Every file evoforge writes goes to a temporary first (:mod:`evoforge.io.writers`) and
the journal and caches are SQLite transactions, so a failed write leaves the previous
files whole; :class:`WriteFailed` names the file, what it is, and how much room is
left on its disk. The same command, run again once there is room, resumes from the
journal.

``EVOFORGE_TEST_FAIL_WRITE=PATTERN[:BYTES]`` is the reliability suite's hook: a file
whose name matches the glob ``PATTERN`` raises ``OSError(ENOSPC)`` once ``BYTES``
(default 0) bytes have been written to it, as a full disk would.
"""

from __future__ import annotations

import contextlib
import errno
import fnmatch
import os
import shutil
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import EvoforgeError
from evoforge.io.layout import SIDE_FILES

# errno values that mean "no room": what to free is space (or quota, or the size limit).
NO_ROOM = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EFBIG})
# What a file beside an output is, by its name's tail (the output itself: "the output").
_WHAT = {
    SIDE_FILES["rejects"]: "the rejects",
    SIDE_FILES["manifest"]: "the manifest",
    SIDE_FILES["journal"]: "the run journal",
    "llm-cache.db": "the response cache",
    "embeddings.db": "the embedding cache",
}


class WriteFailed(EvoforgeError):
    """A file of the run could not be written; the run stops with exit 3 (resumable)."""

    exit_code = 3

    def __init__(self, path: str | os.PathLike[str], what: str, cause: BaseException) -> None:
        self.path = Path(path)
        self.what = what
        super().__init__(_message(self.path, what, cause))


def describe(path: Path) -> str:
    """What ``path`` is to a run: the output, its rejects, manifest, journal, a cache."""
    name = str(path.name)
    for tail, what in _WHAT.items():
        if name.endswith(tail) or name.endswith(f"{tail}-wal") or name.endswith(f"{tail}-journal"):
            return what
    return "the output"


def _free(folder: Path) -> str:
    """``"/data: 3.2 MiB free"``."""
    try:
        free = float(shutil.disk_usage(folder).free)
    except OSError:
        return f"{folder}: free space unknown"
    unit = "bytes"
    for unit in ("bytes", "KiB", "MiB", "GiB"):
        if free < 1024 or unit == "GiB":
            break
        free /= 1024
    return (
        f"{folder}: {free:.0f} bytes free"
        if unit == "bytes"
        else f"{folder}: {free:.1f} {unit} free"
    )


def _message(path: Path, what: str, cause: BaseException) -> str:
    folder = path.parent.resolve() if path.parent.exists() else path.parent
    number = getattr(cause, "errno", None)
    if number == errno.EFBIG:
        reason, fix = "over the file-size limit", "Raise the limit (ulimit -f)"
    elif number in NO_ROOM or "disk is full" in str(cause) or "No space" in str(cause):
        reason, fix = "no space left on the device", f"Free space on its disk ({_free(folder)})"
    else:
        reason, fix = f"{type(cause).__name__}: {cause}", f"Check the disk and {folder}"
    elsewhere = "--cache-dir elsewhere or --no-cache" if what.endswith("cache") else "another --out"
    return (
        f"could not write {path} ({what}): {reason}. {fix} or use {elsewhere}, then run "
        "the same command again to resume; nothing written before was lost."
    )


@contextlib.contextmanager
def failed_write(path: str | os.PathLike[str], what: str | None = None) -> Iterator[None]:
    """Turn an OSError (or a SQLite write error) inside the block into :class:`WriteFailed`
    naming ``path`` and ``what`` it is (by default, from its name)."""
    try:
        yield
    except WriteFailed:
        raise
    except (OSError, sqlite3.OperationalError) as exc:
        raise WriteFailed(path, what or describe(Path(path)), exc) from exc


class _FailingFile:
    """The test hook's file: writes go through until ``limit`` bytes, then ENOSPC."""

    def __init__(self, handle: Any, limit: int) -> None:
        self._handle = handle
        self._left = limit

    def write(self, data: Any) -> int:
        if len(data) > self._left:
            raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))
        self._left -= len(data)
        return self._handle.write(data)

    def __getattr__(self, name: str) -> Any:
        return getattr(self._handle, name)

    def __iter__(self) -> Iterator[Any]:
        return iter(self._handle)


def hooked(handle: Any, path: Path) -> Any:
    """``handle``, or the test hook's failing file when ``EVOFORGE_TEST_FAIL_WRITE``
    names ``path`` (see the module docstring)."""
    spec = os.environ.get("EVOFORGE_TEST_FAIL_WRITE")
    if not spec:
        return handle
    pattern, _, limit = spec.partition(":")
    if not fnmatch.fnmatch(path.name, pattern):
        return handle
    return _FailingFile(handle, int(limit or 0))
