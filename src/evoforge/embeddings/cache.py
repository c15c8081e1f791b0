"""Vectors on disk, so that regenerating a data set does not embed the same chunks again."""

from __future__ import annotations

import contextlib
import os
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from types import TracebackType

import numpy as np

from evoforge.embeddings.base import Embedder
from evoforge.engine.cache_guard import CacheFaults
from evoforge.engine.embedding_client import CachedTexts
from evoforge.errors import ConfigError


class EmbeddingCache:
    """Vectors on disk (SQLite), keyed by (embedder identity, SHA-256 of the text).

    Use it through :func:`embed_cached`, or give it to an :class:`OpenAIEmbedder`
    (``cache=``), whose engine client looks texts up in it before sending them. Vectors
    are stored as float32 bytes; a stored vector whose size does not match the
    embedder's is treated as missing.
    """

    _BATCH = 500  # keys per SELECT (SQLite's variable limit is 999 on old builds)

    def __init__(
        self, path: str | os.PathLike[str], *, warn: Callable[[str], None] | None = None
    ) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        # A fault never costs a record (evoforge.engine.cache_guard): a database that
        # cannot be opened is moved aside, a failed read is a miss (the text is embedded
        # again), a failed write turns caching off; each warned once.
        self.faults = CacheFaults(self.path, "embedding cache", warn)
        try:
            self._open()
        except sqlite3.DatabaseError as exc:
            if not self.path.is_file():
                raise ConfigError(f"embedding cache {self.path}: cannot open it ({exc})") from exc
            self.faults.open_failed(exc)
            self._open()

    def _open(self) -> None:
        # An embedder called from async code runs its engine client in a worker
        # thread; the calls never overlap, so the connection may cross threads.
        self._db = sqlite3.connect(self.path, check_same_thread=False)
        try:
            self._db.execute(
                "CREATE TABLE IF NOT EXISTS vectors (identity TEXT NOT NULL, digest BLOB NOT "
                "NULL, vector BLOB NOT NULL, PRIMARY KEY (identity, digest)) WITHOUT ROWID"
            )
            self._db.commit()
        except sqlite3.DatabaseError:
            self._db.close()
            raise

    def get(
        self, identity: str, digests: Sequence[bytes], dim: int | None
    ) -> dict[bytes, np.ndarray]:
        """The stored vectors among ``digests`` (missing ones are absent from the result);
        with a ``dim``, only those of that size (``None``: the width is not known yet, and
        the most common width among them is kept). A batch that cannot be read, or a row
        that is not a vector, is missing: its texts are embedded again."""
        found: dict[bytes, np.ndarray] = {}
        for start in range(0, len(digests), self._BATCH):
            batch = list(digests[start : start + self._BATCH])
            marks = ",".join("?" * len(batch))
            try:
                rows = self._db.execute(
                    f"SELECT digest, vector FROM vectors WHERE identity = ? "
                    f"AND digest IN ({marks})",
                    [identity, *batch],
                ).fetchall()
            except sqlite3.Error as exc:
                self.faults.read_failed(exc)
                continue
            for digest, blob in rows:
                if not isinstance(blob, bytes) or not blob or len(blob) % 4:
                    self.faults.read_failed(ValueError("a stored vector is not float32 bytes"))
                elif dim is None or len(blob) == 4 * dim:
                    found[bytes(digest)] = np.frombuffer(blob, dtype=np.float32)
        if dim is None and found:
            width = Counter(len(v) for v in found.values()).most_common(1)[0][0]
            found = {digest: v for digest, v in found.items() if len(v) == width}
        return found

    def put(self, identity: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None:
        """Store vectors; a failed write turns caching off for the run (a full disk
        raises ``OSError(ENOSPC)``)."""
        if not self.faults.writable:
            return
        try:
            self._db.executemany(
                "INSERT OR REPLACE INTO vectors (identity, digest, vector) VALUES (?, ?, ?)",
                (
                    (identity, digest, np.asarray(v, dtype=np.float32).tobytes())
                    for digest, v in items
                ),
            )
            self._db.commit()
        except sqlite3.Error as exc:
            with contextlib.suppress(sqlite3.Error):
                self._db.rollback()
            self.faults.write_failed(exc)

    def __len__(self) -> int:
        return int(self._db.execute("SELECT COUNT(*) FROM vectors").fetchone()[0])

    def close(self) -> None:
        self._db.close()

    def __enter__(self) -> EmbeddingCache:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def embed_cached(
    embedder: Embedder, texts: Sequence[str], cache: EmbeddingCache | None
) -> np.ndarray:
    """``embedder.embed(texts)``, embedding only the texts ``cache`` does not hold yet
    (each distinct text once) and storing them. Without a cache, a plain ``embed``."""
    if cache is None:
        return embedder.embed(texts)
    dim = embedder.dim
    lookup = CachedTexts(cache, embedder.identity, texts, dim)
    if lookup.missing:
        lookup.fill(embedder.embed(list(lookup.missing.values())))
    return lookup.matrix(dim)
