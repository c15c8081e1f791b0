"""Dedup a JSON-lines file larger than memory.

Records stream through once (:class:`JsonlRecords` remembers each one's byte offset);
the graph keeps a few numbers per record, and candidate pairs are verified by
re-reading just the records involved (:meth:`JsonlRecords.fetch` seeks to their
offsets), so :func:`dedup_jsonl` runs over a file far larger than memory (1M records in
445 MiB peak RSS, ``bench/dedup.py``). With ``shards=N`` the signatures are computed
in N worker processes (:mod:`.shards`), and the result is identical to one process.
"""

from __future__ import annotations

import json
import os
from array import array
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

from evoforge.errors import InputError
from evoforge.io.writers import atomic_output
from evoforge.validators.dedup.graph import NearDuplicateGraph

__all__ = ["JsonlRecords", "dedup_jsonl"]


class JsonlRecords:
    """The records of a JSON-lines file, read as a stream. Reading remembers each
    record's byte offset (8 bytes a record), so :meth:`fetch` can re-read a few of
    them and :meth:`lines` can copy chosen lines verbatim; blank lines are skipped
    and do not count. A line that is not a JSON object raises :class:`InputError`
    naming it."""

    def __init__(self, path: str | os.PathLike[str]) -> None:
        self.path = Path(path)
        if not self.path.is_file():
            raise InputError("no such file", path=str(self.path))
        self.offsets = array("q")

    def _lines(self) -> Iterator[tuple[int, int, bytes]]:
        """``(line number, byte offset, line)`` of each non-blank line."""
        with open(self.path, "rb") as handle:
            offset = 0
            for number, line in enumerate(handle, start=1):
                if line.strip():
                    yield number, offset, line
                offset += len(line)

    def _parse(self, line: bytes, number: int | None) -> dict[str, Any]:
        try:
            data = json.loads(line)
        except (UnicodeDecodeError, json.JSONDecodeError) as exc:
            raise InputError(
                f"is not a JSON record ({exc})", path=str(self.path), line=number
            ) from None
        if not isinstance(data, dict):
            raise InputError("is not a JSON object", path=str(self.path), line=number)
        return data

    def __iter__(self) -> Iterator[dict[str, Any]]:
        self.offsets = array("q")
        for number, offset, line in self._lines():
            self.offsets.append(offset)
            yield self._parse(line, number)

    def fetch(self, indices: Sequence[int]) -> list[dict[str, Any]]:
        """The records at these positions (as counted by the last full read), in order;
        read by seeking, in file order."""
        found: dict[int, dict[str, Any]] = {}
        with open(self.path, "rb") as handle:
            for index in sorted(set(indices)):
                handle.seek(self.offsets[index])
                found[index] = self._parse(handle.readline(), None)
        return [found[i] for i in indices]

    def lines(self) -> Iterator[tuple[int, bytes]]:
        """``(record index, line bytes)`` of each record, in file order."""
        for index, (_, _, line) in enumerate(self._lines()):
            yield index, line


def dedup_jsonl(
    source: str | os.PathLike[str],
    out: str | os.PathLike[str],
    rejects: str | os.PathLike[str],
    *,
    score: Callable[[dict[str, Any]], float] | None = None,
    clusters: str | os.PathLike[str] | None = None,
    **kwargs: Any,
) -> dict[str, Any]:
    """Dedup a JSON-lines file without holding its records: one pass builds the graph
    (:meth:`NearDuplicateGraph.build_stream`), a second copies the kept lines verbatim
    to ``out``; the rejections go to ``rejects`` in input order and, when asked, the
    groups to ``clusters``. ``kwargs`` are those of :class:`NearDuplicateGraph`
    (``shards=N`` included). Returns counts: input, kept, dropped, dropped by method,
    groups."""
    records = JsonlRecords(source)
    graph = NearDuplicateGraph(**kwargs).build_stream(records, records.fetch, score=score)
    dropped = graph.rejections_by_index()
    with atomic_output(out, binary=True) as handle:
        for index, line in records.lines():
            if index not in dropped:
                handle.write(line if line.endswith(b"\n") else line + b"\n")
    by_method: dict[str, int] = {}
    with atomic_output(rejects) as handle:
        for index in sorted(dropped):
            rejection = dropped[index]
            method = rejection.extra["method"]
            by_method[method] = by_method.get(method, 0) + 1
            line = rejection.to_json(record=False, step=False)  # only ids were held
            handle.write(json.dumps(line, ensure_ascii=False) + "\n")
    if clusters is not None:
        graph.write_clusters(clusters)
    return {
        "input": len(graph.ids),
        "kept": len(graph.ids) - len(dropped),
        "dropped": len(dropped),
        "dropped_by_method": by_method,
        "groups": len(graph._groups()),
    }
