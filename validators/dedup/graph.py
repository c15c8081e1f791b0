"""The near-duplicate graph: records as nodes, verified duplicate pairs as edges.

Three ways to propose a pair, each checked before it becomes an edge:

- ``exact``: the compared text after :func:`~.signatures.normalise` (NFKC, casefold,
  whitespace collapsed) has the same 128-bit blake2b digest; similarity 1.0;
- ``minhash``: MinHash signatures (Broder, 1997) banded for locality-sensitive hashing
  (:mod:`.signatures`); a pair sharing a band bucket is verified by the true Jaccard
  similarity of its shingle sets, kept when ``>= threshold``;
- ``semantic``: embedding cosine over each record's ``top_k`` nearest neighbours,
  kept when ``>= semantic_threshold`` (SemDeDup, Abbas et al., 2023, arXiv 2303.09540).

Connected components of the graph are the duplicate groups. :meth:`NearDuplicateGraph.resolve`
keeps one record per group (highest score, then lowest id, ids compared as strings)
and returns every other one as a rejection naming the id it lost to and how similar
it was, so nothing is dropped without a reason.

What the graph keeps per record is its id (:class:`RecordIds`), a text digest, its
score and its LSH band keys (with ``semantic``, also its embedding); candidate pairs
are verified by fetching just the records involved, so the records themselves need
not be held (:meth:`NearDuplicateGraph.build_stream`).
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
from array import array
from collections.abc import Callable, Iterable, Sequence
from itertools import islice
from typing import Any

import numpy as np

from evoforge.io.writers import atomic_output
from evoforge.steps import Rejection
from evoforge.validators.dedup.ray_data import embed_texts, key_pipeline, pair_checker
from evoforge.validators.dedup.signatures import (
    RECALL_WEIGHT,
    ShingleHasher,
    lsh_params,
    normalise,
    record_text,
)

__all__ = ["NearDuplicateGraph", "RecordIds", "connected_components", "dedup"]

_METHODS = ("exact", "minhash", "semantic")
_VERIFY_BLOCK = 1 << 13  # candidate pairs verified per re-read of their records


def connected_components(n: int, left: np.ndarray, right: np.ndarray) -> np.ndarray:
    """Root label of each of ``n`` nodes joined by edges ``left[i] -- right[i]``.

    A vectorised union-find: every round hooks the larger root of each edge's two
    roots under the smaller (``np.minimum.at``), then compresses paths by pointer
    jumping until each node points at its root. Roots only ever decrease, so there
    are no cycles; it stops when every edge has one root at both ends. The label of a
    component is its smallest node.
    """
    parent = np.arange(n, dtype=np.int64)
    left = np.asarray(left, dtype=np.int64)
    right = np.asarray(right, dtype=np.int64)
    while len(left):
        ru, rv = parent[left], parent[right]
        differ = ru != rv
        if not differ.any():
            break
        lo = np.minimum(ru[differ], rv[differ])
        hi = np.maximum(ru[differ], rv[differ])
        np.minimum.at(parent, hi, lo)
        while True:
            jumped = parent[parent]
            if np.array_equal(jumped, parent):
                break
            parent = jumped
        left, right = left[differ], right[differ]  # edges already inside one root stay so
    return parent


def _shared_bucket_pairs(bands: Iterable[np.ndarray], n: int) -> np.ndarray:
    """Pairs ``i < j`` of the ``n`` positions with equal labels in at least one of
    ``bands`` (one label array each, taken one at a time), sorted, without repeats."""
    found: list[np.ndarray] = []
    for labels in bands:
        _, inverse, counts = np.unique(labels, return_inverse=True, return_counts=True)
        shared = counts[inverse] >= 2
        if not shared.any():
            continue
        members = np.flatnonzero(shared)
        order = np.lexsort((members, inverse[members]))
        members = members[order]
        cuts = np.flatnonzero(np.diff(inverse[members])) + 1
        for bucket in np.split(members, cuts):
            i, j = np.triu_indices(len(bucket), k=1)
            found.append(bucket[i] * n + bucket[j])
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    codes = np.unique(np.concatenate(found).astype(np.int64))
    return np.stack((codes // n, codes % n), axis=1)


def _first_of_equal_rows(rows: np.ndarray) -> np.ndarray:
    """For each row of an ``(n, 2)`` array, the index of the first row equal to it."""
    n = len(rows)
    if not n:
        return np.empty(0, dtype=np.int64)
    order = np.lexsort((np.arange(n), rows[:, 1], rows[:, 0]))
    ordered = rows[order]
    starts = np.ones(n, dtype=bool)
    starts[1:] = (ordered[1:] != ordered[:-1]).any(axis=1)
    first = order[starts][np.cumsum(starts) - 1]
    out = np.empty(n, dtype=np.int64)
    out[order] = first
    return out


class NearDuplicateGraph:
    """Records as nodes, verified near-duplicate pairs as edges (see the module docstring).

    ``edges`` maps ``(i, j)`` (record indices, ``i < j``) to ``(method, similarity)``;
    when several methods find a pair the first of exact, minhash, semantic is kept.
    Records need a unique ``id``; ids are compared as strings. ``shards`` worker
    processes compute the MinHash signatures, ``batch_size`` records at a time (1:
    in this process); the graph is the same for any number.
    """

    def __init__(
        self,
        *,
        methods: Sequence[str] = ("exact", "minhash"),
        threshold: float = 0.7,
        semantic_threshold: float = 0.9,
        fields: Sequence[str] = ("instruction", "output"),
        num_perm: int = 128,
        seed: int = 1,
        embedder: Any = None,
        top_k: int = 10,
        n_words: int = 3,
        n_chars: int = 5,
        shards: int = 1,
        batch_size: int = 4096,
        executor: str = "local",
    ) -> None:
        unknown = [m for m in methods if m not in _METHODS]
        if unknown:
            raise ValueError(f"unknown dedup method(s) {unknown}; use some of {list(_METHODS)}")
        if "semantic" in methods and embedder is None:
            raise ValueError(
                "dedup method 'semantic' needs an embedder: pass "
                "embedder=evoforge.embeddings.load_embedder(...)"
            )
        if shards < 1:
            raise ValueError(f"shards must be at least 1, got {shards}")
        self.methods = tuple(methods)
        self.threshold = threshold
        self.semantic_threshold = semantic_threshold
        self.fields = tuple(fields)
        self.num_perm = num_perm
        self.seed = seed
        self.embedder = embedder
        self.top_k = top_k
        self.n_words = n_words
        self.n_chars = n_chars
        self.shards = shards
        self.batch_size = batch_size
        self.executor = executor  # "ray[:ADDRESS]": signatures on Ray Data (.ray_data)
        self.bands, self.rows = lsh_params(threshold, num_perm, RECALL_WEIGHT)
        self.records: list[dict[str, Any]] = []
        self.ids = RecordIds()
        self.edges: dict[tuple[int, int], tuple[str, float]] = {}
        self.candidates: dict[str, int] = {}
        self._digests = np.empty((0, 2), dtype=np.uint64)
        self._scores: np.ndarray | None = None
        self._roots: np.ndarray = np.empty(0, dtype=np.int64)
        self._fetch: Callable[[Sequence[int]], Iterable[dict[str, Any]]] = lambda _: ()

    # ------------------------------------------------------------------ building

    def build(self, records: Sequence[dict[str, Any]]) -> NearDuplicateGraph:
        """Find and verify the duplicate pairs among ``records``; returns ``self``."""
        self.records = list(records)
        return self._build(self.records, lambda indices: [self.records[i] for i in indices])

    def build_stream(
        self,
        records: Iterable[dict[str, Any]],
        fetch: Callable[[Sequence[int]], Iterable[dict[str, Any]]],
        *,
        score: Callable[[dict[str, Any]], float] | None = None,
    ) -> NearDuplicateGraph:
        """Like :meth:`build`, holding no record: ``records`` is read once, and
        ``fetch(indices)`` gives back the records at those positions (in that order)
        when a candidate pair needs verifying. ``score`` is read as the records pass
        (``resolve`` then uses it). ``self.records`` stays empty."""
        self.records = []
        return self._build(records, fetch, score)

    def _build(
        self,
        records: Iterable[dict[str, Any]],
        fetch: Callable[[Sequence[int]], Iterable[dict[str, Any]]],
        score: Callable[[dict[str, Any]], float] | None = None,
    ) -> NearDuplicateGraph:
        self._fetch = fetch
        self.ids, self.edges, self.candidates = RecordIds(), {}, {}
        digests = bytearray()
        scores: list[float] = []
        keys: list[np.ndarray] = []
        shingled: list[np.ndarray] = []
        band_args = (self.num_perm, self.seed, self.bands, self.rows, self.n_words, self.n_chars)
        active = "minhash" in self.methods
        with key_pipeline(self.executor, active, self.shards, band_args) as pipeline:
            iterator = iter(records)
            while batch := list(islice(iterator, self.batch_size)):
                texts = []
                for record in batch:
                    index = len(self.ids)
                    if not isinstance(record, dict) or "id" not in record:
                        raise ValueError(
                            f'record {index}: field "id" is missing (dedup names records by id)'
                        )
                    self.ids.append(record["id"])
                    text = normalise(record_text(record, self.fields))
                    digests += hashlib.blake2b(text.encode("utf-8"), digest_size=16).digest()
                    if score is not None:
                        scores.append(float(score(record)))
                    texts.append(text)
                for batch_keys, batch_shingled in pipeline.submit(texts):
                    keys.append(batch_keys)
                    shingled.append(batch_shingled)
            for batch_keys, batch_shingled in pipeline.drain():
                keys.append(batch_keys)
                shingled.append(batch_shingled)
        n = len(self.ids)
        twice = self.ids.first_repeat()
        if twice is not None:
            raise ValueError(f"record id {twice!r} appears more than once; ids must be unique")
        self._digests = np.frombuffer(bytes(digests), dtype="<u8").reshape(n, 2)
        self._scores = np.array(scores, dtype=np.float64) if score is not None else None
        # Identical texts: one representative (the first) stands for the rest.
        representative = _first_of_equal_rows(self._digests)
        if "exact" in self.methods:
            copies = np.flatnonzero(representative != np.arange(n))
            self.candidates["exact"] = len(copies)
            for i in copies.tolist():
                self._add(int(representative[i]), i, "exact", 1.0)
            unique = np.flatnonzero(representative == np.arange(n))
        else:
            unique = np.arange(n)
        if "minhash" in self.methods:
            self._minhash(unique, keys, np.concatenate(shingled) if shingled else np.zeros(0, bool))
        if "semantic" in self.methods:
            self._semantic(unique)
        self._components()
        return self

    def _texts(self, indices: Sequence[int]) -> list[str]:
        return [normalise(record_text(r, self.fields)) for r in self._fetch(indices)]

    def _add(self, i: int, j: int, method: str, similarity: float) -> None:
        key = (i, j) if i < j else (j, i)
        if key not in self.edges:
            self.edges[key] = (method, float(similarity))

    def _minhash(self, indices: np.ndarray, keys: list[np.ndarray], shingled: np.ndarray) -> None:
        indices = indices[shingled[indices]]  # a text with no words matches nothing
        if not len(indices):
            self.candidates["minhash"] = 0
            return
        # one band's keys at a time: 8 bytes a record instead of 8 x bands
        bands = (np.concatenate([k[:, band] for k in keys])[indices] for band in range(self.bands))
        pairs = indices[_shared_bucket_pairs(bands, len(indices))]
        self.candidates["minhash"] = len(pairs)
        shingler = ShingleHasher(n_words=self.n_words, n_chars=self.n_chars)
        # On Ray the pairs are checked by Ray Data jobs (.ray_data), larger blocks each.
        check, size = pair_checker(self.executor, shingler, self.batch_size, _VERIFY_BLOCK)
        for block in range(0, len(pairs), size):
            chunk = pairs[block : block + size]
            needed = np.unique(chunk).tolist()
            texts = dict(zip(needed, self._texts(needed), strict=True))
            for (a, b), similarity in zip(chunk.tolist(), check(chunk, texts), strict=True):
                if similarity >= self.threshold:
                    self._add(a, b, "minhash", similarity)

    def _semantic(self, indices: np.ndarray) -> None:
        from evoforge.generators.knowledge_graph import nearest_neighbours

        vectors = embed_texts(self.executor, self.embedder, self._texts(indices.tolist()))
        links = nearest_neighbours(vectors, top_k=self.top_k, threshold=self.semantic_threshold)
        self.candidates["semantic"] = len(links)
        for a, b, cosine in links:
            self._add(int(indices[a]), int(indices[b]), "semantic", cosine)

    def _components(self) -> None:
        if self.edges:
            pairs = np.array(list(self.edges), dtype=np.int64)
            self._roots = connected_components(len(self.ids), pairs[:, 0], pairs[:, 1])
        else:
            self._roots = np.arange(len(self.ids), dtype=np.int64)

    # ------------------------------------------------------------------ reading

    def _groups(self) -> list[list[int]]:
        """Record indices of each component of two or more, sorted by id."""
        if not self.edges:
            return []
        members = np.unique(np.array(list(self.edges), dtype=np.int64))
        groups: dict[int, list[int]] = {}
        for index, root in zip(members.tolist(), self._roots[members].tolist(), strict=True):
            groups.setdefault(root, []).append(index)
        out = [sorted(g, key=self.ids.__getitem__) for g in groups.values()]
        return sorted(out, key=lambda g: self.ids[g[0]])

    def components(self) -> list[list[str]]:
        """Ids of each connected component of two or more records, each sorted; the
        components ordered by their first id."""
        return [[self.ids[i] for i in group] for group in self._groups()]

    def _winner(self, group: list[int], score: Callable[[dict[str, Any]], float] | None) -> int:
        if score is not None:
            return min(group, key=lambda i: (-float(score(self.records[i])), self.ids[i]))
        if self._scores is not None:
            scores = self._scores
            return min(group, key=lambda i: (-scores[i], self.ids[i]))
        return group[0]  # sorted by id

    def _widest_paths(
        self, adjacency: dict[int, list[tuple[int, str, float]]], winner: int
    ) -> dict[int, tuple[int, str, float]]:
        """For each member of the winner's group, its predecessor on the path from
        ``winner`` whose weakest edge is strongest (Prim on similarities), with that
        edge's method and similarity."""
        best: dict[int, tuple[int, str, float]] = {}
        done = {winner}
        heap: list[tuple[float, str, int, int, str]] = []
        for j, method, similarity in adjacency[winner]:
            heapq.heappush(heap, (-similarity, self.ids[j], j, winner, method))
        while heap:
            neg, _, node, parent, method = heapq.heappop(heap)
            if node in done:
                continue
            done.add(node)
            best[node] = (parent, method, -neg)
            for j, m, similarity in adjacency[node]:
                if j not in done:
                    heapq.heappush(heap, (-similarity, self.ids[j], j, node, m))
        return best

    def _adjacency(self) -> dict[int, list[tuple[int, str, float]]]:
        adjacency: dict[int, list[tuple[int, str, float]]] = {}
        for (i, j), (method, similarity) in self.edges.items():
            adjacency.setdefault(i, []).append((j, method, similarity))
            adjacency.setdefault(j, []).append((i, method, similarity))
        return adjacency

    def resolve(
        self, score: Callable[[dict[str, Any]], float] | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Keep one record per component: the highest ``score``, then the lowest id.

        Returns ``(kept, dropped)``: kept records in input order, and for each dropped
        record ``{"id", "reason": "duplicate", "detail", "lost_to", "similarity",
        "method"}``. The similarity is that of the edge to the winner when there is one;
        otherwise the weakest edge on the strongest path to it, and ``detail`` says
        ``via`` which records. After :meth:`build_stream` ``kept`` is empty (the
        records were not held): see :meth:`dropped_by_index`.
        """
        dropped_at = self.dropped_by_index(score)
        kept = [r for i, r in enumerate(self.records) if i not in dropped_at]
        return kept, [dropped_at[i] for i in sorted(dropped_at)]

    def dropped_by_index(
        self, score: Callable[[dict[str, Any]], float] | None = None
    ) -> dict[int, dict[str, Any]]:
        """The rejections of :meth:`resolve`, keyed by record index, as lines."""
        found = self.rejections_by_index(score)
        return {i: rejection.to_json(record=False, step=False) for i, rejection in found.items()}

    def rejections_by_index(
        self, score: Callable[[dict[str, Any]], float] | None = None
    ) -> dict[int, Rejection]:
        """Each dropped record's :class:`~evoforge.steps.Rejection` (``step``
        ``"dedup.METHOD"``, ``lost_to``, ``extra``: similarity and method), by index."""
        dropped_at: dict[int, Rejection] = {}
        adjacency = self._adjacency()
        for group in self._groups():
            winner = self._winner(group, score)
            winner_id = self.ids[winner]
            tree = self._widest_paths(adjacency, winner)
            for member in group:
                if member == winner:
                    continue
                direct = self.edges.get((min(member, winner), max(member, winner)))
                if direct is None and np.array_equal(self._digests[member], self._digests[winner]):
                    direct = ("exact", 1.0)  # identical texts are linked via one representative
                if direct is not None:
                    method, similarity = direct
                    detail = f"{method} similarity {similarity:.3f} to {winner_id}"
                else:
                    path: list[int] = []
                    node = member
                    method, similarity = tree[member][1], tree[member][2]
                    while node != winner:
                        parent, m, s = tree[node]
                        if s < similarity:
                            method, similarity = m, s
                        if parent != winner:
                            path.append(parent)
                        node = parent
                    via = ", ".join(self.ids[i] for i in path)
                    detail = f"{method} similarity {similarity:.3f} to {winner_id} via {via}"
                extra = {"similarity": similarity, "method": method}
                dropped_at[member] = Rejection(self.ids.raw(member), "duplicate", detail,
                    step=f"dedup.{method}", lost_to=self.ids.raw(winner), extra=extra)  # fmt: skip
        return dropped_at

    def write_clusters(
        self, path: str | os.PathLike[str], score: Callable[[dict[str, Any]], float] | None = None
    ) -> None:
        """JSON lines, one per component: ``{"cluster": i, "ids": [...], "kept": id}``."""
        with atomic_output(path) as handle:
            for number, group in enumerate(self._groups()):
                winner = self._winner(group, score)
                line = {
                    "cluster": number,
                    "ids": [self.ids.raw(i) for i in group],
                    "kept": self.ids.raw(winner),
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")


class RecordIds(Sequence[str]):
    """Record ids as strings (``ids[i]``) and as given (``ids.raw(i)``), kept in one
    bytes buffer: a million ids as Python strings would take ~100 MB scattered
    between the records that were read and freed around them."""

    def __init__(self) -> None:
        self._data = bytearray()
        self._ends = array("q")
        self._hashes = array("Q")

    def append(self, raw: Any) -> None:
        text = str(raw)
        self._data += (
            b"s" + text.encode("utf-8") if isinstance(raw, str) else b"j" + json.dumps(raw).encode()
        )
        self._ends.append(len(self._data))
        self._hashes.append(
            int.from_bytes(hashlib.blake2b(text.encode("utf-8"), digest_size=8).digest(), "little")
        )

    def raw(self, index: int) -> Any:
        """The id as the record gave it (a string, a number, ...)."""
        index = range(len(self))[index]
        chunk = bytes(self._data[self._ends[index - 1] if index else 0 : self._ends[index]])
        return chunk[1:].decode("utf-8") if chunk[:1] == b"s" else json.loads(chunk[1:])

    def __getitem__(self, index: int) -> str:  # type: ignore[override]
        return str(self.raw(index))

    def __len__(self) -> int:
        return len(self._ends)

    def first_repeat(self) -> str | None:
        """An id that appears twice (the smallest such), or None."""
        hashes = (
            np.frombuffer(self._hashes, dtype=np.uint64)
            if len(self._hashes)
            else np.empty(0, np.uint64)
        )
        order = np.argsort(hashes, kind="stable")
        same = np.flatnonzero(hashes[order][1:] == hashes[order][:-1])
        repeated = {
            self[int(order[k])] for k in same if self[int(order[k])] == self[int(order[k + 1])]
        }
        return min(repeated) if repeated else None


def dedup(
    records: Sequence[dict[str, Any]],
    *,
    score: Callable[[dict[str, Any]], float] | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``NearDuplicateGraph(**kwargs).build(records).resolve(score)``."""
    return NearDuplicateGraph(**kwargs).build(records).resolve(score)
