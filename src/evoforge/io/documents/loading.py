"""Load a folder of documents: text, Markdown, HTML, JSONL and PDF, each file once.

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
"""

from __future__ import annotations

import hashlib
import json
import os
from collections import Counter
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

from evoforge.errors import InputError, MissingDependency
from evoforge.io.documents.html_text import html_to_text
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
