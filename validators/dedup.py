"""Near-duplicate detection: a graph of verified duplicate pairs, one survivor per group.

Three ways to propose a pair, each checked before it becomes an edge:

- ``exact``: the compared text after :func:`normalise` (NFKC, casefold, whitespace
  collapsed) has the same 128-bit blake2b digest; similarity 1.0;
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

Memory: records stream through once. What stays per record is its id, a text digest,
its byte offset, its score and its LSH band keys (with ``semantic``, also its
embedding); candidate pairs are verified by re-reading just the records involved
(:class:`JsonlRecords` seeks to their offsets), so :func:`dedup_jsonl` runs over a
file far larger than memory (1M records in 445 MiB peak RSS, ``bench/dedup.py``).
Signatures are per record (no corpus-level state), so ``shards=N`` computes them in N
worker processes and the result is identical to one process. Output depends only on
the input records, the parameters and the seed; which record is kept does not depend
on input order.
"""

from __future__ import annotations

import hashlib
import heapq
import json
import os
import re
import unicodedata
from array import array
from collections import deque
from collections.abc import Callable, Iterable, Iterator, Sequence
from concurrent.futures import Future, ProcessPoolExecutor
from functools import cache
from itertools import compress, islice
from multiprocessing import get_context
from pathlib import Path
from typing import Any

import numpy as np

from evoforge.errors import InputError
from evoforge.io.writers import atomic_output
from evoforge.validators.heuristics import _is_cjk, words

__all__ = [
    "JsonlRecords",
    "MinHasher",
    "NearDuplicateGraph",
    "RecordIds",
    "ShingleHasher",
    "band_keys",
    "candidate_probability",
    "connected_components",
    "dedup",
    "dedup_jsonl",
    "lsh_params",
    "normalise",
    "record_text",
    "shingles",
]

_SHIFT32 = np.uint64(32)
_MERSENNE = np.uint64((1 << 61) - 1)
_SPACES = re.compile(r"\s+")
_ASCII_SEPARATORS = {c: " " for c in range(128) if not chr(c).isalnum()}
_CJK = re.compile("[\u3040-\u30ff\u3400-\u9fff\uac00-\ud7af]")  # what _is_cjk accepts
_METHODS = ("exact", "minhash", "semantic")
# Shingles per numpy step of the permutations: 2k x 128 perms x 4 B = 1 MiB stays in
# the L2 cache, which made this step three times faster than 32k-shingle steps.
_SHINGLE_CHUNK = 1 << 11
# Odd 64-bit constants (fixed, not the MinHash seed, so a shingle hashes the same under
# every seed): 0-63 weigh the positions in an n-gram and the rows in a band, 64 an
# n-gram's length, 65 is the base of a word's polynomial over its code points, 66
# marks a character n-gram (so "中文" by characters is not "中 文" by words).
_WEIGHTS = np.random.default_rng(0x5EED).integers(0, 1 << 63, size=67, dtype=np.uint64)
_WEIGHTS = _WEIGHTS * np.uint64(2) + np.uint64(1)
_SHORT_WORD = 16  # letters; longer words (rare) are hashed one by one
_VERIFY_BLOCK = 1 << 13  # candidate pairs verified per re-read of their records


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


def _units(text: str, n_words: int, n_chars: int) -> tuple[list[str] | str, int, str]:
    """What a text's shingles are made of: its words, ``n_words`` of them to a shingle,
    joined by a space; or, when most tokens are CJK characters, the string of its
    letters (spaces and punctuation dropped), ``n_chars`` to a shingle, joined by
    nothing."""
    if text.isascii():  # the same tokens as words(), three times faster
        return text.translate(_ASCII_SEPARATORS).split(), n_words, " "
    tokens = words(text)
    if _CJK.search(text):  # counting is needed only when there is some CJK at all
        cjk = sum(1 for token in tokens if len(token) == 1 and _is_cjk(token))
        if 2 * cjk > len(tokens):
            return "".join(tokens), n_chars, ""
    return tokens, n_words, " "


def shingles(text: str, *, n_words: int = 3, n_chars: int = 5) -> set[str]:
    """The shingle set of ``text`` (pass it through :func:`normalise` first).

    Word ``n_words``-grams when most tokens are words; character ``n_chars``-grams
    (over the letters, punctuation and spaces dropped) when most tokens are CJK
    characters, since Chinese has no spaces to split on. A text with fewer tokens than
    ``n`` gives one shingle, the whole of it; an empty text, none.
    """
    units, n, glue = _units(text, n_words, n_chars)
    if not units:
        return set()
    if len(units) <= n:
        return {glue.join(units)}
    return {glue.join(units[i : i + n]) for i in range(len(units) - n + 1)}


def _shingle_hashes(shingle_set: set[str]) -> np.ndarray:
    """64-bit blake2b of each shingle (stable across runs and machines, unlike ``hash``)."""
    if not shingle_set:
        return np.empty(0, dtype=np.uint64)
    digests = b"".join(
        hashlib.blake2b(s.encode("utf-8"), digest_size=8).digest() for s in shingle_set
    )
    return np.frombuffer(digests, dtype="<u8").copy()


def _mix64(x: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea & Flood, 2014) on a uint64 array, in place:
    every output bit depends on every input bit."""
    x ^= x >> np.uint64(30)
    x *= np.uint64(0xBF58476D1CE4E5B9)
    x ^= x >> np.uint64(27)
    x *= np.uint64(0x94D049BB133111EB)
    x ^= x >> np.uint64(31)
    return x


def _word_hashes(words_: list[str]) -> np.ndarray:
    """64-bit hashes of words: ``mix(sum_j c_j * P^j)`` over each word's code points
    ``c_j`` (mod 2^64, a fixed odd ``P``), so a word hashes the same in every text and
    batch, and a CJK character the same as a one-letter word. Words of up to 16
    letters go through numpy together as one fixed-width array of code points."""
    hashes = np.zeros(len(words_), dtype=np.uint64)
    if not words_:
        return hashes
    sizes = np.fromiter(map(len, words_), dtype=np.int64, count=len(words_))
    long = sizes > _SHORT_WORD
    short = list(compress(words_, ~long)) if long.any() else words_
    if short:
        codes = np.array(short)  # "<U{n}": n code points a word, zero padded
        codes = codes.view(np.uint32).reshape(len(short), -1)
        part = np.zeros(len(short), dtype=np.uint64)
        powers = _powers(codes.shape[1])
        for j in range(codes.shape[1]):  # zeros past a word's end add nothing
            part += codes[:, j].astype(np.uint64) * powers[j]
        hashes[~long] = part
    for index in np.flatnonzero(long).tolist():
        codes = np.frombuffer(words_[index].encode("utf-32-le"), dtype="<u4").astype(np.uint64)
        hashes[index] = (codes * _powers(len(codes))).sum(dtype=np.uint64)
    return _mix64(hashes)


def _powers(n: int) -> np.ndarray:
    """``P^0 .. P^(n-1)`` mod 2^64."""
    out = np.empty(n, dtype=np.uint64)
    out[0] = 1
    np.cumprod(np.full(n - 1, _WEIGHTS[65]), out=out[1:])
    return out


class ShingleHasher:
    """64-bit hashes of the shingles of :func:`shingles`, without building their strings.

    Each word (or CJK character) is hashed from its code points (``_word_hashes``);
    the hash of the n-gram starting at position ``i`` is
    ``mix(sum_k w_k * u[i+k] + n * w_n)`` over the unit hashes ``u`` (odd fixed
    weights ``w``, arithmetic mod 2^64, ``mix`` the splitmix64 finaliser). Python only
    splits the texts into words (``str.translate`` and ``split`` for ASCII ones); the
    rest is a few numpy operations over a whole batch of texts.
    Two different shingles share a hash with probability about 2^-64, so the Jaccard
    of the hash sets is that of the shingle sets; the one difference is that a word
    shingle and a character shingle never share a hash, even where their strings
    happen to match (``"中 文"`` by words is not ``"中文"`` by characters).
    """

    def __init__(self, *, n_words: int = 3, n_chars: int = 5) -> None:
        if not 1 <= n_words <= 64 or not 1 <= n_chars <= 64:
            raise ValueError(f"shingle lengths must be 1..64, got {n_words} and {n_chars}")
        self.n_words = n_words
        self.n_chars = n_chars

    def hashes(self, texts: Sequence[str]) -> tuple[np.ndarray, np.ndarray]:
        """``(flat, counts)``: the shingle hashes of every text in order, ``counts[t]``
        of them for text ``t`` (0 for a text with no tokens). A shingle that occurs
        twice in a text is hashed twice (MinHash does not mind)."""
        words_: list[str] = []  # the words of texts shingled by words, in order
        letters: list[str] = []  # the letters of texts shingled by characters
        lengths: list[int] = []
        grams: list[int] = []
        for text in texts:
            if text.isascii():  # the same words as words(), without a regex
                units: list[str] | str = text.translate(_ASCII_SEPARATORS).split()
                n, glue = self.n_words, " "
            else:
                units, n, glue = _units(text, self.n_words, self.n_chars)
            if glue:
                words_.extend(units)
            else:
                letters.append(units)  # type: ignore[arg-type]
                n = -n  # marks a text shingled by characters
            lengths.append(len(units))
            grams.append(n)
        length = np.array(lengths, dtype=np.int64)
        gram = np.array(grams, dtype=np.int64)
        by_letters = np.repeat(gram < 0, length)
        gram = np.abs(gram)
        counts = np.where(length > gram, length - gram + 1, np.minimum(length, 1))
        total = int(length.sum())
        if not total:
            return np.empty(0, dtype=np.uint64), counts
        u = np.empty(total, dtype=np.uint64)
        u[~by_letters] = _word_hashes(words_)
        if letters:  # a letter's hash is that of a one-letter word: its mixed code point
            codes = np.frombuffer("".join(letters).encode("utf-32-le"), dtype="<u4")
            u[by_letters] = _mix64(codes.astype(np.uint64))
        owner = np.repeat(np.arange(len(texts)), length)
        position = np.arange(total) - (np.cumsum(length) - length)[owner]
        left = length[owner] - position  # units from here to the end of the text
        gram = gram[owner]
        width = np.minimum(left, gram)  # units in the shingle starting here
        longest = int(gram.max())
        padded = np.concatenate((u, np.zeros(longest, dtype=np.uint64)))
        h = width.astype(np.uint64) * _WEIGHTS[64]
        h[by_letters] += _WEIGHTS[66]
        zero = np.uint64(0)
        for k in range(longest):
            h += np.where(width > k, padded[k : k + total], zero) * _WEIGHTS[k]
        starts = (position == 0) | (left >= gram)  # whole n-grams, or the short text
        return _mix64(h[starts]), counts

    def hash_set(self, text: str) -> np.ndarray:
        """The sorted distinct shingle hashes of one text."""
        return np.unique(self.hashes([text])[0])


class MinHasher:
    """MinHash signatures of shingle sets (Broder, 1997).

    Each shingle is hashed once to 64 bits (:class:`ShingleHasher` from the text, or
    blake2b of the shingle string in :meth:`signatures`); its top 32 bits ``x`` then
    go through ``num_perm`` random affine permutations of the 32-bit integers,
    ``h(x) = (a*x + b) mod 2^32`` with ``a`` odd, all shingles in one numpy operation,
    and the minimum over shingles is kept. 32-bit lanes make this step 1.5x faster
    than 64-bit multiply-shift and twice as fast again as ``(a*x + b) mod p`` for a
    prime ``p``; since ``x`` is already a well-mixed hash, the Jaccard estimates keep
    their binomial spread and the candidate rates sit on the theoretical S-curve
    (``bench/dedup.py`` prints both). ``a`` and ``b`` come from
    ``numpy.random.default_rng(seed)``. Signatures are uint64 arrays; an empty set's
    is all ``2^61 - 1`` (larger than any 32-bit value), which matches nothing but
    another empty set.
    """

    def __init__(self, num_perm: int = 128, seed: int = 1) -> None:
        if num_perm < 1:
            raise ValueError(f"num_perm must be at least 1, got {num_perm}")
        self.num_perm = num_perm
        self.seed = seed
        rng = np.random.default_rng(seed)
        self._a = (rng.integers(0, 1 << 31, size=num_perm) * 2 + 1).astype(np.uint32)
        self._b = rng.integers(0, 1 << 32, size=num_perm).astype(np.uint32)

    def _permute_min(self, hashes: np.ndarray, counts: np.ndarray) -> np.ndarray:
        """``(len(counts), num_perm)`` signatures of consecutive runs of ``hashes``,
        ``counts[i]`` long (a run of 0 gives the empty signature)."""
        out = np.full((len(counts), self.num_perm), _MERSENNE, dtype=np.uint64)
        rows = np.flatnonzero(counts)
        if not len(rows):
            return out
        top = (hashes >> _SHIFT32).astype(np.uint32)
        bounds = np.concatenate(([0], np.cumsum(counts[rows])))
        buffer = np.empty((_SHINGLE_CHUNK, self.num_perm), dtype=np.uint32)
        first = 0
        while first < len(rows):
            # whole records until about _SHINGLE_CHUNK shingles
            stop = int(np.searchsorted(bounds, bounds[first] + _SHINGLE_CHUNK, side="right")) - 1
            stop = min(max(stop, first + 1), len(rows))
            lo, hi = int(bounds[first]), int(bounds[stop])
            values = buffer[: hi - lo] if hi - lo <= _SHINGLE_CHUNK else None
            values = np.multiply(top[lo:hi, None], self._a, out=values)
            values += self._b
            out[rows[first:stop]] = np.minimum.reduceat(values, bounds[first:stop] - lo, axis=0)
            first = stop
        return out

    def signature(self, shingle_set: set[str]) -> np.ndarray:
        """``(num_perm,)`` uint64 signature of one set."""
        return self.signatures([shingle_set])[0]

    def signatures(self, sets: Sequence[set[str]]) -> np.ndarray:
        """``(len(sets), num_perm)`` uint64 signatures; row ``i`` depends on ``sets[i]`` only."""
        hashed = [_shingle_hashes(s) for s in sets]
        counts = np.array([len(h) for h in hashed], dtype=np.int64)
        flat = np.concatenate(hashed) if hashed else np.empty(0, dtype=np.uint64)
        return self._permute_min(flat, counts)

    def text_signatures(
        self, texts: Sequence[str], shingler: ShingleHasher | None = None
    ) -> np.ndarray:
        """``(len(texts), num_perm)`` signatures of the shingle sets of ``texts`` (already
        normalised), hashed by ``shingler`` (default ``ShingleHasher()``). Row ``i``
        depends on ``texts[i]`` only. About three times faster than :meth:`signatures`
        of the same sets, as no shingle string is built."""
        flat, counts = (shingler or ShingleHasher()).hashes(texts)
        return self._permute_min(flat, counts)


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


def band_keys(signatures: np.ndarray, bands: int, rows: int) -> np.ndarray:
    """``(n, bands)`` uint64: one 64-bit key per band of each signature, equal for two
    signatures exactly when their ``rows`` values in that band are (up to a 2^-64
    chance). Keeping these instead of signatures is ``rows`` times smaller."""
    n = len(signatures)
    block = signatures[:, : bands * rows].reshape(n, bands, rows)
    return _mix64((block * _WEIGHTS[:rows]).sum(axis=2, dtype=np.uint64))


def _short_keys(keys: np.ndarray) -> np.ndarray:
    """The top 32 bits of band keys: half the memory per record. Among a million
    records about a hundred unrelated pairs per band then share a key by chance; each
    becomes a candidate that the Jaccard check turns down."""
    return (keys >> _SHIFT32).astype(np.uint32)


def _band_keys_of_texts(
    texts: list[str], num_perm: int, seed: int, bands: int, rows: int, n_words: int, n_chars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Band keys of a batch of texts and which texts have shingles; the unit of work of
    :class:`_KeyPipeline`, in this process or a shard's (a top-level function, so a
    worker process can run it)."""
    shingler = ShingleHasher(n_words=n_words, n_chars=n_chars)
    flat, counts = shingler.hashes(texts)
    signatures = MinHasher(num_perm, seed)._permute_min(flat, counts)
    return _short_keys(band_keys(signatures, bands, rows)), counts > 0


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
        with _KeyPipeline(self) as pipeline:
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
        for block in range(0, len(pairs), _VERIFY_BLOCK):
            chunk = pairs[block : block + _VERIFY_BLOCK]
            needed = np.unique(chunk).tolist()
            texts = self._texts(needed)
            sets: dict[int, np.ndarray] = {}
            for start in range(0, len(needed), self.batch_size):
                flat, counts = shingler.hashes(texts[start : start + self.batch_size])
                pieces = map(np.unique, np.split(flat, np.cumsum(counts)[:-1]))
                sets.update(zip(needed[start : start + self.batch_size], pieces, strict=True))
            for a, b in chunk.tolist():
                sa, sb = sets[a], sets[b]
                common = len(np.intersect1d(sa, sb, assume_unique=True))
                similarity = common / (len(sa) + len(sb) - common)
                if similarity >= self.threshold:
                    self._add(a, b, "minhash", similarity)

    def _semantic(self, indices: np.ndarray) -> None:
        from evoforge.generators.knowledge_graph import nearest_neighbours

        vectors = self.embedder.embed(self._texts(indices.tolist()))
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
        """The rejections of :meth:`resolve`, keyed by record index."""
        dropped_at: dict[int, dict[str, Any]] = {}
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
                dropped_at[member] = {
                    "id": self.ids.raw(member),
                    "reason": "duplicate",
                    "detail": detail,
                    "lost_to": self.ids.raw(winner),
                    "similarity": similarity,
                    "method": method,
                }
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


class _KeyPipeline:
    """Band keys of batches of texts, in submission order: computed here, or with
    ``graph.shards > 1`` by that many worker processes with a bounded number of
    batches in flight (so memory does not grow with the input)."""

    def __init__(self, graph: NearDuplicateGraph) -> None:
        self._active = "minhash" in graph.methods
        self._args = (
            graph.num_perm,
            graph.seed,
            graph.bands,
            graph.rows,
            graph.n_words,
            graph.n_chars,
        )
        self._workers = graph.shards
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()

    def __enter__(self) -> _KeyPipeline:
        if self._active and self._workers > 1:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def submit(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self._active or not texts:
            return
        if self._pool is None:
            yield _band_keys_of_texts(texts, *self._args)
            return
        self._pending.append(self._pool.submit(_band_keys_of_texts, texts, *self._args))
        while len(self._pending) > 2 * self._workers:
            yield self._pending.popleft().result()

    def drain(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while self._pending:
            yield self._pending.popleft().result()


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


def dedup(
    records: Sequence[dict[str, Any]],
    *,
    score: Callable[[dict[str, Any]], float] | None = None,
    **kwargs: Any,
) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """``NearDuplicateGraph(**kwargs).build(records).resolve(score)``."""
    return NearDuplicateGraph(**kwargs).build(records).resolve(score)


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
    dropped = graph.dropped_by_index()
    with atomic_output(out, binary=True) as handle:
        for index, line in records.lines():
            if index not in dropped:
                handle.write(line if line.endswith(b"\n") else line + b"\n")
    by_method: dict[str, int] = {}
    with atomic_output(rejects) as handle:
        for index in sorted(dropped):
            rejection = dropped[index]
            by_method[rejection["method"]] = by_method.get(rejection["method"], 0) + 1
            handle.write(json.dumps(rejection, ensure_ascii=False) + "\n")
    if clusters is not None:
        graph.write_clusters(clusters)
    return {
        "input": len(graph.ids),
        "kept": len(graph.ids) - len(dropped),
        "dropped": len(dropped),
        "dropped_by_method": by_method,
        "groups": len(graph._groups()),
    }
