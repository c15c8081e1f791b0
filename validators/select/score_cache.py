"""Model scores on disk, and the streaming loop that fills them.

A model-signal score (IFD, perplexity, memorisation level) costs forward passes; the
same record scored by the same model with the same settings gets the same number.
:class:`ScoreCache` keeps them in SQLite beside the engine's response cache
(``<cache dir>/score-cache.db``; ``--cache-dir`` / ``EVOFORGE_CACHE_DIR`` move it,
``--no-cache`` turns it off), keyed by (scorer identity, SHA-256 of what was scored).

:func:`score_stream` reads records one chunk at a time, serves what the cache holds,
scores the rest in the scorer's batches and yields ``(record, block)`` in input order:
memory holds one chunk, never the whole set. A re-run makes zero forward passes.
"""

from __future__ import annotations

import hashlib
import json
import os
import sqlite3
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path
from typing import Any, Protocol

from evoforge.errors import ConfigError

__all__ = ["CACHE_FILE", "RecordScorer", "ScoreCache", "digest", "score_stream"]

CACHE_FILE = "score-cache.db"


def digest(*parts: str) -> str:
    """SHA-256 of the scored texts, each length-prefixed so that no two splits collide."""
    sha = hashlib.sha256()
    for part in parts:
        data = part.encode("utf-8")
        sha.update(len(data).to_bytes(8, "big"))
        sha.update(data)
    return sha.hexdigest()


class RecordScorer(Protocol):
    """Scores records in batches: a block of JSON per record (``{"error": ...}`` when a
    record cannot be scored)."""

    identity: str  # model + method + settings: the cache's first key
    batch_size: int

    def key(self, record: Any) -> str:
        """What is scored, as a digest: the cache's second key."""
        ...

    def score_batch(self, records: Sequence[Any]) -> list[dict[str, Any]]: ...


class ScoreCache:
    """Score blocks on disk (SQLite), keyed by (scorer identity, record digest)."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        try:
            self._db = sqlite3.connect(self.path)
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS scores (identity TEXT NOT NULL, digest TEXT NOT "
                "NULL, block TEXT NOT NULL, PRIMARY KEY (identity, digest)) WITHOUT ROWID"
            )
            self._db.commit()
        except sqlite3.DatabaseError as exc:
            raise ConfigError(f"score cache {self.path}: cannot open it ({exc})") from exc

    def get(self, identity: str, digests: Sequence[str]) -> dict[str, dict[str, Any]]:
        found: dict[str, dict[str, Any]] = {}
        for start in range(0, len(digests), 500):
            batch = list(digests[start : start + 500])
            marks = ",".join("?" * len(batch))
            rows = self._db.execute(
                f"SELECT digest, block FROM scores WHERE identity = ? AND digest IN ({marks})",
                [identity, *batch],
            )
            for key, block in rows:
                found[key] = json.loads(block)
        return found

    def put(self, identity: str, items: Iterable[tuple[str, dict[str, Any]]]) -> None:
        self._db.executemany(
            "INSERT OR REPLACE INTO scores (identity, digest, block) VALUES (?, ?, ?)",
            # Key order kept: a block read back writes the same line as a fresh one.
            ((identity, key, json.dumps(block)) for key, block in items),
        )
        self._db.commit()

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM scores").fetchone()[0])

    def close(self) -> None:
        self._db.close()


def score_stream(
    records: Iterable[Any],
    scorer: RecordScorer,
    cache: ScoreCache | None = None,
    *,
    chunk: int | None = None,
    progress: Callable[[dict[str, int]], None] | None = None,
) -> Iterator[tuple[Any, dict[str, Any]]]:
    """``(record, block)`` for each record in order, scoring only what ``cache`` lacks;
    ``chunk`` records (default 8 batches) are held at a time. ``progress`` gets the
    running counts: ``accepted`` (scored), ``rejected`` (unscorable), ``calls`` (records
    sent to the model) and ``tokens`` (0; the model counts its own passes)."""
    size = chunk or max(1, scorer.batch_size) * 8
    counts = {"accepted": 0, "rejected": 0, "calls": 0, "tokens": 0}
    buffer: list[Any] = []

    def flush() -> Iterator[tuple[Any, dict[str, Any]]]:
        keys = [scorer.key(record) for record in buffer]
        found = cache.get(scorer.identity, keys) if cache is not None else {}
        missing = [i for i, key in enumerate(keys) if key not in found]
        fresh: dict[str, dict[str, Any]] = {}
        if missing:
            blocks = scorer.score_batch([buffer[i] for i in missing])
            counts["calls"] += len(missing)
            for i, block in zip(missing, blocks, strict=True):
                fresh[keys[i]] = block
            if cache is not None:
                cache.put(scorer.identity, fresh.items())  # errors too: they are deterministic
        for record, key in zip(buffer, keys, strict=True):
            block = found.get(key) or fresh[key]
            counts["rejected" if "error" in block else "accepted"] += 1
            yield record, block
        if progress is not None:
            progress(dict(counts))
        buffer.clear()

    for record in records:
        buffer.append(record)
        if len(buffer) >= size:
            yield from flush()
    if buffer:
        yield from flush()
