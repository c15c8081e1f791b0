"""An IN2 corpus, streamed: one document at a time from files, folders, JSONL and
``datasets`` folders, so memory does not grow with the corpus."""

from __future__ import annotations

import hashlib
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

from evoforge.errors import InputError
from evoforge.io.documents import SUPPORTED_SUFFIXES, Document, SkippedFile, load_documents
from evoforge.io.readers import iter_rows

_DATASETS_MARKERS = ("dataset_info.json", "state.json", "dataset_dict.json")


def iter_corpus(
    paths: str | os.PathLike[str] | Sequence[str | os.PathLike[str]],
    *,
    text_field: str = "text",
    on_skip: Callable[[SkippedFile], None] | None = None,
) -> Iterator[Document]:
    """Documents under ``paths``, one at a time, never the whole corpus at once.

    A path is a file, a folder (walked recursively in sorted order, hidden names
    left out, as :func:`evoforge.io.documents.load_documents` does) or a ``datasets``
    folder (``Dataset.save_to_disk``; rows with ``text_field``). ``.txt``, ``.md``,
    ``.html`` and ``.pdf`` files are read one file at a time by ``load_documents``;
    ``.jsonl`` files and ``datasets`` folders stream row by row. Ids are those
    ``load_documents`` gives: ``"{relative path}#{sha256(text)[:10]}"``, with
    ``":{line}"`` after the path for a JSONL line or a ``datasets`` row; streamed
    rows get no ``language``. What gives no document is passed to ``on_skip`` as a
    :class:`SkippedFile` with its reason code. Raises :class:`InputError` for a path
    that does not exist.
    """
    if isinstance(paths, (str, os.PathLike)):
        paths = [paths]
    for given in paths:
        if not Path(given).exists():
            raise InputError("no such file or directory", path=str(given))
    skip = on_skip or (lambda _skipped: None)
    seen: set[Path] = set()
    for given in paths:
        root = Path(given)
        sources = _walk(root, skip) if root.is_dir() else iter([(root, root.name)])
        for source, relpath in sources:
            key = source.resolve()
            if key in seen:
                continue
            seen.add(key)
            yield from _read_source(source, relpath, text_field, skip)


def _is_datasets_folder(folder: Path) -> bool:
    return any((folder / marker).is_file() for marker in _DATASETS_MARKERS)


def _walk(root: Path, skip: Callable[[SkippedFile], None]) -> Iterator[tuple[Path, str]]:
    """``(file or datasets folder, relative path)`` under ``root``, sorted, lazily."""
    if _is_datasets_folder(root):
        yield root, root.name
        return
    visited: set[Path] = set()

    def visit(folder: Path, parts: tuple[str, ...]) -> Iterator[tuple[Path, str]]:
        real = folder.resolve()
        if real in visited:  # a symlink loop
            return
        visited.add(real)
        try:
            entries = sorted(folder.iterdir(), key=lambda entry: entry.name)
        except OSError as exc:
            skip(SkippedFile("/".join(parts) or ".", "unreadable", f"cannot list folder: {exc}"))
            return
        for entry in entries:
            if entry.name.startswith("."):
                continue
            if entry.is_dir() and not _is_datasets_folder(entry):
                yield from visit(entry, (*parts, entry.name))
            else:
                yield entry, "/".join((*parts, entry.name))

    yield from visit(root, ())


def _read_source(
    source: Path, relpath: str, text_field: str, skip: Callable[[SkippedFile], None]
) -> Iterator[Document]:
    if source.is_dir() or source.suffix.lower() == ".jsonl":
        yield from _stream_rows(source, relpath, text_field, skip)
        return
    if source.suffix.lower() not in SUPPORTED_SUFFIXES:
        skip(
            SkippedFile(
                relpath,
                "unsupported",
                f"unsupported file type {source.suffix.lower() or '(none)'}; supported: "
                + ", ".join(sorted(SUPPORTED_SUFFIXES)),
            )
        )
        return
    report = load_documents([source], text_field=text_field)
    for skipped in report.skipped:
        skip(SkippedFile(relpath, skipped.reason, skipped.detail))
    for document in report.documents:  # one, for a text file; re-id it by its relative path
        digest = document.id.rsplit("#", 1)[1]
        yield Document(
            id=f"{relpath}#{digest}", path=relpath, text=document.text, language=document.language
        )


def _stream_rows(
    source: Path, relpath: str, text_field: str, skip: Callable[[SkippedFile], None]
) -> Iterator[Document]:
    try:
        rows = iter_rows(source)
        for item in rows:
            if isinstance(item, InputError):
                where = f"{relpath}:{item.line}"
                reason = "undecodable" if "UTF-8" in item.detail else "unreadable"
                skip(SkippedFile(where, reason, f"{relpath} line {item.line}: {item.detail}"))
                continue
            line, row = item
            where = f"{relpath}:{line}"
            value = row.get(text_field)
            if not isinstance(value, str):
                problem = (
                    "is missing (expected string); name the text field with text_field"
                    if value is None
                    else f"must be a string, got {type(value).__name__}"
                )
                skip(
                    SkippedFile(
                        where,
                        "no_text_field",
                        f'{relpath} line {line}: field "{text_field}" {problem}',
                    )
                )
                continue
            text = value.replace("\r\n", "\n").replace("\r", "\n")
            if not text.strip():
                detail = f'{relpath} line {line}: field "{text_field}" is empty'
                skip(SkippedFile(where, "empty", detail))
                continue
            digest = hashlib.sha256(text.encode("utf-8")).hexdigest()[:10]
            yield Document(id=f"{where}#{digest}", path=where, text=text)
    except InputError as exc:  # the whole source is unreadable
        skip(SkippedFile(relpath, "unreadable", exc.detail))
