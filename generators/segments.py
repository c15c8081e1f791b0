"""IN2 segments: a document cut into consecutive spans of at most 128 tokens.

Information-intensive (IN2) training (An et al., 2024, arXiv 2404.16811) builds its
long contexts from 128-token segments: the ones a question needs and fillers from
other documents. :func:`segment_document` cuts at sentence ends where it can.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from dataclasses import dataclass

from evoforge.errors import ConfigError
from evoforge.generators.tokenizers import CJK_CHARACTERS, Tokenizer

# The paper's setting.
DEFAULT_SEGMENT_TOKENS = 128
# A segment prefers to end at a sentence end found in the last quarter of its window.
SENTENCE_END_WINDOW = 0.25

_IS_CJK = re.compile(rf"[{CJK_CHARACTERS}]")
_SENTENCE_ENDERS = frozenset(".!?…。！？")
_FULL_WIDTH_ENDERS = frozenset("。！？")
_CLOSERS = frozenset("\"')]}»”’」』）")


@dataclass(frozen=True)
class Segment:
    """A span of a document: ``text == document_text[start:end]``, always.

    ``index`` is its position among the document's segments; ``tokens`` is the
    tokenizer's count of ``text`` on its own (what it adds to a context).
    """

    doc_id: str
    index: int
    start: int
    end: int
    text: str
    tokens: int

    @property
    def id(self) -> str:
        """``"{doc_id}@{start}"``, the form of :class:`evoforge.io.documents.Chunk` ids."""
        return f"{self.doc_id}@{self.start}"


def segment_document(
    doc_id: str,
    text: str,
    tokenizer: Tokenizer,
    segment_tokens: int = DEFAULT_SEGMENT_TOKENS,
) -> list[Segment]:
    """``text`` cut into consecutive segments of at most ``segment_tokens`` tokens.

    The document is tokenized once; each segment takes the next window of
    ``segment_tokens`` tokens and ends at a token boundary chosen, in this order of
    preference, as: the last sentence end (``.!?…。！？``, then optional closing quotes
    or brackets, then whitespace, or a full-width mark) in the last 25% of the window
    (:data:`SENTENCE_END_WINDOW`); else the last boundary that is not inside a word
    (between two letters or digits of a non-CJK script); else the window's end. The
    last segment may be shorter. Segments cover the document's tokens in order
    without gaps or overlap; whitespace at a segment's edges is left out of its
    ``text`` (so consecutive segments are separated by whitespace only), and a
    stretch of whitespace-only tokens gives no segment.

    ``tokens`` is the count of the segment's text on its own. With a BPE tokenizer
    that count can differ from the document tokens in the window (merges at the
    edges); a segment whose own count exceeds ``segment_tokens`` is shortened by a
    token until it fits. The one exception: a single character that the tokenizer
    splits into more than ``segment_tokens`` tokens (an emoji with a tiny window)
    becomes a segment of its own.
    """
    if not isinstance(segment_tokens, int) or isinstance(segment_tokens, bool):
        raise ConfigError(f"segment_tokens must be a positive integer, got {segment_tokens!r}")
    if segment_tokens < 1:
        raise ConfigError(f"segment_tokens must be a positive integer, got {segment_tokens}")
    spans = tokenizer.spans(text)
    n = len(spans)
    segments: list[Segment] = []
    first = 0
    while first < n:
        limit = min(first + segment_tokens, n)
        while True:
            cut = _choose_cut(text, spans, first, limit, segment_tokens)
            start, end = _trim(text, spans[first][0], spans[cut - 1][1])
            piece = text[start:end]
            tokens = tokenizer.count(piece) if start < end else 0
            if tokens <= segment_tokens or cut > limit or cut - first <= 1:
                break
            limit = cut - 1  # re-tokenized on its own it grew: try one token less
        if start < end:
            segments.append(Segment(doc_id, len(segments), start, end, piece, tokens))
        first = cut
    return segments


def _choose_cut(
    text: str, spans: Sequence[tuple[int, int]], first: int, limit: int, window: int
) -> int:
    """The token index a segment starting at token ``first`` ends before (exclusive)."""
    n = len(spans)
    if limit >= n:
        return n
    floor = first + max(1, math.ceil(window * (1 - SENTENCE_END_WINDOW)))
    # A cut after token k-1 is possible only where the next token starts after it
    # ends (a byte-level BPE can split one character into several tokens).
    for k in range(limit, max(floor, first + 1) - 1, -1):
        if spans[k - 1][1] <= spans[k][0] and _is_sentence_end(text, spans[k - 1][1]):
            return k
    fallback = None
    for k in range(limit, first, -1):
        if spans[k - 1][1] <= spans[k][0]:
            if not _inside_word(text, spans[k][0]):
                return k
            fallback = fallback or k
    if fallback is not None:
        return fallback
    for k in range(limit + 1, n):  # one character wider than the window
        if spans[k - 1][1] <= spans[k][0]:
            return k
    return n


def _is_sentence_end(text: str, position: int) -> bool:
    j = position
    while j > 0 and position - j < 3 and text[j - 1] in _CLOSERS:
        j -= 1
    if j == 0 or text[j - 1] not in _SENTENCE_ENDERS:
        return False
    return position >= len(text) or text[position].isspace() or text[j - 1] in _FULL_WIDTH_ENDERS


def _inside_word(text: str, position: int) -> bool:
    if position <= 0 or position >= len(text):
        return False
    before, after = text[position - 1], text[position]
    return (
        before.isalnum()
        and after.isalnum()
        and not _IS_CJK.match(before)
        and not _IS_CJK.match(after)
    )


def _trim(text: str, start: int, end: int) -> tuple[int, int]:
    while start < end and text[start].isspace():
        start += 1
    while end > start and text[end - 1].isspace():
        end -= 1
    return start, end
