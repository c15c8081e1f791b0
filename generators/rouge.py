"""ROUGE-L near-duplicate filtering for growing instruction pools (Self-Instruct).

Self-Instruct (Wang et al., 2023, "Self-Instruct: Aligning Language Models with
Self-Generated Instructions", arXiv 2212.10560) keeps a new instruction only when its
ROUGE-L F-measure against every instruction already in the pool is below 0.7.

Tokens are lowercase Unicode ``\\w+`` runs, with Han, Hiragana and Katakana characters
each a token of their own (those scripts write no spaces, so a ``\\w+`` run would be a
whole clause); ``rouge-score``'s default tokenizer keeps only ``[a-z0-9]`` and so
drops every non-ASCII letter.

The filter is exact and fast. ROUGE-L F is ``2 * LCS / (m + n)`` and unigram-overlap F
is ``2 * overlap / (m + n)`` (``overlap`` the multiset intersection), and LCS <= overlap,
so ROUGE-L F >= t implies unigram F >= t: only pool entries with unigram F >= t need
the LCS, and that bound is lossless (no MinHash guessing). Unigram F >= t in turn needs
``overlap >= t * m / (2 - t)`` and a length ``n`` within ``[m t / (2 - t), m (2 - t) / t]``;
so a match shares at least one token among the candidate's ``m - ceil(t m / (2 - t)) + 1``
rarest (occurrence-numbered) tokens. :class:`NearDuplicateIndex` looks only those up in
an inverted index, so candidates are found without scanning the pool. LCS length is
computed bit-parallel (Crochemore et al., 2001) on Python integers; the length and
overlap bounds are checked with numpy over the candidates at once.
"""

from __future__ import annotations

import itertools
import math
import re
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field

import numpy as np

THRESHOLD = 0.7  # Self-Instruct's: keep an instruction whose ROUGE-L F is below this
_WORD = re.compile(r"\w+")
# Scripts written without spaces: one token per character.
_SPLIT_CHARS = re.compile(r"[\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uf900-\ufaff]")


def tokenize(text: str) -> list[str]:
    """Lowercase Unicode ``\\w+`` tokens; Han, Hiragana and Katakana one per character."""
    tokens: list[str] = []
    for word in _WORD.findall(text.lower()):
        if _SPLIT_CHARS.search(word) is None:
            tokens.append(word)
            continue
        start = 0
        for match in _SPLIT_CHARS.finditer(word):
            if match.start() > start:
                tokens.append(word[start : match.start()])
            tokens.append(match.group())
            start = match.end()
        if start < len(word):
            tokens.append(word[start:])
    return tokens


def lcs_length(a: list[str], b: list[str]) -> int:
    """Length of the longest common subsequence of two token lists (bit-parallel)."""
    if len(a) < len(b):
        a, b = b, a  # the bit vector runs over the longer list
    if not b:
        return 0
    masks: dict[str, int] = {}
    for position, token in enumerate(a):
        masks[token] = masks.get(token, 0) | (1 << position)
    full = (1 << len(a)) - 1
    v = full
    for token in b:
        u = v & masks.get(token, 0)
        v = ((v + u) | (v - u)) & full
    return len(a) - v.bit_count()


def rouge_l_f(a: list[str], b: list[str]) -> float:
    """ROUGE-L F-measure (beta 1, as ``rouge-score`` computes it) of two token lists."""
    if not a or not b:
        return 0.0
    return 2 * lcs_length(a, b) / (len(a) + len(b))


def min_overlap(m: int, threshold: float) -> int:
    """The fewest shared tokens an entry needs to reach unigram F >= ``threshold`` with a
    candidate of ``m`` tokens, whatever the entry's length."""
    return max(1, math.ceil(threshold * m / (2 - threshold) - 1e-9))


def _tagged(tokens: list[str]) -> list[tuple[str, int]]:
    """Occurrence-numbered tokens (``the``, ``the``#2): multisets as sets."""
    seen: Counter[str] = Counter()
    tagged = []
    for token in tokens:
        seen[token] += 1
        tagged.append((token, seen[token]))
    return tagged


@dataclass
class Match:
    """The pool entry a candidate is too close to."""

    id: str
    score: float


@dataclass
class NearDuplicateIndex:
    """A pool of texts; :meth:`closest` finds an entry with ROUGE-L F >= ``threshold``.

    ``stats`` counts candidates looked at (``probed``), those that passed the unigram
    bound (``lcs``) and exact LCS computations saved (``pruned``)."""

    threshold: float = THRESHOLD
    _tokens: list[list[str]] = field(default_factory=list)
    _counts: list[Counter[str]] = field(default_factory=list)
    _ids: list[str] = field(default_factory=list)
    _postings: dict[tuple[str, int], list[int]] = field(default_factory=dict)
    _lengths: np.ndarray = field(default_factory=lambda: np.zeros(1024, dtype=np.int64))
    stats: Counter[str] = field(default_factory=Counter)

    def __len__(self) -> int:
        return len(self._ids)

    def add(self, entry_id: str, text: str | list[str]) -> None:
        tokens = tokenize(text) if isinstance(text, str) else text
        index = len(self._ids)
        self._ids.append(entry_id)
        self._tokens.append(tokens)
        self._counts.append(Counter(tokens))
        if index >= len(self._lengths):  # a growable array: numpy filters by length
            self._lengths = np.concatenate([self._lengths, np.zeros_like(self._lengths)])
        self._lengths[index] = len(tokens)
        for key in _tagged(tokens):
            self._postings.setdefault(key, []).append(index)

    def extend(self, entries: Iterable[tuple[str, str]]) -> None:
        for entry_id, text in entries:
            self.add(entry_id, text)

    def closest(self, text: str | list[str]) -> Match | None:
        """The entry with the highest ROUGE-L F >= ``threshold`` (the first added among
        equals), or ``None`` when ``text`` is below it against every entry."""
        tokens = tokenize(text) if isinstance(text, str) else text
        m = len(tokens)
        if m == 0:
            return None
        t = self.threshold
        tagged = _tagged(tokens)
        # The rarest tags first: short posting lists, and any match holds one of them.
        tagged.sort(key=lambda key: len(self._postings.get(key, ())))
        rest = min_overlap(m, t) - 1  # tags left out of the probed prefix
        postings = [self._postings.get(key, ()) for key in tagged[: m - rest]]
        found = np.fromiter(itertools.chain.from_iterable(postings), dtype=np.int64)
        entries, hits = np.unique(found, return_counts=True)
        self.stats["probed"] += len(entries)
        # unigram F >= t needs a length n in [m t / (2 - t), m (2 - t) / t] and an overlap
        # >= t (m + n) / 2, which is at most the prefix tags found plus every tag left out
        lengths = self._lengths[entries]
        low, high = m * t / (2 - t) - 1e-9, m * (2 - t) / t + 1e-9
        able = (lengths >= low) & (lengths <= high)
        able &= hits + rest >= t * (m + lengths) / 2 - 1e-9
        self.stats["pruned"] += len(entries) - int(able.sum())
        counts = Counter(tokens)
        best: Match | None = None
        for index in entries[able].tolist():
            other = self._tokens[index]
            n = len(other)
            entry = self._counts[index]
            overlap = sum(min(c, entry.get(token, 0)) for token, c in counts.items())
            if 2 * overlap / (m + n) < t:
                self.stats["pruned"] += 1
                continue
            self.stats["lcs"] += 1
            score = rouge_l_f(tokens, other)
            if score >= t and (best is None or score > best.score):
                best = Match(self._ids[index], score)
        return best
