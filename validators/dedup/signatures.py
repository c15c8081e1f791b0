"""Shingles, MinHash signatures and LSH band keys: what a text is compared by.

A text (after :func:`normalise`) becomes a set of shingles, word 3-grams or, for
mostly-CJK text, character 5-grams (:func:`shingles`); the shingles are hashed to
64 bits without building their strings (:class:`ShingleHasher`); MinHash
(Broder, 1997, "On the resemblance and containment of documents") turns the hash set
into a signature whose agreement estimates Jaccard similarity (:class:`MinHasher`);
banding the signature for locality-sensitive hashing (Leskovec, Rajaraman & Ullman,
*Mining of Massive Datasets*, ch. 3.4) gives one key per band (:func:`band_keys`), the
bands and rows chosen by :func:`lsh_params`. Everything here is per text: no
corpus-level state, so any batch, in any process, gives the same values.
"""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Sequence
from functools import cache
from itertools import compress
from typing import Any

import numpy as np

from evoforge.validators.heuristics import _is_cjk, words

__all__ = [
    "RECALL_WEIGHT",
    "MinHasher",
    "ShingleHasher",
    "band_keys",
    "candidate_probability",
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
