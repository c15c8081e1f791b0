"""The three VaL probing tasks: what a context is made of, and what a probe hides.

VArious Long-context probing (An et al., 2024, "Make Your LLM Fully Utilize the
Context", arXiv 2404.16811, §4.1) has three tasks, each with its own context style
and retrieval pattern, as in the paper:

- ``document`` (bi-directional): sentences of ``.txt``/``.md`` files; the question
  quotes a piece from the middle of one sentence and asks for the whole sentence.
- ``code`` (backward): Python functions (extracted with :mod:`ast`); the question
  quotes one line of a function's body and asks for the name of the function.
- ``database`` (forward): JSON lines ``{"id", "label", "description"}``; the question
  gives an id and asks for the label and the description.

A task loads the corpus into :class:`Unit` s and picks, for a unit, a
:class:`ProbeTarget`: what the question quotes (it must occur exactly once in the
whole corpus, or the unit is never a needle) and the gold answer. Each task's
``score`` is its metric from :mod:`evoforge.probe.metrics`.
"""

from __future__ import annotations

import ast
import json
import random
import re
import textwrap
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.io.readers import iter_rows
from evoforge.probe.metrics import entity_match, function_name_match, sentence_recall

MIN_SENTENCE_WORDS = 8  # a needle sentence keeps at least one word each side of its piece
MIN_CODE_LINE_CHARS = 12  # "x = 0" or "return y" is too common to name one function


@dataclass(frozen=True)
class Unit:
    """One piece of context: a sentence, a function or an entity line."""

    text: str
    source: str  # "path:line"
    data: Any = None  # code: the function name and first body line; database: the record


@dataclass(frozen=True)
class ProbeTarget:
    """The unit a probe hides, what its question quotes, and the expected answer."""

    unit: Unit
    query: str  # the piece, code line or id the question names
    key: str  # text that occurs exactly once in the context: the needle's own
    gold: Any


class DocumentSentences:
    """Document sentence retrieval (bi-directional): sentences of ``.txt``/``.md`` files."""

    name = "document"
    direction = "bi-directional"
    separator = " "
    suffixes = (".txt", ".md")
    question = (
        'In the context above, which sentence contains the piece "{query}"? '
        "Output the complete sentence."
    )
    score = staticmethod(sentence_recall)

    # After . ! ? (and a closing quote or bracket) before a capital or digit; after 。！？.
    _SPLIT = re.compile(
        r"(?:(?<=[.!?])|(?<=[.!?][\"')\]”’]))\s+(?=[\"'(\[“‘]?[A-Z0-9])" r"|(?<=[。！？])"
    )
    _ENDS = re.compile(r"[.!?。！？][\"')\]”’]*$")

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units = []
        for path in files:
            for line_no, paragraph in _paragraphs(_read_text(path)):
                if paragraph.startswith("#"):  # a Markdown heading
                    continue
                for sentence in self._SPLIT.split(" ".join(paragraph.split())):
                    sentence = sentence.strip()
                    if sentence and self._ENDS.search(sentence):  # drop titles and fragments
                        units.append(Unit(sentence, f"{path}:{line_no}"))
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> ProbeTarget | None:
        words = list(re.finditer(r"\S+", unit.text))
        if len(words) < MIN_SENTENCE_WORDS:
            return None
        size = max(4, len(words) // 3)
        starts = list(range(1, len(words) - size))  # at least one word each side
        rng.shuffle(starts)
        for start in starts:
            piece = unit.text[words[start].start() : words[start + size - 1].end()]
            if corpus.count(piece) == 1:
                return ProbeTarget(unit, query=piece, key=piece, gold=unit.text)
        return None


class CodeFunctions:
    """Code function retrieval (backward): functions and methods of ``.py`` files."""

    name = "code"
    direction = "backward"
    separator = "\n\n"
    suffixes = (".py",)
    question = (
        'In the context above, which function contains the line "{query}"? '
        "Answer with the function name only."
    )
    score = staticmethod(function_name_match)

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units = []
        for path in files:
            source = _read_text(path)
            try:
                tree = ast.parse(source, filename=str(path))
            except SyntaxError as exc:
                raise InputError(
                    f"is not valid Python: {exc.msg}", path=str(path), line=exc.lineno
                ) from None
            for node in _functions(tree):
                segment = ast.get_source_segment(source, node, padded=True)
                if not segment:
                    continue
                body = node.body[1:] if _docstring_first(node) else node.body
                first_body_line = body[0].lineno - node.lineno if body else None
                units.append(
                    Unit(
                        textwrap.dedent(segment),
                        f"{path}:{node.lineno}",
                        data=(node.name, first_body_line),
                    )
                )
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> ProbeTarget | None:
        name, first_body_line = unit.data
        if first_body_line is None:
            return None
        own_name = re.compile(rf"\b{re.escape(name)}\b")
        lines = [
            line.strip()
            for line in unit.text.splitlines()[first_body_line:]
            if len(line.strip()) >= MIN_CODE_LINE_CHARS
            and not line.strip().startswith("#")
            and not own_name.search(line)  # a recursive call would give the answer away
        ]
        rng.shuffle(lines)
        for line in lines:
            if corpus.count(line) == 1:
                return ProbeTarget(unit, query=line, key=line, gold=name)
        return None


class DatabaseEntities:
    """Database entity retrieval (forward): ``{"id", "label", "description"}`` JSONL records."""

    name = "database"
    direction = "forward"
    separator = "\n"
    suffixes = (".jsonl",)
    question = (
        "In the context above, what are the label and the description of the entity "
        'with id "{query}"? Answer with the label and the description.'
    )
    score = staticmethod(entity_match)

    def load(self, files: Sequence[Path]) -> list[Unit]:
        units: list[Unit] = []
        seen: dict[str, str] = {}
        for path in files:
            for line_no, row in _jsonl(path):
                record = _entity(row, path=path, line=line_no)
                where = f"{path}:{line_no}"
                if record["id"] in seen:
                    raise InputError(
                        f"id {record['id']!r} is used again (first at {seen[record['id']]}); "
                        "ids must be unique, or the answer would be ambiguous",
                        path=str(path),
                        line=line_no,
                        field="id",
                    )
                seen[record["id"]] = where
                units.append(Unit(json.dumps(record, ensure_ascii=False), where, data=record))
        return units

    def needle(self, unit: Unit, rng: random.Random, corpus: str) -> ProbeTarget | None:
        record = unit.data
        key = '{"id": ' + json.dumps(record["id"], ensure_ascii=False) + ","
        if corpus.count(key) != 1:
            return None
        gold = {"label": record["label"], "description": record["description"]}
        return ProbeTarget(unit, query=record["id"], key=key, gold=gold)


TASKS: dict[str, Any] = {
    task.name: task for task in (DocumentSentences(), CodeFunctions(), DatabaseEntities())
}


def task_named(name: str) -> Any:
    """The task called ``name``; an unknown one raises :class:`ConfigError`."""
    try:
        return TASKS[name]
    except KeyError:
        raise ConfigError(f"probe task {name!r}: use one of {', '.join(TASKS)}") from None


def needle_rule(task: str) -> str:
    """Which units can be a needle of ``task`` (for an error that none can)."""
    return {
        "document": f"sentences of at least {MIN_SENTENCE_WORDS} words whose middle piece "
        "occurs once in the corpus",
        "code": f"functions with a body line of at least {MIN_CODE_LINE_CHARS} characters "
        "that occurs once in the corpus and does not name the function",
        "database": "records whose id occurs once",
    }[task]


# --- reading the corpus ----------------------------------------------------------------


def _read_text(path: Path) -> str:
    try:
        return path.read_text("utf-8").replace("\r\n", "\n")
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text ({exc.reason})", path=str(path)) from None
    except OSError as exc:
        raise InputError(f"cannot be read: {exc.strerror}", path=str(path)) from None


def _paragraphs(text: str) -> Iterator[tuple[int, str]]:
    """``(first line number, text)`` of each blank-line-separated paragraph."""
    start, lines = 0, []
    for line_no, line in enumerate([*text.split("\n"), ""], start=1):
        if line.strip():
            start = start or line_no
            lines.append(line)
        elif lines:
            yield start, "\n".join(lines)
            start, lines = 0, []


def _functions(tree: ast.Module) -> Iterator[ast.FunctionDef | ast.AsyncFunctionDef]:
    """Module-level functions and the methods of module-level classes, in file order."""
    kinds = (ast.FunctionDef, ast.AsyncFunctionDef)
    for node in tree.body:
        if isinstance(node, kinds):
            yield node
        elif isinstance(node, ast.ClassDef):
            yield from (child for child in node.body if isinstance(child, kinds))


def _docstring_first(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    first = node.body[0]
    return (
        isinstance(first, ast.Expr)
        and isinstance(first.value, ast.Constant)
        and isinstance(first.value.value, str)
    )


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a bad line raises InputError."""
    for item in iter_rows(path):
        if isinstance(item, InputError):
            raise item
        yield item


def _entity(row: dict[str, Any], *, path: Path, line: int) -> dict[str, str]:
    record = {}
    for field in ("id", "label", "description"):
        value = row.get(field)
        if field == "id" and isinstance(value, int) and not isinstance(value, bool):
            value = str(value)
        if not isinstance(value, str) or not value.strip():
            problem = "is missing" if value is None else "must be a non-empty string"
            raise InputError(problem, path=str(path), line=line, field=field)
        record[field] = value.strip()
    return record


def corpus_files(paths: str | Path | Iterable[str | Path], suffixes: tuple[str, ...]) -> list[Path]:
    """The files of ``paths`` (folders walked, hidden names left out) with ``suffixes``."""
    if isinstance(paths, str | Path):
        paths = [paths]
    files: list[Path] = []
    for given in map(Path, paths):
        if not given.exists():
            raise InputError("no such file or directory", path=str(given))
        if given.is_dir():
            found = sorted(
                p
                for p in given.rglob("*")
                if p.is_file()
                and p.suffix.lower() in suffixes
                and not any(part.startswith(".") for part in p.relative_to(given).parts)
            )
            if not found:
                raise InputError(f"holds no {' or '.join(suffixes)} files", path=str(given))
            files.extend(found)
        else:
            files.append(given)
    if not files:
        raise InputError("no corpus given")
    return files
