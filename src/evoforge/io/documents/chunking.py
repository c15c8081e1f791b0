"""Cut a document into overlapping chunks of about a given size, in characters or tokens.

:func:`chunk_document` splits with LangChain's ``RecursiveCharacterTextSplitter``
(paragraphs, then sentences, then lines, clauses, words) and then places every
chunk in the document itself (:func:`locate_chunks`), so that
``document.text[chunk.start:chunk.end] == chunk.text`` always holds (the splitter's
own ``start_index`` is a guess that goes wrong on repeated text). Sizes are in
characters or in tokens as counted by :func:`count_tokens`, a model-free
approximation of a BPE count.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from evoforge.errors import ConfigError, did_you_mean
from evoforge.io.documents.loading import Document
from evoforge.io.documents.placement import locate_chunks


@dataclass(frozen=True)
class Chunk:
    """A span of a document: ``text == document.text[start:end]``, always."""

    id: str
    doc_id: str
    path: str
    index: int
    start: int
    end: int
    text: str


_CJK = "\u3040-\u30ff\u3400-\u4dbf\u4e00-\u9fff\uac00-\ud7af\uf900-\ufaff"
_TOKEN = re.compile(rf"[{_CJK}]|[^\W_{_CJK}]+|[^\w\s]|_")

# Regular expressions, tried in order: paragraphs, sentences (Chinese, then
# Latin), lines, clauses, words, characters. Sentences come before lines because
# prose is often hard-wrapped: a chunk should end at a full stop, not mid-sentence.
# Separators stay at the end of the piece they close, so a chunk never starts
# with "。" or ". ".
_SEPARATORS = [
    r"\n\s*\n",
    r"(?<=[。！？])",
    r"(?<=[.!?])\s+",
    r"\n",
    r"(?<=[；，、])",
    r"(?<=[;,:])\s+",
    r"\s+",
    "",
]

# A chunk under this many characters (and under a quarter of the chunk size) is
# folded into its neighbour: a lone heading or a trailing "Thanks." is not a
# passage worth a question, but its text must not be lost either.
MIN_CHUNK_CHARS = 50

UNITS = ("chars", "tokens")


def count_tokens(text: str) -> int:
    """About the number of BPE tokens in ``text``, with no model or download.

    Counts runs of letters and digits, each punctuation mark and each CJK
    character as one token. On English prose it gives about 85% of a byte-level
    BPE count (measured against SmolLM2's 49k vocabulary, which splits rare
    words further); on Chinese, one token a character, where BPE vocabularies
    spend one (large multilingual ones) to two (English-centric ones). Leave
    headroom below a model's context window accordingly.
    """
    return len(_TOKEN.findall(text))


def chunk_document(
    document: Document, *, size: int = 1000, overlap: int = 100, unit: str = "chars"
) -> list[Chunk]:
    """``document`` cut into overlapping chunks of at most about ``size`` units.

    ``unit`` is ``"chars"`` or ``"tokens"`` (measured by :func:`count_tokens`);
    ``overlap`` is how much consecutive chunks share at most, in the same unit.
    Chunks cover the document: the first starts at its first non-space
    character, each next one overlaps its predecessor or follows it after
    whitespace only, and the last ends at its last non-space character. A chunk
    under :data:`MIN_CHUNK_CHARS` characters (and under a quarter of ``size``)
    is folded into its neighbour, so a chunk can exceed ``size`` by that much.
    Raises :class:`ConfigError` for a bad size, overlap or unit.
    """
    return _Chunker(size, overlap, unit).chunks(document)


def chunk_documents(documents: Iterable[Document], **kwargs: Any) -> list[Chunk]:
    """The chunks of every document, in order; options as :func:`chunk_document`."""
    unknown = set(kwargs) - {"size", "overlap", "unit"}
    if unknown:
        raise ConfigError(
            f"unknown chunking option {', '.join(sorted(unknown))} (options: size, overlap, unit)"
        )
    chunker = _Chunker(
        kwargs.get("size", 1000), kwargs.get("overlap", 100), kwargs.get("unit", "chars")
    )
    return [chunk for document in documents for chunk in chunker.chunks(document)]


class _Chunker:
    """One configured splitter, reused for every document."""

    def __init__(self, size: Any, overlap: Any, unit: Any) -> None:
        if not isinstance(size, int) or isinstance(size, bool) or size <= 0:
            raise ConfigError(f"chunk size must be a positive integer, got {size!r}")
        if not isinstance(overlap, int) or isinstance(overlap, bool) or not 0 <= overlap < size:
            raise ConfigError(
                f"chunk overlap must be an integer from 0 to less than the chunk size ({size}), "
                f"got {overlap!r}"
            )
        if unit not in UNITS:
            raise ConfigError(
                f"chunk unit must be one of: {', '.join(UNITS)}; got {unit!r}"
                + did_you_mean(str(unit), UNITS)
            )
        self.size = size
        self.overlap = overlap
        self.length: Callable[[str], int] = count_tokens if unit == "tokens" else len
        # Imported here: it pulls in langchain-core, half a second of every CLI start.
        from langchain_text_splitters import RecursiveCharacterTextSplitter

        self.splitter = RecursiveCharacterTextSplitter(
            separators=_SEPARATORS,
            keep_separator="end",
            is_separator_regex=True,
            chunk_size=size,
            chunk_overlap=overlap,
            length_function=self.length,
        )

    def chunks(self, document: Document) -> list[Chunk]:
        text = document.text
        if not text.strip():
            return []
        pieces = [piece.strip() for piece in self.splitter.split_text(text)]
        spans = locate_chunks(text, [piece for piece in pieces if piece], lookback=self.lookback)
        spans = fold_small(text, drop_contained(spans), self.length, self.size)
        return [
            Chunk(
                id=f"{document.id}@{start}",
                doc_id=document.id,
                path=document.path,
                index=index,
                start=start,
                end=end,
                text=text[start:end],
            )
            for index, (start, end) in enumerate(spans)
        ]

    def lookback(self, piece: str) -> int:
        """How many characters at the end of ``piece`` hold ``overlap`` units."""
        if self.length is len or self.overlap == 0:
            return min(self.overlap, len(piece))
        starts = [match.start() for match in _TOKEN.finditer(piece)]
        if len(starts) <= self.overlap:
            return len(piece)
        return len(piece) - starts[-self.overlap]


def drop_contained(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """Spans sorted by start, without those lying inside a neighbour."""
    kept: list[tuple[int, int]] = []
    for start, end in sorted(spans):
        if kept and end <= kept[-1][1]:
            continue
        if kept and start == kept[-1][0]:
            kept[-1] = (start, end)
            continue
        kept.append((start, end))
    return kept


def fold_small(
    text: str, spans: list[tuple[int, int]], length: Callable[[str], int], size: int
) -> list[tuple[int, int]]:
    """Small spans merged into the next span (or, at the end, the previous one)."""

    def small(span: tuple[int, int]) -> bool:
        piece = text[span[0] : span[1]]
        return len(piece) < MIN_CHUNK_CHARS and length(piece) * 4 < size

    if len(spans) < 2:
        return spans
    folded: list[tuple[int, int]] = []
    pending: int | None = None  # start of small spans waiting for a next one
    for span in spans:
        start, end = span
        if pending is not None:
            start = pending
            pending = None
        if small(span):
            pending = start
            continue
        folded.append((start, end))
    if pending is not None:
        if folded:
            folded[-1] = (folded[-1][0], spans[-1][1])
        else:
            folded.append((pending, spans[-1][1]))
    return folded
