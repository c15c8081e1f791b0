"""On-disk state: the response cache and the run journal, both SQLite in WAL mode.

Both are written with group commits: writes queue in memory and
:meth:`flush` commits all of them in one transaction. The runner flushes as
soon as the event loop is free, so a finished record reaches the OS within
milliseconds; WAL with ``synchronous=NORMAL`` survives a killed process (even
``kill -9``) without an fsync per record.

Lookups go to disk, never to an in-memory set, so memory does not grow with
the number of seeds or cached responses.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evoforge.engine.cache_guard import CacheFaults, move_aside
from evoforge.errors import ConfigError
from evoforge.io.disk import failed_write
from evoforge.llm.base import Completion


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.execute("PRAGMA synchronous=NORMAL")
        conn.execute("PRAGMA busy_timeout=10000")
    except sqlite3.Error:
        conn.close()  # not a database: the caller moves it aside
        raise
    return conn


def cache_key(
    identity: dict[str, str],
    messages: list[dict[str, str]],
    params: dict[str, Any],
    schema: dict[str, Any] | None,
    tag: str = "",
) -> str:
    """Content address of one model call: backend identity (incl. base URL), model,
    messages, sampling params, schema and the prompt template's hash (``tag``)."""
    blob = json.dumps(
        [identity, messages, params, schema, tag],
        sort_keys=True,
        ensure_ascii=False,
        separators=(",", ":"),
    )
    return hashlib.sha256(blob.encode("utf-8")).hexdigest()


class ResponseCache:
    """Content-addressed store of completions, shared by every run that points at it."""

    def __init__(self, path: str | Path, *, warn: Callable[[str], None] | None = None) -> None:
        self.path = Path(path)
        # A fault never costs a record (evoforge.engine.cache_guard): a database that
        # cannot be opened is moved aside, a failed read is a miss, a failed write
        # turns caching off; each warned once on stderr (or through ``warn``).
        self.faults = CacheFaults(self.path, "response cache", warn)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if not self.path.is_file():
                raise
            self.faults.open_failed(exc)
            self._open()
        self._pending: list[tuple[str, str, float]] = []

    def _open(self) -> None:
        self._conn = _connect(self.path)
        try:
            self._conn.execute(
                "CREATE TABLE IF NOT EXISTS responses ("
                " key TEXT PRIMARY KEY, completion TEXT NOT NULL, created REAL NOT NULL)"
                " WITHOUT ROWID"
            )
        except sqlite3.DatabaseError:
            with contextlib.suppress(sqlite3.Error):
                self._conn.close()
            raise

    def get(self, key: str) -> Completion | None:
        """The cached completion for ``key``; None when there is none, or when it cannot
        be read or decoded (a miss: the caller makes the call again)."""
        try:
            row = self._conn.execute(
                "SELECT completion FROM responses WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                for pending_key, blob, _ in self._pending:
                    if pending_key == key:
                        return Completion.from_json(json.loads(blob))
                return None
            return Completion.from_json(json.loads(row[0]))
        except (sqlite3.Error, ValueError, TypeError, KeyError, AttributeError) as exc:
            self.faults.read_failed(exc)
            return None

    def put(self, key: str, completion: Completion) -> None:
        if not self.faults.writable:
            return
        blob = json.dumps(completion.to_json(), ensure_ascii=False)
        self._pending.append((key, blob, time.time()))

    def flush(self) -> None:
        """Commit the queued entries. A failed write loses only them (they are answers
        already given) and turns caching off; a full disk raises ``OSError(ENOSPC)``."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        try:
            with self._conn:
                self._conn.execute("BEGIN")
                self._conn.executemany(
                    "INSERT OR REPLACE INTO responses (key, completion, created) VALUES (?, ?, ?)",
                    pending,
                )
        except sqlite3.Error as exc:
            self.faults.write_failed(exc)

    def __len__(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM responses").fetchone()[0]

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()


class Journal:
    """What a run has finished, one row per seed, so a re-run skips it.

    A row holds the seed's accepted records, rejections and step counts as JSON
    (rows an older evoforge wrote have no counts). ``final`` is
    0 for rejections caused by the environment (retries exhausted, auth errors),
    which a re-run tries again.
    """

    def __init__(self, path: str | Path, fingerprint: str, *, overwrite: bool = False) -> None:
        self.path = Path(path)
        if overwrite:
            for suffix in ("", "-wal", "-shm"):
                Path(f"{self.path}{suffix}").unlink(missing_ok=True)
        # Set when the journal on disk could not be read and was moved aside.
        self.moved_aside: Path | None = None
        self.unreadable_because = ""
        try:
            with failed_write(self.path):  # a full disk is no reason to move it aside
                self._open(fingerprint)
        except sqlite3.DatabaseError as exc:
            # A torn WAL frame or trailing bytes never get here (SQLite's WAL checksums
            # drop the torn transaction); a file that is not a database at all does.
            if getattr(self, "_conn", None) is not None:
                with contextlib.suppress(sqlite3.Error):
                    self._conn.close()
            self.unreadable_because = str(exc)
            self.moved_aside = move_aside(self.path)
            self._open(fingerprint)
        self._pending: list[tuple[str, int, int, int, int, str]] = []

    def _open(self, fingerprint: str) -> None:
        existed = self.path.exists() and self.path.stat().st_size > 0
        self._conn = _connect(self.path)
        if existed:
            problem = self._conn.execute("PRAGMA quick_check").fetchone()[0]
            if problem != "ok":
                raise sqlite3.DatabaseError(f"integrity check failed: {problem}")
        self._conn.executescript(
            "CREATE TABLE IF NOT EXISTS meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);"
            "CREATE TABLE IF NOT EXISTS seeds ("
            " seed_id TEXT PRIMARY KEY, seq INTEGER NOT NULL, final INTEGER NOT NULL,"
            " accepted INTEGER NOT NULL, rejected INTEGER NOT NULL, payload TEXT NOT NULL)"
            " WITHOUT ROWID;"
        )
        row = self._conn.execute("SELECT value FROM meta WHERE key = 'fingerprint'").fetchone()
        if row is None:
            self._conn.execute(
                "INSERT INTO meta (key, value) VALUES ('fingerprint', ?)", (fingerprint,)
            )
        elif row[0] != fingerprint:
            self._conn.close()
            raise ConfigError(
                f"{self.path} belongs to a run with a different configuration "
                "(model, prompts, parameters or seed). Re-run with --overwrite to start "
                "over, or choose another --out."
            )
        self.resumed = self.count() > 0
        self._conn.execute("DELETE FROM seeds WHERE final = 0")
        # The ids this run has met, on disk (a temporary table), to catch duplicates.
        self._conn.execute("CREATE TEMP TABLE seen (seed_id TEXT PRIMARY KEY) WITHOUT ROWID")

    def first_sighting(self, seed_id: str) -> bool:
        """True the first time this run meets ``seed_id``; False for a repeated id."""
        cursor = self._conn.execute("INSERT OR IGNORE INTO seen (seed_id) VALUES (?)", (seed_id,))
        return cursor.rowcount == 1

    def is_done(self, seed_id: str) -> bool:
        row = self._conn.execute("SELECT 1 FROM seeds WHERE seed_id = ?", (seed_id,)).fetchone()
        return row is not None

    def add(
        self,
        seq: int,
        seed_id: str,
        records: list[dict[str, Any]],
        rejections: list[dict[str, Any]],
        *,
        final: bool,
        steps: dict[str, Any] | None = None,
    ) -> None:
        """Queue a seed's row. ``steps`` are what each step counted for this seed, kept
        with its result so that a resumed run sums the same counts."""
        row: dict[str, Any] = {"records": records, "rejections": rejections}
        if steps is not None:
            row["steps"] = steps
        payload = json.dumps(row, ensure_ascii=False)
        self._pending.append((seed_id, seq, int(final), len(records), len(rejections), payload))

    def flush(self) -> None:
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        # A failed commit (a full disk) rolls back whole: the rows are done again on resume.
        with failed_write(self.path), self._conn:
            self._conn.execute("BEGIN")
            # OR IGNORE: a seed id seen twice in one input is journaled once.
            self._conn.executemany(
                "INSERT OR IGNORE INTO seeds (seed_id, seq, final, accepted, rejected, payload)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                pending,
            )

    def count(self) -> int:
        return self._conn.execute("SELECT COUNT(*) FROM seeds").fetchone()[0]

    def totals(self) -> tuple[int, int]:
        row = self._conn.execute(
            "SELECT COALESCE(SUM(accepted), 0), COALESCE(SUM(rejected), 0) FROM seeds"
        ).fetchone()
        return int(row[0]), int(row[1])

    def rows(self) -> Iterator[dict[str, Any]]:
        """Every finished seed's payload, in input order, streamed from disk.

        No index on ``seq``: it would cost a page write per commit during the run,
        and SQLite sorts once here, spilling to disk for large journals."""
        cursor = self._conn.execute("SELECT payload FROM seeds ORDER BY seq")
        for (payload,) in cursor:
            yield json.loads(payload)

    def close(self) -> None:
        try:
            self.flush()
        finally:
            self._conn.close()
