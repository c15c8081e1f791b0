"""Near-duplicate detection: a graph of verified duplicate pairs, one survivor per group.

Three ways to propose a pair, each checked before it becomes an edge:

- ``exact``: the compared text after :func:`normalise` (NFKC, casefold, whitespace
  collapsed) hashes the same; verified by string equality, similarity 1.0;
- ``minhash``: MinHash signatures (Broder, 1997, "On the resemblance and containment
  of documents") banded for locality-sensitive hashing (Leskovec, Rajaraman & Ullman,
  *Mining of Massive Datasets*, ch. 3.4); a pair sharing a band bucket is verified by
  the true Jaccard similarity of its shingle sets, kept when ``>= threshold``;
- ``semantic``: embedding cosine over each record's ``top_k`` nearest neighbours,
  kept when ``>= semantic_threshold`` (SemDeDup, Abbas et al., 2023, arXiv 2303.09540).

Connected components of the graph are the duplicate groups. :meth:`NearDuplicateGraph.resolve`
keeps one record per group (highest score, then lowest id, ids compared as strings)
and returns every other one as a rejection naming the id it lost to and how similar
it was, so nothing is dropped without a reason.

Signatures are per record (no corpus-level state), so they may be computed in shards
and concatenated. Output depends only on the input records, the parameters and the
seed; which record is kept does not depend on input order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import unicodedata
from collections.abc import Callable, Sequence
from functools import cache
from typing import Any

import numpy as np

from evoforge.validators.heuristics import _is_cjk, words

__all__ = [
    "candidate_probability",
    "connected_components",
    "lsh_candidate_pairs",
    "MinHasher",
    "NearDuplicateGraph",
    "dedup",
    "lsh_params",
    "normalise",
    "record_text",
    "shingles",
]

_SHIFT32 = np.uint64(32)
_MERSENNE = np.uint64((1 << 61) - 1)
_MAX_HASH = np.uint64((1 << 61) - 2)  # the largest value a permutation can give
_SPACES = re.compile(r"\s+")
_METHODS = ("exact", "minhash", "semantic")
_SHINGLE_CHUNK = 1 << 15  # shingles hashed per numpy step: 32k x 128 perms x 8 B = 32 MiB


def normalise(text: str) -> str:
    """Unicode NFKC, casefolded, runs of whitespace collapsed to one space, stripped."""
    return _SPACES.sub(" ", unicodedata.normalize("NFKC", text).casefold()).strip()


def record_text(record: dict[str, Any], fields: Sequence[str]) -> str:
    """The text compared for ``record``: the listed fields that are present, joined by
    newlines. A field holding chat turns (``[{"role", "content"}, ...]``) gives their
    contents joined by newlines; a list of strings gives them joined; other values
    their ``str``."""
    parts: list[str] = []
    for field in fields:
        value = record.get(field)
        if value is None:
            continue
        if isinstance(value, str):
            parts.append(value)
        elif isinstance(value, list | tuple):
            for item in value:
                if isinstance(item, dict):
                    content = item.get("content")
                    if content is not None:
                        parts.append(str(content))
                else:
                    parts.append(str(item))
        else:
            parts.append(str(value))
    return "\n".join(parts)


def shingles(text: str, *, n_words: int = 3, n_chars: int = 5) -> set[str]:
    """The shingle set of ``text`` (pass it through :func:`normalise` first).

    Word ``n_words``-grams when most tokens are words; character ``n_chars``-grams
    (over the letters, punctuation and spaces dropped) when most tokens are CJK
    characters, since Chinese has no spaces to split on. A text with fewer tokens than
    ``n`` gives one shingle, the whole of it; an empty text, none.
    """
    tokens = words(text)
    if not tokens:
        return set()
    cjk = sum(1 for token in tokens if len(token) == 1 and _is_cjk(token))
    if 2 * cjk > len(tokens):
        chars = "".join(tokens)
        if len(chars) <= n_chars:
            return {chars}
        return {chars[i : i + n_chars] for i in range(len(chars) - n_chars + 1)}
    if len(tokens) <= n_words:
        return {" ".join(tokens)}
    return {" ".join(tokens[i : i + n_words]) for i in range(len(tokens) - n_words + 1)}


def _shingle_hashes(shingle_set: set[str]) -> np.ndarray:
    """32-bit blake2b of each shingle (stable across runs and machines, unlike ``hash``)."""
    if not shingle_set:
        return np.empty(0, dtype=np.uint64)
    digests = b"".join(
        hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest() for s in shingle_set
    )
    return np.frombuffer(digests, dtype="<u8").copy()


class MinHasher:
    """MinHash signatures of shingle sets (Broder, 1997).

    Each shingle is hashed once to 64 bits (blake2b), then ``num_perm`` hash
    functions from the multiply-shift family (Dietzfelbinger et al., 1997),
    ``h(x) = ((a*x + b) mod 2^64) >> 32`` with ``a`` odd, are applied to all
    shingles in one numpy operation and the minimum over shingles kept. This is
    cheaper than ``(a*x + b) mod p`` for a prime ``p`` (which took most of the
    time) and keeps the candidate rates on the theoretical S-curve
    (``bench/dedup.py``). ``a`` and ``b`` come from ``numpy.random.default_rng(seed)``.
    An empty set's signature is all ``2^61 - 1`` (larger than any 32-bit hash),
    which matches nothing but another empty set.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be at least 1, got {num_perm}")
        self.num_perm = num_perm
        self.seed = seed
        rng = np.random.default_rng(seed)
        # a odd, a and b uniform over 64 bits: the multiply-shift family.
        self._a = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(
            2
        ) + np.uint64(1)
        self._b = rng.integers(0, 1 << 63, size=num_perm, dtype=np.uint64) * np.uint64(2)

    def _permute_min(self, hashes: np.ndarray, starts: np.ndarray) -> np.ndarray:
        """Minimum of each permutation over ``hashes[starts[i]:starts[i+1]]``; each segment
        non-empty."""
        out = np.empty((len(starts), self.num_perm), dtype=np.uint64)
        bounds = np.append(starts, len(hashes))
        row = 0
        while row < len(starts):
            # take whole records until about _SHINGLE_CHUNK shingles
            stop = int(np.searchsorted(bounds, bounds[row] + _SHINGLE_CHUNK, side="right")) - 1
            stop = min(max(stop, row + 1), len(starts))
            lo, hi = int(bounds[row]), int(bounds[stop])
            # Multiply-shift hashing (Dietzfelbinger et al., 1997): (a*x + b) mod 2^64,
            # top 32 bits. Three array operations instead of a modulo by a prime, which
            # took most of the time.
            values = hashes[lo:hi, None] * self._a
            values += self._b
            values >>= _SHIFT32
            out[row:stop] = np.minimum.reduceat(values, bounds[row:stop] - lo, axis=0)
            row = stop
        return out

    def signature(self, shingle_set: set[str]) -> np.ndarray:
        """``(num_perm,)`` uint64 signature of one set."""
        return self.signatures([shingle_set])[0]

    def signatures(self, sets: Sequence[set[str]]) -> np.ndarray:
        """``(len(sets), num_perm)`` uint64 signatures; row ``i`` depends on ``sets[i]`` only."""
        out = np.full((len(sets), self.num_perm), _MERSENNE, dtype=np.uint64)
        hashed = [_shingle_hashes(s) for s in sets]
        nonempty = np.array([i for i, h in enumerate(hashed) if len(h)], dtype=np.int64)
        if len(nonempty):
            lengths = np.array([len(hashed[i]) for i in nonempty], dtype=np.int64)
            starts = np.concatenate(([0], np.cumsum(lengths)[:-1]))
            flat = np.concatenate([hashed[i] for i in nonempty])
            out[nonempty] = self._permute_min(flat, starts)
        return out


def candidate_probability(similarity: float | np.ndarray, bands: int, rows: int) -> Any:
    """Probability that two sets of Jaccard ``similarity`` share at least one of ``bands``
    band buckets of ``rows`` rows each: ``1 - (1 - s^rows)^bands`` (the LSH S-curve)."""
    s = np.asarray(similarity, dtype=np.float64)
    return 1.0 - (1.0 - s**rows) ** bands


RECALL_WEIGHT = 0.9  # candidates are verified, so favour recall (see lsh_params)


@cache
def lsh_params(threshold: float, num_perm: int, fn_weight: float = 0.5) -> tuple[int, int]:
    """``(bands, rows)``, ``bands * rows <= num_perm``, that minimise the false-positive
    area under the S-curve below ``threshold`` plus the false-negative area above it,
    weighted ``1 - fn_weight`` and ``fn_weight`` (0.5 each is what
    ``datasketch.lsh._optimal_param`` does; ``NearDuplicateGraph`` uses 0.9 because
    every candidate is verified by its true Jaccard, so a false positive costs one
    comparison while a false negative is a duplicate missed):

        FP = integral_0^t P(s) ds,   FN = integral_t^1 (1 - P(s)) ds,
        P(s) = 1 - (1 - s^rows)^bands.

    The result equals datasketch's (threshold 0.5 -> (25, 5), 0.7 -> (14, 9), 0.9 ->
    (5, 25) at 128 permutations). The curve's steep part sits at the threshold: its
    value there, the chance that a pair exactly at the threshold becomes a candidate,
    is near one half (0.44 at 0.7, 0.55 at 0.5, 0.31 at 0.9 for 128 permutations:
    a little below, because the area above is shorter than the area below).
    Pairs more similar than the threshold are still found: 0.97 at s = 0.85.
    """
    if not 0.0 < threshold < 1.0:
        raise ValueError(f"threshold must be between 0 and 1 (exclusive), got {threshold}")
    below = np.linspace(0.0, threshold, 257)
    above = np.linspace(threshold, 1.0, 257)
    best: tuple[float, int, int] | None = None
    for bands in range(1, num_perm + 1):
        for rows in range(1, num_perm // bands + 1):
            fp = np.trapezoid(candidate_probability(below, bands, rows), below)
            fn = np.trapezoid(1.0 - candidate_probability(above, bands, rows), above)
            error = (1.0 - fn_weight) * fp + fn_weight * fn
            if best is None or error < best[0]:
                best = (float(error), bands, rows)
    assert best is not None
    return best[1], best[2]


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


class NearDuplicateGraph:
    """Records as nodes, verified near-duplicate pairs as edges (see the module docstring).

    ``edges`` maps ``(i, j)`` (record indices, ``i < j``) to ``(method, similarity)``;
    when several methods find a pair the first of exact, minhash, semantic is kept.
    Records need a unique ``id``; ids are compared as strings.
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
    ) -> None:
        unknown = [m for m in methods if m not in _METHODS]
        if unknown:
            raise ValueError(f"unknown dedup method(s) {unknown}; use some of {list(_METHODS)}")
        if "semantic" in methods and embedder is None:
            raise ValueError(
                "dedup method 'semantic' needs an embedder: pass "
                "embedder=evoforge.embeddings.load_embedder(...)"
            )
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
        self.bands, self.rows = lsh_params(threshold, num_perm, RECALL_WEIGHT)
        self.records: list[dict[str, Any]] = []
        self.ids: list[str] = []
        self.edges: dict[tuple[int, int], tuple[str, float]] = {}
        self.candidates: dict[str, int] = {}
        self._roots: np.ndarray = np.empty(0, dtype=np.int64)
        self._texts: list[str] = []

    # ------------------------------------------------------------------ building

    def build(self, records: Sequence[dict[str, Any]]) -> NearDuplicateGraph:
        """Find and verify the duplicate pairs among ``records``; returns ``self``."""
        self.records = list(records)
        self.ids = []
        for index, record in enumerate(self.records):
            if "id" not in record:
                raise ValueError(
                    f'record {index}: field "id" is missing (dedup names records by id)'
                )
            self.ids.append(str(record["id"]))
        if len(set(self.ids)) != len(self.ids):
            seen: set[str] = set()
            twice = next(i for i in self.ids if i in seen or seen.add(i))  # type: ignore[func-returns-value]
            raise ValueError(f"record id {twice!r} appears more than once; ids must be unique")
        self.edges = {}
        self.candidates = {}
        self._texts = [normalise(record_text(r, self.fields)) for r in self.records]
        # Identical texts: one representative (the first) stands for the rest later.
        first: dict[str, int] = {}
        representative = [first.setdefault(t, i) for i, t in enumerate(self._texts)]
        if "exact" in self.methods:
            pairs = [(r, i) for i, r in enumerate(representative) if r != i]
            self.candidates["exact"] = len(pairs)
            for r, i in pairs:
                self._add(r, i, "exact", 1.0)
        unique = (
            sorted(first.values()) if "exact" in self.methods else list(range(len(self.records)))
        )
        if "minhash" in self.methods:
            self._minhash(unique)
        if "semantic" in self.methods:
            self._semantic(unique)
        self._components()
        return self

    def _add(self, i: int, j: int, method: str, similarity: float) -> None:
        key = (i, j) if i < j else (j, i)
        if key not in self.edges:
            self.edges[key] = (method, float(similarity))

    def _minhash(self, indices: list[int]) -> None:
        sets = [
            shingles(self._texts[i], n_words=self.n_words, n_chars=self.n_chars) for i in indices
        ]
        signatures = MinHasher(self.num_perm, self.seed).signatures(sets)
        pairs = lsh_candidate_pairs(signatures, self.bands, self.rows)
        self.candidates["minhash"] = len(pairs)
        for a, b in pairs.tolist():
            sa, sb = sets[a], sets[b]
            if not sa or not sb:
                continue
            union = len(sa | sb)
            similarity = len(sa & sb) / union
            if similarity >= self.threshold:
                self._add(indices[a], indices[b], "minhash", similarity)

    def _semantic(self, indices: list[int]) -> None:
        from evoforge.generators.knowledge_graph import nearest_neighbours

        vectors = self.embedder.embed([self._texts[i] for i in indices])
        links = nearest_neighbours(vectors, top_k=self.top_k, threshold=self.semantic_threshold)
        self.candidates["semantic"] = len(links)
        for a, b, cosine in links:
            self._add(indices[a], indices[b], "semantic", cosine)

    def _components(self) -> None:
        if self.edges:
            pairs = np.array(list(self.edges), dtype=np.int64)
            self._roots = connected_components(len(self.records), pairs[:, 0], pairs[:, 1])
        else:
            self._roots = np.arange(len(self.records), dtype=np.int64)

    # ------------------------------------------------------------------ reading

    def _groups(self) -> list[list[int]]:
        """Record indices of each component of two or more, sorted by id."""
        groups: dict[int, list[int]] = {}
        for index, root in enumerate(self._roots.tolist()):
            groups.setdefault(root, []).append(index)
        out = [sorted(g, key=self.ids.__getitem__) for g in groups.values() if len(g) >= 2]
        return sorted(out, key=lambda g: self.ids[g[0]])

    def components(self) -> list[list[str]]:
        """Ids of each connected component of two or more records, each sorted; the
        components ordered by their first id."""
        return [[self.ids[i] for i in group] for group in self._groups()]

    def _winner(self, group: list[int], score: Callable[[dict[str, Any]], float] | None) -> int:
        if score is None:
            return group[0]  # sorted by id
        return min(group, key=lambda i: (-float(score(self.records[i])), self.ids[i]))

    def _widest_paths(self, group: list[int], winner: int) -> dict[int, tuple[int, str, float]]:
        """For each member, its predecessor on the path from ``winner`` whose weakest edge
        is strongest (Prim on similarities), with that edge's method and similarity."""
        members = set(group)
        adjacency: dict[int, list[tuple[int, str, float]]] = {i: [] for i in group}
        for (i, j), (method, similarity) in self.edges.items():
            if i in members:
                adjacency[i].append((j, method, similarity))
                adjacency[j].append((i, method, similarity))
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

    def resolve(
        self, score: Callable[[dict[str, Any]], float] | None = None
    ) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
        """Keep one record per component: the highest ``score``, then the lowest id.

        Returns ``(kept, dropped)``: kept records in input order, and for each dropped
        record ``{"id", "reason": "duplicate", "detail", "lost_to", "similarity",
        "method"}``. The similarity is that of the edge to the winner when there is one;
        otherwise the weakest edge on the strongest path to it, and ``detail`` says
        ``via`` which records.
        """
        dropped_at: dict[int, dict[str, Any]] = {}
        self._kept_by_group: list[int] = []
        for group in self._groups():
            winner = self._winner(group, score)
            self._kept_by_group.append(winner)
            winner_id = self.ids[winner]
            tree = self._widest_paths(group, winner)
            for member in group:
                if member == winner:
                    continue
                direct = self.edges.get((min(member, winner), max(member, winner)))
                if direct is None and self._texts[member] == self._texts[winner]:
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
                dropped_at[member] = {
                    "id": self.records[member]["id"],
                    "reason": "duplicate",
                    "detail": detail,
                    "lost_to": self.records[winner]["id"],
                    "similarity": similarity,
                    "method": method,
                }
        kept = [r for i, r in enumerate(self.records) if i not in dropped_at]
        dropped = [dropped_at[i] for i in sorted(dropped_at)]
        return kept, dropped

    def write_clusters(
        self, path: str | os.PathLike[str], score: Callable[[dict[str, Any]], float] | None = None
    ) -> None:
        """JSON lines, one per component: ``{"cluster": i, "ids": [...], "kept": id}``."""
        with open(path, "w", encoding="utf-8") as handle:
            for number, group in enumerate(self._groups()):
                winner = self._winner(group, score)
                line = {
                    "cluster": number,
                    "ids": [self.records[i]["id"] for i in group],
                    "kept": self.records[winner]["id"],
                }
                handle.write(json.dumps(line, ensure_ascii=False) + "\n")


def lsh_candidate_pairs(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(m, 2)`` int64 row pairs ``i < j`` that share a bucket in at least one band,
    sorted and without repeats."""
    n = len(signatures)
    found: list[np.ndarray] = []
    for band in range(bands):
        block = np.ascontiguousarray(signatures[:, band * rows : (band + 1) * rows])
        keys = block.view(np.dtype((np.void, block.dtype.itemsize * rows))).ravel()
        _, inverse, counts = np.unique(keys, return_inverse=True, return_counts=True)
        shared = counts[inverse] >= 2
        if not shared.any():
            continue
        members = np.flatnonzero(shared)
        order = np.lexsort((members, inverse[members]))
        members = members[order]
        labels = inverse[members]
        cuts = np.flatnonzero(np.diff(labels)) + 1
        for bucket in np.split(members, cuts):
            i, j = np.triu_indices(len(bucket), k=1)
            found.append(np.stack((bucket[i], bucket[j]), axis=1))
    if not found:
        return np.empty((0, 2), dtype=np.int64)
    pairs = np.concatenate(found).astype(np.int64)
    codes = np.unique(pairs[:, 0] * n + pairs[:, 1])
    return np.stack((codes // n, codes % n), axis=1)


def dedup(
    records: Sequence[dict[str, Any]],
    *,
    score: Callable[[dict[str, Any]], float] | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``NearDuplicateGraph(**kwargs).build(records).resolve(score)``."""
    return NearDuplicateGraph(**kwargs).build(records).resolve(score)
