"""Documents for RAG evaluation sets: load a folder, then cut it into chunks.

:func:`load_documents` reads ``.txt``, ``.md``/``.markdown``, ``.html``/``.htm``
(visible text only), ``.jsonl`` (one document per line) and, with the ``pdf``
extra, ``.pdf``. A file that cannot be used is never an exception: it becomes a
:class:`SkippedFile` with a reason code (``empty``, ``binary``, ``undecodable``,
``unsupported``, ``missing_extra``, ``no_text_field``, ``unreadable``) and a
detail that says what to do. Only a path given by the caller that does not
exist raises :class:`InputError`.

A document's id is ``"{path}#{sha256(text)[:10]}"``, where ``path`` is relative
to the folder given (or the file name, for a file given directly) and the text
has its line endings normalised to ``\\n``: the same folder gives the same ids
on every machine, and an edited file gets a new id.

:func:`chunk_document` splits with LangChain's ``RecursiveCharacterTextSplitter``
(paragraphs, then sentences, then lines, clauses, words) and then places every
chunk in the document itself, so that ``document.text[chunk.start:chunk.end]
== chunk.text`` always holds (the splitter's own ``start_index`` is a guess that
goes wrong on repeated text). Sizes are in characters or in tokens as counted
by :func:`count_tokens`, a model-free approximation of a BPE count.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
from array import array
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from html.parser import HTMLParser
from itertools import accumulate
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError, MissingDependency, did_you_mean
from evoforge.validators.heuristics import script_profile

TEXT_SUFFIXES = frozenset({".txt", ".md", ".markdown"})
HTML_SUFFIXES = frozenset({".html", ".htm"})
SUPPORTED_SUFFIXES = TEXT_SUFFIXES | HTML_SUFFIXES | {".jsonl", ".pdf"}

# A NUL byte this early means the file is not text (the heuristic git and grep use).
_BINARY_PROBE_BYTES = 8192
# A bigger file is skipped, not read: the knowledge graph links every chunk to its
# neighbours, and one huge file would take the run's time and memory.
DEFAULT_MAX_FILE_MB = 10.0


@dataclass(frozen=True)
class Document:
    """One source text. ``language`` is its dominant script ("Latin", "Han", ...)."""

    id: str
    path: str
    text: str
    language: str | None = None


@dataclass(frozen=True)
class SkippedFile:
    """A file (or ``file:line`` of a JSONL file) that gave no document, and why."""

    path: str
    reason: str
    detail: str


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


@dataclass
class LoadReport:
    documents: list[Document]
    skipped: list[SkippedFile]

    def skipped_counts(self) -> dict[str, int]:
        """How many files were skipped for each reason, most frequent first."""
        return dict(Counter(s.reason for s in self.skipped).most_common())


# --------------------------------------------------------------------------- loading


def load_documents(paths: Sequence[str | Path], *, text_field: str = "text") -> LoadReport:
    """Every document under ``paths`` (files or folders), in a stable order.

    Folders are walked recursively in sorted order; hidden files and folders
    (a name starting with ".") are left out. A file reached twice (a folder and
    a file inside it) is read once. ``text_field`` is the JSONL field holding
    the text. Raises :class:`InputError` only for a path that does not exist.
    """
    if isinstance(paths, (str, Path)):
        paths = [paths]
    for given in paths:
        if not Path(given).exists():
            raise InputError("no such file or directory", path=str(given))
    documents: list[Document] = []
    skipped: list[SkippedFile] = []
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        if root.is_dir():
            files = _walk(root, skipped)
        else:
            files = [(root, root.name)]
        for file, relpath in files:
            key = file.resolve()
            if key in seen:
                continue
            seen.add(key)
            for item in _read_file(file, relpath, text_field):
                (documents if isinstance(item, Document) else skipped).append(item)
    return LoadReport(documents=documents, skipped=skipped)


def _walk(root: Path, skipped: list[SkippedFile]) -> list[tuple[Path, str]]:
    """``(file, relative path)`` under ``root``, sorted by path components."""
    found: list[tuple[tuple[str, ...], Path]] = []
    visited: set[Path] = set()

    def visit(folder: Path, parts: tuple[str, ...]) -> None:
        real = folder.resolve()
        if real in visited:  # a symlink loop
            return
        visited.add(real)
        try:
            entries = list(folder.iterdir())
        except OSError as exc:
            skipped.append(
                SkippedFile("/".join(parts) or ".", "unreadable", f"cannot list folder: {exc}")
            )
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir():
                visit(entry, (*parts, entry.name))
            else:
                found.append(((*parts, entry.name), entry))

    visit(root, ())
    found.sort(key=lambda item: item[0])
    return [(file, "/".join(parts)) for parts, file in found]


def _read_file(path: Path, relpath: str, text_field: str) -> Iterator[Document | SkippedFile]:
    suffix = path.suffix.lower()
    if suffix not in SUPPORTED_SUFFIXES:
        yield SkippedFile(
            relpath,
            "unsupported",
            f"unsupported file type {suffix or '(none)'}; supported: "
            + ", ".join(sorted(SUPPORTED_SUFFIXES)),
        )
        return
    limit_mb = float(os.environ.get("EVOFORGE_MAX_DOC_MB") or DEFAULT_MAX_FILE_MB)
    try:
        size_mb = path.stat().st_size / 2**20
    except OSError:
        size_mb = 0.0
    if size_mb > limit_mb:
        yield SkippedFile(
            relpath,
            "too_large",
            f"is {size_mb:.1f} MB; files over {limit_mb:g} MB are skipped (split it, or "
            "raise the limit with EVOFORGE_MAX_DOC_MB)",
        )
        return
    if suffix == ".pdf":
        yield _read_pdf(path, relpath)
        return
    try:
        data = path.read_bytes()
    except OSError as exc:
        yield SkippedFile(relpath, "unreadable", f"cannot be read: {exc.strerror or exc}")
        return
    if suffix == ".jsonl":
        yield from _read_jsonl(data, relpath, text_field)
        return
    text = _decode(data, relpath)
    if isinstance(text, SkippedFile):
        yield text
        return
    if suffix in HTML_SUFFIXES:
        try:
            text = html_to_text(text)
        except Exception as exc:  # html.parser is lenient; anything left is a bad file
            yield SkippedFile(relpath, "unreadable", f"cannot be parsed as HTML: {exc}")
            return
    yield _document(relpath, text)


def _decode(data: bytes, relpath: str) -> str | SkippedFile:
    """UTF-8 text (a BOM is dropped, line endings become ``\\n``) or why not."""
    if not data.strip():
        return SkippedFile(relpath, "empty", "the file is empty")
    if data.startswith((b"\xff\xfe", b"\xfe\xff")):
        return SkippedFile(relpath, "undecodable", "is UTF-16 text; save it as UTF-8")
    if b"\x00" in data[:_BINARY_PROBE_BYTES]:
        return SkippedFile(relpath, "binary", "is a binary file (NUL bytes), not text")
    try:
        text = data.decode("utf-8-sig")  # plain UTF-8, with or without a BOM
    except UnicodeDecodeError as exc:
        return SkippedFile(
            relpath,
            "undecodable",
            f"is not UTF-8 text ({exc.reason} at byte {exc.start}); save it as UTF-8",
        )
    return _normalise_newlines(text)


def _normalise_newlines(text: str) -> str:
    return text.replace("\r\n", "\n").replace("\r", "\n")


def _document(path: str, text: str) -> Document | SkippedFile:
    if not text.strip():
        return SkippedFile(path, "empty", "has no text")
    digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
    return Document(id=f"{path}#{digest}", path=path, text=text, language=_language(text))


def _language(text: str) -> str | None:
    """``dominant_script(text)``, computed once per distinct character (fast on long texts)."""
    totals: Counter[str] = Counter()
    for char, count in Counter(text).items():
        for script, weight in script_profile(char).items():
            totals[script] += weight * count
    return totals.most_common(1)[0][0] if totals else None


def _read_jsonl(data: bytes, relpath: str, text_field: str) -> Iterator[Document | SkippedFile]:
    if not data.strip():
        yield SkippedFile(relpath, "empty", "the file is empty")
        return
    if b"\x00" in data[:_BINARY_PROBE_BYTES]:
        yield SkippedFile(relpath, "binary", "is a binary file (NUL bytes), not JSON lines")
        return
    for line_no, raw in enumerate(data.splitlines(), start=1):
        where = f"{relpath}:{line_no}"
        located = f"{relpath} line {line_no}"
        if not raw.strip():
            continue
        try:
            line = raw.decode("utf-8-sig" if line_no == 1 else "utf-8")
        except UnicodeDecodeError as exc:
            yield SkippedFile(where, "undecodable", f"{located}: is not UTF-8 text ({exc.reason})")
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError as exc:
            yield SkippedFile(
                where, "unreadable", f"{located}: is not valid JSON: {exc.msg} (column {exc.colno})"
            )
            continue
        value = row.get(text_field) if isinstance(row, dict) else None
        if not isinstance(row, dict) or value is None:
            yield SkippedFile(
                where,
                "no_text_field",
                f'{located}: field "{text_field}" is missing (expected string); '
                "name the text field with text_field",
            )
            continue
        if not isinstance(value, str):
            yield SkippedFile(
                where,
                "no_text_field",
                f'{located}: field "{text_field}" must be a string, got {type(value).__name__}',
            )
            continue
        item = _document(where, _normalise_newlines(value))
        if isinstance(item, SkippedFile):
            item = SkippedFile(where, "empty", f'{located}: field "{text_field}" is empty')
        yield item


def _read_pdf(path: Path, relpath: str) -> Document | SkippedFile:
    try:
        import pypdf
    except ImportError:
        return SkippedFile(relpath, "missing_extra", str(MissingDependency("pypdf", "pdf")))
    try:
        reader = pypdf.PdfReader(str(path))
        # Many PDFs are encrypted only to set permissions, with an empty password.
        if reader.is_encrypted and not reader.decrypt(""):
            return SkippedFile(
                relpath, "unreadable", "is a password-protected PDF; decrypt it first"
            )
        pages = [(page.extract_text() or "").strip() for page in reader.pages]
    except Exception as exc:  # pypdf raises many types for damaged files
        return SkippedFile(relpath, "unreadable", f"cannot be read as PDF: {exc}")
    text = _normalise_newlines("\n\n".join(page for page in pages if page))
    if not text.strip():
        return SkippedFile(
            relpath, "empty", "the PDF has no text layer (a scan?); run OCR on it first"
        )
    return _document(relpath, text)


# ------------------------------------------------------------------------------ HTML

# Content inside these is never visible text. <nav> is site chrome, not content.
_HIDDEN_TAGS = frozenset(
    {"script", "style", "noscript", "template", "head", "nav", "svg", "iframe", "object"}
)
# A paragraph break (blank line) before and after these ...
_PARAGRAPH_TAGS = frozenset(
    {
        "address", "article", "aside", "blockquote", "dd", "details", "dl", "div",
        "fieldset", "figcaption", "figure", "footer", "form", "h1", "h2", "h3", "h4",
        "h5", "h6", "header", "hr", "main", "ol", "p", "pre", "section", "summary",
        "table", "ul",
    }
)  # fmt: skip
# ... and a line break for these.
_LINE_TAGS = frozenset({"br", "li", "tr", "dt", "caption", "option"})  # at their start only
_CELL_TAGS = frozenset({"td", "th"})  # a space before each cell
_SPACES = re.compile(r"\s+")
_BLANK_LINES = re.compile(r"\n{3,}")


class _VisibleText(HTMLParser):
    """Collects the text a browser would show, with block elements on their own lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self.parts: list[str] = []
        self.hidden: list[str] = []  # open hidden elements
        self.pre = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag == "body":  # an unclosed <head> ends here
            self.hidden = [t for t in self.hidden if t != "head"]
        if tag in _HIDDEN_TAGS:
            self.hidden.append(tag)
            return
        self._break(tag)
        if tag == "pre":
            self.pre += 1

    def handle_startendtag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if tag not in _HIDDEN_TAGS:
            self._break(tag)

    def handle_endtag(self, tag: str) -> None:
        if tag in _HIDDEN_TAGS:
            if tag in self.hidden:
                while self.hidden and self.hidden.pop() != tag:
                    pass
            return
        if tag == "pre" and self.pre:
            self.pre -= 1
        if tag not in _LINE_TAGS and tag not in _CELL_TAGS:
            self._break(tag)

    def handle_data(self, data: str) -> None:
        if self.hidden:
            return
        if self.pre:
            self.parts.append(data)
            return
        data = _SPACES.sub(" ", data)
        if not self.parts or self.parts[-1].endswith((" ", "\n")):
            data = data.lstrip()
        if data:
            self.parts.append(data)

    def _break(self, tag: str) -> None:
        if self.hidden:
            return
        if tag in _PARAGRAPH_TAGS:
            self.parts.append("\n\n")
        elif tag in _LINE_TAGS:
            self.parts.append("\n")
        elif tag in _CELL_TAGS and self.parts and not self.parts[-1].endswith((" ", "\n")):
            self.parts.append(" ")

    def text(self) -> str:
        lines = [line.rstrip() for line in "".join(self.parts).split("\n")]
        return _BLANK_LINES.sub("\n\n", "\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """The visible text of an HTML page; block elements become line breaks.

    Drops the content of script, style, noscript, template, head, nav, svg,
    iframe and object elements; collapses runs of spaces (except inside
    ``<pre>``) and runs of blank lines.
    """
    parser = _VisibleText()
    parser.feed(html)
    parser.close()
    return parser.text()


# -------------------------------------------------------------------------- chunking

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
        spans = _fold_small(text, _drop_contained(spans), self.length, self.size)
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


_WHITESPACE = re.compile(r"\s*")


def locate_chunks(
    text: str, pieces: Sequence[str], *, lookback: Callable[[str], int] = len
) -> list[tuple[int, int]]:
    """``(start, end)`` in ``text`` of each piece, in order, covering ``text``.

    A piece that is not a substring (a splitter that changed whitespace) is
    matched with flexible whitespace and replaced by the text it matches; one
    that cannot be matched at all is left out. Repeated text makes a piece
    occur several times: the placement searched for is one where the pieces
    cover the text (each starts inside or right after the text covered so far;
    the first and last reach its first and last non-space character).
    ``lookback(previous_piece)`` is how many characters at most a piece shares
    with the one before (the overlap): the search tries places after that point
    first, then, if that fails, the latest places first. If both fail within a
    small search budget (only text made of a few characters repeated at random
    gets there), each piece goes to its first occurrence after the previous one
    and spans are stretched over any gap, so the text is still covered.
    """
    located: list[str] = []
    greedy: list[int] = []
    position = 0
    for piece in pieces:
        found = text.find(piece, position)
        if found == -1:
            match = _flexible_search(text, piece, position) or _flexible_search(text, piece, 0)
            if match is None:
                continue
            found, piece = match.start(), match.group(0)
        located.append(piece)
        greedy.append(found)
        position = found
    for latest_first in (False, True):
        starts = _covering_placement(text, located, lookback, latest_first=latest_first)
        if starts is not None:
            return [
                (start, start + len(piece)) for start, piece in zip(starts, located, strict=True)
            ]
    spans = [(start, start + len(piece)) for start, piece in zip(greedy, located, strict=True)]
    return _close_gaps(text, spans)


def _close_gaps(text: str, spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
    """``spans`` (sorted by start) stretched so that only whitespace lies between them."""
    if not spans:
        return spans
    closed = [(len(text) - len(text.lstrip()), spans[0][1])]
    for start, end in spans[1:]:
        previous_start, previous_end = closed[-1]
        if text[previous_end:start].strip():
            gap_end = start
            while text[gap_end - 1].isspace():
                gap_end -= 1
            closed[-1] = (previous_start, gap_end)
        closed.append((start, end))
    closed[-1] = (closed[-1][0], max(closed[-1][1], len(text.rstrip())))
    return closed


def _flexible_search(text: str, piece: str, position: int) -> re.Match[str] | None:
    words = piece.split()
    if not words:
        return None
    return re.compile(r"\s+".join(re.escape(word) for word in words)).search(text, position)


def _covering_placement(
    text: str, pieces: list[str], lookback: Callable[[str], int], *, latest_first: bool
) -> list[int] | None:
    """Starts for ``pieces`` that cover ``text`` (depth-first search, bounded).

    A placement is cut off as soon as the pieces left hold fewer non-space
    characters than the text left to cover: with repeated text, placing
    pieces too early is the usual dead end.
    """
    if not pieces:
        return []
    first = len(text) - len(text.lstrip())
    last = len(text.rstrip())
    spaces = array("q", accumulate(map(str.isspace, text), initial=0))
    left = [0] * (len(pieces) + 1)  # non-space characters in pieces[k:]
    for k in range(len(pieces) - 1, -1, -1):
        left[k] = left[k + 1] + len(pieces[k]) - sum(map(str.isspace, pieces[k]))
    budget = 50 * len(pieces) + 1000
    starts: list[int] = []
    covered: list[int] = []  # the furthest end reached after each placed piece
    options: list[Iterator[int]] = [iter([first] if text.startswith(pieces[0], first) else [])]
    while options:
        budget -= 1
        if budget < 0:
            return None
        k = len(starts)
        start = next(options[-1], None)
        if start is None:
            options.pop()
            if starts:
                starts.pop()
                covered.pop()
            continue
        end = start + len(pieces[k])
        reach = max(covered[-1] if covered else 0, end)
        if (last - reach) - (spaces[last] - spaces[reach]) > left[k + 1]:
            continue
        if k == len(pieces) - 1:
            return [*starts, start]
        starts.append(start)
        covered.append(reach)
        expected = None if latest_first else end - lookback(pieces[k])
        options.append(_candidates(text, pieces[k + 1], start, reach, expected))
    return None


def _candidates(
    text: str, piece: str, previous_start: int, reach: int, expected: int | None
) -> Iterator[int]:
    """Where ``piece`` may start: not before the previous piece, not after a gap.

    First the places that extend the covered text from ``expected`` on (where
    the splitter puts the next chunk), then those before it, latest first, then
    places inside the covered text (a piece the splitter repeated). Without
    ``expected``, the latest places come first.
    """
    latest = _WHITESPACE.match(text, reach).end()  # only whitespace may be skipped
    extending = max(previous_start, reach - len(piece) + 1)
    expected = latest if expected is None else min(max(expected, extending), latest)
    found = text.find(piece, expected, latest + len(piece))
    while found != -1:
        yield found
        found = text.find(piece, found + 1, latest + len(piece))
    found = text.rfind(piece, extending, expected + len(piece) - 1)
    while found != -1:
        yield found
        found = text.rfind(piece, extending, found + len(piece) - 1)
    found = text.find(piece, previous_start, reach)
    while found != -1 and found < extending:
        yield found
        found = text.find(piece, found + 1, reach)


def _drop_contained(spans: list[tuple[int, int]]) -> list[tuple[int, int]]:
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


def _fold_small(
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
