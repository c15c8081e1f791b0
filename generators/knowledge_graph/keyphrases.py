"""Keyphrases of chunks (TF-IDF over unigrams and bigrams) and the chunks that share them.

Keyphrases are the terms of highest TF-IDF in a chunk (sublinear tf, smoothed idf as
in scikit-learn), over unigrams and bigrams of words that are not English stop words;
Chinese, Japanese and Korean text gives character bigrams
(:func:`evoforge.embeddings.word_tokens`). Overlaps are counted from an inverted
index in bounded blocks, so nothing is quadratic in memory.

:func:`ask_keyphrases` asks the model instead, as Ragas v0.1 does
(``evoforge rag --keyphrases llm``); TF-IDF stays the default and always makes the
graph's ``keyphrase`` edges.
"""

from __future__ import annotations

import heapq
import math
import re
from collections import Counter
from collections.abc import Sequence
from itertools import chain

import numpy as np

from evoforge.embeddings import (
    ENGLISH_STOP_WORDS,
    is_cjk,
    word_tokens,
)
from evoforge.engine.runner import RecordContext
from evoforge.prompting import PromptTemplate, builtin_template

_PAIR_BUDGET = 1 << 22  # keyphrase co-occurrences counted per block

# CJK function characters (Chinese particles, pronouns, measure words): a character
# bigram holding one is grammar, not a keyphrase; so is one holding Hiragana.
_CJK_FUNCTION_CHARS = frozenset("的了是在和与及或也而之其为以于被把从这那些")
_HIRAGANA = re.compile("[\u3040-\u309f]")

# Clause punctuation, Latin and CJK: a bigram never spans it.
_CLAUSES = re.compile(
    r"[.,;:!?()\[\]{}\"“”‘’«»|/\\<>=+*#~`\n\r\t。，、；：！？（）【】「」『』《》]+"
)


# ----------------------------------------------------------------------------- keyphrases


def candidate_terms(text: str) -> list[str]:
    """Unigrams and bigrams of ``text`` that can be keyphrases, in order, repeats kept.

    A word counts when it is not an English stop word, has two characters or more and
    is not a bare number; a bigram is two such words next to each other in one clause.
    CJK character bigrams (and lone characters) are terms as they are, unless they hold
    a function character (的, 是, ...) or Hiragana (Japanese grammar).
    """
    terms: list[str] = []
    for clause in _CLAUSES.split(text):
        previous: str | None = None
        for token in word_tokens(clause):
            if is_cjk(token):
                if not _CJK_FUNCTION_CHARS.intersection(token) and not _HIRAGANA.search(token):
                    terms.append(token)
                previous = None
                continue
            if token in ENGLISH_STOP_WORDS or len(token) < 2 or token.isdigit():
                previous = None
                continue
            terms.append(token)
            if previous is not None:
                terms.append(f"{previous} {token}")
            previous = token
    return terms


def extract_keyphrases(texts: Sequence[str], per_text: int = 8) -> list[list[str]]:
    """The ``per_text`` terms of highest TF-IDF in each text, best first.

    tf is sublinear (``1 + ln count``), idf smoothed (``ln((1 + n) / (1 + df)) + 1``);
    ties go to the alphabetically first term, so the result is deterministic.
    """
    counts = [Counter(candidate_terms(text)) for text in texts]
    df: Counter[str] = Counter()
    for count in counts:
        df.update(count.keys())
    n = len(texts)
    idf = {term: math.log((1 + n) / (1 + d)) + 1.0 for term, d in df.items()}
    phrases: list[list[str]] = []
    for count in counts:
        best = heapq.nsmallest(
            per_text,
            count.items(),
            key=lambda item: (-(1.0 + math.log(item[1])) * idf[item[0]], item[0]),
        )
        phrases.append([term for term, _ in best])
    return phrases


def keyphrase_links(
    keyphrases: Sequence[Sequence[str]], *, min_shared: int = 2, max_per_item: int = 10
) -> list[tuple[int, int, int]]:
    """``(i, j, shared)`` for the items ``j != i`` sharing ``shared >= min_shared``
    keyphrases with item ``i``: at most ``max_per_item`` per ``i``, most shared first
    (ties to the lower ``j``). Sorted by ``i``.

    Overlaps are counted from an inverted index, a bounded number of co-occurrences
    per block, so memory stays flat however many items share a keyphrase.
    """
    n = len(keyphrases)
    if n < 2 or max_per_item < 1:
        return []
    vocabulary = {term: t for t, term in enumerate(sorted({p for ps in keyphrases for p in ps}))}
    row_terms = [sorted({vocabulary[p] for p in ps}) for ps in keyphrases]
    rows = np.repeat(np.arange(n, dtype=np.int64), [len(ts) for ts in row_terms])
    terms = np.fromiter(chain.from_iterable(row_terms), dtype=np.int64, count=len(rows))
    df = np.bincount(terms, minlength=len(vocabulary))
    pointer = np.concatenate([[0], np.cumsum(df)])
    postings = rows[np.argsort(terms, kind="stable")]  # the rows of each term, ascending
    row_pointer = np.concatenate([[0], np.cumsum([len(ts) for ts in row_terms])])
    work = np.bincount(rows, weights=df[terms], minlength=n).astype(np.int64)  # pairs per row

    links: list[tuple[int, int, int]] = []
    start = 0
    while start < n:
        stop, budget = start + 1, int(work[start])
        while stop < n and budget + int(work[stop]) <= _PAIR_BUDGET:
            budget += int(work[stop])
            stop += 1
        links.extend(
            _block_links(
                rows[row_pointer[start] : row_pointer[stop]],
                terms[row_pointer[start] : row_pointer[stop]],
                df,
                pointer,
                postings,
                n,
                min_shared,
                max_per_item,
            )
        )
        start = stop
    return links


def _block_links(
    block_rows: np.ndarray,
    block_terms: np.ndarray,
    df: np.ndarray,
    pointer: np.ndarray,
    postings: np.ndarray,
    n: int,
    min_shared: int,
    max_per_item: int,
) -> list[tuple[int, int, int]]:
    lengths = df[block_terms]
    total = int(lengths.sum())
    if total == 0:
        return []
    # The postings of every (row, term) pair of the block, laid end to end.
    offsets = np.cumsum(lengths) - lengths
    gather = np.arange(total) - np.repeat(offsets - pointer[block_terms], lengths)
    pairs = np.repeat(block_rows, lengths) * n + postings[gather]
    keys, shared = np.unique(pairs, return_counts=True)
    source, target = keys // n, keys % n
    keep = (shared >= min_shared) & (source != target)
    source, target, shared = source[keep], target[keep], shared[keep]
    order = np.lexsort((target, -shared, source))
    source, target, shared = source[order], target[order], shared[order]
    position = np.arange(len(source))
    first = np.r_[True, source[1:] != source[:-1]] if len(source) else np.zeros(0, bool)
    rank = position - np.maximum.accumulate(np.where(first, position, 0))
    keep = rank < max_per_item
    return list(
        zip(source[keep].tolist(), target[keep].tolist(), shared[keep].tolist(), strict=True)
    )


# ----------------------------------------------------------------------------- by the model

KEYPHRASE_SOURCES = ("tfidf", "llm")
KEYPHRASE_PARAMS = {"max_tokens": 96, "temperature": 0.0}


async def ask_keyphrases(
    ctx: RecordContext, text: str, *, template: PromptTemplate | None = None, seed: int = 0
) -> list[str]:
    """The 3 to 5 keyphrases the model finds in ``text`` (Ragas v0.1 extracts every node's
    keyphrases with its ``keyphrase_extraction`` prompt; ``prompts/rag_keyphrases.yaml``,
    op ``keyphrases``), in the order given, blanks and repeats dropped. Greedy; ``seed``
    makes the call the same whichever record asks it. A failed call raises the engine's
    ``RequestRejected``."""
    template = template or builtin_template("rag_keyphrases")
    reply = await ctx.ask(
        template, op="keyphrases", params={**KEYPHRASE_PARAMS, "seed": seed}, context=text
    )
    parsed = reply.parsed if isinstance(reply.parsed, dict) else {}
    phrases = [str(p).strip() for p in parsed.get("keyphrases") or [] if str(p).strip()]
    return list(dict.fromkeys(phrases))
