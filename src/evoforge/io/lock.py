"""One run at a time on an output or a run folder: an advisory lock, and who holds it.

Two runs writing the same ``OUT`` would share its journal and its temporaries, so every
command that writes takes :class:`RunLock` on its output (a recipe on its run folder)
before it opens anything there::

    with RunLock(out, wait=options.wait):
        ...  # journal, outputs, manifest

The lock is ``flock`` on a hidden file beside the output (``.OUT.lock``; in a run folder,
``.evoforge.lock``), which records the holder: host, PID, the process's start time (from
``/proc/PID/stat``, so a reused PID is told apart) and when the run began. A second run
exits 2 naming them, or, with ``wait``, waits its turn. The kernel drops the lock when
its holder dies, however it dies, so a killed run never leaves a stale lock behind.

A process that holds a lock may take it again (a recipe's step, a command inside a
command): the inner one is a no-op. Which locks this process holds is process-wide
state by nature (``flock`` belongs to open files of this process), hence the one
module-level table below.

:class:`Owner` also names the temporaries a writer leaves beside its target
(:func:`evoforge.io.writers.temporary_for`), so the stale-temporary cleanup removes only
those whose owner is gone.
"""

from __future__ import annotations

import contextlib
import functools
import inspect
import json
import os
import socket
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from types import TracebackType
from typing import IO, Any

from evoforge.errors import EvoforgeError
from evoforge.io.disk import failed_write

try:
    import fcntl
except ImportError:  # pragma: no cover - Windows: no flock; runs are not locked there
    fcntl = None  # type: ignore[assignment]

RUN_FOLDER_LOCK = ".evoforge.lock"


class RunLocked(EvoforgeError):
    """Another run holds the output or run folder (exit 2); ``--wait`` waits for it."""


def process_start(pid: int) -> int | None:
    """When process ``pid`` started, in clock ticks since boot (``/proc/PID/stat`` field
    22); None where there is no /proc or no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text("ascii", errors="replace")
    except OSError:
        return None
    # The command name (field 2) may hold spaces and parentheses: count after the last ")".
    fields = stat.rpartition(")")[2].split()
    try:
        return int(fields[19])
    except (IndexError, ValueError):
        return None


def host_name() -> str:
    """This machine's name, as it goes into a lock file or a temporary's name."""
    name = socket.gethostname() or "localhost"
    return "".join(c if c.isalnum() or c in ".-_" else "_" for c in name)[:64]


@dataclass(frozen=True)
class Owner:
    """A process, told apart from a later one with the same PID by its start time."""

    host: str
    pid: int
    start: int | None  # clock ticks since boot; None where unknown

    @classmethod
    def me(cls) -> Owner:
        return cls(host_name(), os.getpid(), process_start(os.getpid()))

    def tag(self) -> str:
        """``PID-START-HOST``: the owner as a temporary file's suffix."""
        return f"{self.pid}-{self.start if self.start is not None else 'x'}-{self.host}"

    @classmethod
    def from_tag(cls, tag: str) -> Owner | None:
        """The owner a :meth:`tag` names (a bare ``PID``, as older versions wrote, too)."""
        if tag.isdigit():
            return cls(host_name(), int(tag), None)
        pid, _, rest = tag.partition("-")
        start, _, host = rest.partition("-")
        if not pid.isdigit() or not host or not (start.isdigit() or start == "x"):
            return None
        return cls(host, int(pid), int(start) if start.isdigit() else None)

    def gone(self) -> bool:
        """True only when this process has certainly exited: on this host, no process has
        its PID, or the one that has it started at another time (the PID was reused).
        A process on another host is never taken for gone."""
        if self.host != host_name():
            return False
        try:
            os.kill(self.pid, 0)
        except ProcessLookupError:
            return True
        except PermissionError:
            pass  # alive, another user's
        if self.start is None:
            return False
        now = process_start(self.pid)
        return now is not None and now != self.start


def lock_file(path: str | os.PathLike[str]) -> Path:
    """The lock of an output (``.NAME.lock`` beside it) or of a run folder (inside it)."""
    path = Path(path)
    if path.is_dir():
        return path / RUN_FOLDER_LOCK
    return path.with_name(f".{path.name}.lock")


# Locks this process holds: lock file -> [open file, depth]. See the module docstring.
_HELD: dict[Path, list[Any]] = {}
_HELD_GUARD = threading.Lock()


class RunLock:
    """Hold the run lock of ``path`` (an output file or a run folder) while the block runs.

    Taken by another process: raise :class:`RunLocked` naming it (host, PID, start time),
    or with ``wait`` say so on stderr once and wait until it is free."""

    def __init__(self, path: str | os.PathLike[str], wait: bool = False) -> None:
        self.target = Path(path)
        self.wait = wait
        self.path = lock_file(path)
        self._key = self.path.parent.resolve() / self.path.name

    def __enter__(self) -> RunLock:
        self.acquire()
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        self.release()

    def acquire(self) -> None:
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is not None:
                held[1] += 1
                return
        if fcntl is None:
            handle = None
        else:
            handle = self._lock()
        with _HELD_GUARD:
            _HELD[self._key] = [handle, 1]

    def _lock(self) -> IO[str]:
        with failed_write(self.path, "the run lock"):
            self.path.parent.mkdir(parents=True, exist_ok=True)
        told = False
        while True:
            with failed_write(self.path, "the run lock"):  # a read-only or full folder
                handle = open(self.path, "a+", encoding="utf-8")  # noqa: SIM115 - held
            try:
                try:
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
                except BlockingIOError:
                    holder = self._holder(handle)
                    if not self.wait:
                        raise RunLocked(
                            f"{self.target} is in use by another run ({holder}); let it "
                            "finish, or pass --wait to start when it does"
                        ) from None
                    if not told:
                        print(f"evoforge: waiting for the run on {self.target} ({holder}) "
                              "to finish", file=sys.stderr)  # fmt: skip
                        told = True
                    fcntl.flock(handle.fileno(), fcntl.LOCK_EX)
                # The holder before us removes the file as it lets go: a lock on a file
                # no longer at this path locks nothing; take the new one instead.
                try:
                    same = os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino
                except FileNotFoundError:
                    same = False
                if not same:
                    handle.close()
                    continue
                self._record(handle)
                return handle
            except BaseException:
                handle.close()
                raise

    @staticmethod
    def _record(handle: IO[str]) -> None:
        owner = Owner.me()
        started = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime())
        data = {"host": owner.host, "pid": owner.pid, "process_start": owner.start,
                "started_at": started, "argv": sys.argv[:1]}  # fmt: skip
        handle.seek(0)
        handle.truncate()
        handle.write(json.dumps(data) + "\n")
        handle.flush()

    @staticmethod
    def _holder(handle: IO[str]) -> str:
        """Who holds the lock, from its file (it may be mid-write: try a few times)."""
        for _ in range(20):
            handle.seek(0)
            try:
                data = json.loads(handle.read())
                return f"host {data['host']}, PID {data['pid']}, started {data['started_at']}"
            except (ValueError, KeyError, TypeError):
                time.sleep(0.01)
        return "holder unknown"

    def release(self) -> None:
        with _HELD_GUARD:
            held = _HELD.get(self._key)
            if held is None:
                return
            held[1] -= 1
            if held[1] > 0:
                return
            del _HELD[self._key]
        handle = held[0]
        if handle is None:
            return
        # Remove the file while still holding it (a waiter then sees another inode and
        # takes the new file); closing lets go of the lock.
        try:
            if os.stat(self.path).st_ino == os.fstat(handle.fileno()).st_ino:
                self.path.unlink()
        except OSError:
            pass
        handle.close()


def holds_run_lock(fn: Callable[..., Any]) -> Callable[..., Any]:
    """A command function (sync or async) that holds its ``out``'s :class:`RunLock` for
    the whole call; none when ``out`` is None (``validate`` without an output). It waits
    when ``options.wait`` is set, or, for a command without engine options (``dedup``,
    ``probe build``), when the call passes ``wait=True``."""
    signature = inspect.signature(fn)

    def lock_for(args: tuple[Any, ...], kwargs: dict[str, Any]) -> RunLock | None:
        wait = kwargs.pop("wait", None)
        bound = signature.bind_partial(*args, **kwargs).arguments
        out = bound.get("out")
        if out is None:
            return None
        if wait is None:
            wait = getattr(bound.get("options"), "wait", False)
        return RunLock(out, wait=bool(wait))

    if inspect.iscoroutinefunction(fn):

        @functools.wraps(fn)
        async def locked_async(*args: Any, **kwargs: Any) -> Any:
            lock = lock_for(args, kwargs)
            with lock if lock is not None else contextlib.nullcontext():
                return await fn(*args, **kwargs)

        return locked_async

    @functools.wraps(fn)
    def locked(*args: Any, **kwargs: Any) -> Any:
        lock = lock_for(args, kwargs)
        with lock if lock is not None else contextlib.nullcontext():
            return fn(*args, **kwargs)

    return locked
