"""Cache faults never cost data (issue 15, item 2): a corrupt page, a corrupt row or a
database that cannot be opened, in the response cache or the embedding cache, is a
cache miss; the call is made again, a warning is shown once, and no record is rejected.
"""

from __future__ import annotations

import errno
import sqlite3
from pathlib import Path

import numpy as np
import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.embeddings import EmbeddingCache, embed_cached
from evoforge.embeddings.hashing import HashingEmbedder
from evoforge.engine.store import ResponseCache
from evoforge.llm.base import Completion
from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability

SEEDS = 40
PAGE = 4096
READ_WARNING = "a read failed"


def answer(server, seeds: Path, out: Path, cache: Path):
    llm = f"openai:fake-model@{server.base_url}"
    args = ["answer", "--seeds", str(seeds), "--out", str(out), "--llm", llm, "-q"]
    result = CliRunner().invoke(app, [*args, "--cache-dir", str(cache)])
    assert "Traceback" not in result.output
    return result


def first_run(server, tmp_path: Path) -> tuple[Path, Path]:
    """A complete run that fills the cache; the seeds file and the cache folder."""
    rows = [{"id": f"s{i:02d}", "instruction": f"Explain idea number {i}."} for i in range(SEEDS)]
    seeds = write_jsonl(tmp_path / "seeds.jsonl", rows)
    cache = tmp_path / "cache"
    result = answer(server, seeds, tmp_path / "first.jsonl", cache)
    assert result.exit_code == 0, result.output
    assert server.hits == SEEDS
    return seeds, cache


def assert_nothing_lost(result, server, out: Path, remade: int, spread: int = 0) -> None:
    """Exit 0, every seed answered, no rejection, and ``remade`` calls made again (up to
    ``spread`` more)."""
    assert result.exit_code == 0, result.output
    assert len(read_jsonl(out)) == SEEDS
    assert read_jsonl(out.with_name(out.stem + ".rejects.jsonl")) == []
    assert SEEDS + remade <= server.hits <= SEEDS + remade + spread, result.output


def keys(db: Path) -> list[str]:
    with sqlite3.connect(db) as conn:
        found = [row[0] for row in conn.execute("SELECT key FROM responses ORDER BY key")]
    conn.close()
    return found


def a_leaf_page(db: Path) -> tuple[int, int]:
    """The offset and cell count of a B-tree leaf page of the cache's table that is not
    its only page (a leaf of an index B-tree: the table is WITHOUT ROWID)."""
    data = db.read_bytes()
    leaves = [
        (start, int.from_bytes(data[start + 3 : start + 5], "big"))
        for start in range(PAGE, len(data), PAGE)
        if data[start] == 0x0A
    ]
    assert len(leaves) >= 2, "the cache should span several leaf pages"
    return leaves[len(leaves) // 2]


def test_a_corrupt_page_in_the_response_cache_is_a_miss_not_a_reject(fake_openai, tmp_path):
    """The issue's case: a corrupt page in llm-cache.db made its records
    ``internal_error`` rejects (database disk image is malformed) with exit 0. Now they
    are misses: the calls are made again, once warned, nothing rejected; the fresh
    answers cannot be written to the broken page, which turns caching off, also warned
    once."""
    seeds, cache = first_run(fake_openai, tmp_path)
    db = cache / "llm-cache.db"
    start, cells = a_leaf_page(db)
    with db.open("r+b") as handle:
        handle.seek(start + 8)  # the cell pointer array: every cell now points off the page
        handle.write(b"\xff\xff" * cells)
    result = answer(fake_openai, seeds, tmp_path / "second.jsonl", cache)
    assert 0 < cells < SEEDS
    # The page's own keys, and a neighbour or two whose search passes through it.
    assert_nothing_lost(result, fake_openai, tmp_path / "second.jsonl", remade=cells, spread=3)
    # Whether SQLite notices the broken page on a read depends on the B-tree's layout,
    # which follows the order the first run's answers came back in: in about 1 run of 30
    # the lookups through it just miss, and only the write onto it fails. Either way each
    # warning is shown at most once, and the calls are made again.
    assert result.stderr.count(READ_WARNING) <= 1
    assert "database disk image is malformed" in result.stderr
    assert result.stderr.count("a write failed") == 1
    assert "carries on without caching" in result.stderr


def test_a_corrupt_row_in_the_response_cache_is_a_miss(fake_openai, tmp_path):
    seeds, cache = first_run(fake_openai, tmp_path)
    db = cache / "llm-cache.db"
    broken = keys(db)[:3]
    with sqlite3.connect(db) as conn:
        conn.execute("UPDATE responses SET completion = '{\"text\": tru' WHERE key = ?", broken[:1])
        conn.execute("UPDATE responses SET completion = '[1, 2]' WHERE key = ?", broken[1:2])
        conn.execute("UPDATE responses SET completion = '{}' WHERE key = ?", broken[2:])
    conn.close()
    result = answer(fake_openai, seeds, tmp_path / "second.jsonl", cache)
    assert_nothing_lost(result, fake_openai, tmp_path / "second.jsonl", remade=3)
    assert result.stderr.count(READ_WARNING) == 1
    # The remade answers replaced the broken rows: a third run makes no call.
    third = answer(fake_openai, seeds, tmp_path / "third.jsonl", cache)
    assert third.exit_code == 0 and fake_openai.hits == SEEDS + 3
    assert READ_WARNING not in third.stderr


def test_a_response_cache_that_cannot_be_opened_is_moved_aside(fake_openai, tmp_path):
    seeds, cache = first_run(fake_openai, tmp_path)
    db = cache / "llm-cache.db"
    with db.open("r+b") as handle:
        handle.write(b"this is not an SQLite header" * 4)
    result = answer(fake_openai, seeds, tmp_path / "second.jsonl", cache)
    assert_nothing_lost(result, fake_openai, tmp_path / "second.jsonl", remade=SEEDS)
    (aside,) = cache.glob("llm-cache.db.broken-*")
    assert aside.read_bytes().startswith(b"this is not an SQLite header")
    assert f"{db} could not be read" in result.stderr
    assert f"moved aside to {aside}" in result.stderr
    assert len(keys(db)) == SEEDS  # the new cache holds this run's answers


def test_a_response_cache_write_fault_is_not_a_reject_and_a_full_disk_is_enospc(tmp_path, capsys):
    """A write that fails turns caching off (warned once); one that fails for want of
    space raises OSError(ENOSPC), which stops the run resumably (issue 15, item 4)."""
    cache = ResponseCache(tmp_path / "c.db")
    cache.put("a", Completion("first"))
    cache.flush()
    cache._conn.execute("PRAGMA query_only = 1")  # every write now fails
    cache.put("b", Completion("second"))
    cache.flush()
    cache.put("c", Completion("third"))
    cache.flush()
    warnings = capsys.readouterr().err.splitlines()
    assert len(warnings) == 1 and "a write failed" in warnings[0]
    assert cache.get("a") == Completion("first", model="")
    assert cache.get("b") is None
    full = sqlite3.OperationalError("database or disk is full")
    with pytest.raises(OSError) as raised:
        cache.faults.write_failed(full)
    assert raised.value.errno == errno.ENOSPC
    cache.close()


def test_embedding_cache_faults_are_misses(tmp_path, capsys):
    """The embedding cache: a row that is not a vector is embedded again, and a database
    that cannot be opened is moved aside (it was a ConfigError that stopped ``rag``)."""
    embedder = HashingEmbedder(dim=32)
    texts = [f"chunk number {i} about topic {i % 5}" for i in range(30)]
    path = tmp_path / "embeddings.db"
    with EmbeddingCache(path) as cache:
        expected = embed_cached(embedder, texts, cache)
    with sqlite3.connect(path) as conn:
        digests = [row[0] for row in conn.execute("SELECT digest FROM vectors LIMIT 2")]
        conn.execute("UPDATE vectors SET vector = X'01020304050607' WHERE digest = ?", digests[:1])
        conn.execute("UPDATE vectors SET vector = 'text' WHERE digest = ?", digests[1:])
    conn.close()
    calls: list[int] = []
    counting = _Counting(embedder, calls)
    with EmbeddingCache(path) as cache:
        again = embed_cached(counting, texts, cache)
    np.testing.assert_allclose(again, expected, rtol=1e-6)
    warnings = capsys.readouterr().err.splitlines()
    assert calls == [2] and len(warnings) == 1 and READ_WARNING in warnings[0]

    path.write_bytes(b"garbage, not a database" * 100)
    warnings = []
    with EmbeddingCache(path, warn=warnings.append) as cache:
        again = embed_cached(embedder, texts, cache)
        assert len(cache) == len(texts)
    np.testing.assert_allclose(again, expected, rtol=1e-6)
    (aside,) = tmp_path.glob("embeddings.db.broken-*")
    assert "moved aside to" in warnings[0] and str(aside) in warnings[0]


class _Counting:
    """An embedder that records how many texts each call embedded."""

    def __init__(self, inner: HashingEmbedder, calls: list[int]) -> None:
        self.inner, self.calls = inner, calls

    @property
    def identity(self):
        return self.inner.identity

    @property
    def dim(self):
        return self.inner.dim

    def embed(self, texts):
        self.calls.append(len(texts))
        return self.inner.embed(texts)
