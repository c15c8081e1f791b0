"""Documents for RAG evaluation sets: load a folder, then cut it into chunks.

- :mod:`~evoforge.io.documents.loading`: :func:`load_documents` (text, Markdown, HTML,
  JSONL, PDF; unusable files become :class:`SkippedFile` with a reason code);
- :mod:`~evoforge.io.documents.html_text`: :func:`html_to_text`, a page's visible text;
- :mod:`~evoforge.io.documents.chunking`: :func:`chunk_document` and
  :func:`count_tokens`, overlapping chunks measured in characters or tokens;
- :mod:`~evoforge.io.documents.placement`: :func:`locate_chunks`, the exact spans the
  chunks occupy, so ``document.text[chunk.start:chunk.end] == chunk.text`` always.
"""

from __future__ import annotations

from evoforge.io.documents.chunking import (
    MIN_CHUNK_CHARS,
    UNITS,
    Chunk,
    chunk_document,
    chunk_documents,
    count_tokens,
)
from evoforge.io.documents.html_text import html_to_text
from evoforge.io.documents.loading import (
    DEFAULT_MAX_FILE_MB,
    HTML_SUFFIXES,
    SUPPORTED_SUFFIXES,
    TEXT_SUFFIXES,
    Document,
    LoadReport,
    SkippedFile,
    load_documents,
)
from evoforge.io.documents.placement import locate_chunks

__all__ = [
    "DEFAULT_MAX_FILE_MB",
    "HTML_SUFFIXES",
    "MIN_CHUNK_CHARS",
    "SUPPORTED_SUFFIXES",
    "TEXT_SUFFIXES",
    "UNITS",
    "Chunk",
    "Document",
    "LoadReport",
    "SkippedFile",
    "chunk_document",
    "chunk_documents",
    "count_tokens",
    "html_to_text",
    "load_documents",
    "locate_chunks",
]
