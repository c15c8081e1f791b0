"""Decontamination: drop documents that share a word 10-gram with an evaluation example.

IN2 (An et al., 2024, arXiv 2404.16811) drops a training document that shares a
10-gram with the evaluation data, so that a long-context score measures the use of
the context, not a memorised answer. ``evolve``, ``rag`` and ``validate`` apply the
same test to the records they write (``--decontaminate FILE...``, :class:`Benchmarks`):
a record whose text shares a 10-gram with a benchmark question is rejected as
``contaminated``, naming the n-gram and the benchmark file.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.engine.runner import RecordContext, Task
from evoforge.errors import ConfigError, InputError
from evoforge.generators.tokenizers import CJK_CHARACTERS
from evoforge.io.readers import iter_rows
from evoforge.records import Record
from evoforge.steps import Rejection, Result
from evoforge.validators.base import PASS, Check, Verdict

# The paper's setting.
DEFAULT_NGRAM = 10

_GRAM_TOKEN = re.compile(rf"[{CJK_CHARACTERS}]|[^\W_{CJK_CHARACTERS}]+")


def _gram_tokens(text: str) -> list[str]:
    """Lower-cased words; each CJK character is a token of its own."""
    return _GRAM_TOKEN.findall(text.lower())


class Decontaminator:
    """Drops documents that share an n-gram with an evaluation example (IN2: n = 10).

    N-grams are over lower-cased word tokens (punctuation ignored); in Chinese,
    Japanese and Korean text each character is a token, so there they are character
    10-grams. Each evaluation text gives its own n-grams (none span two texts); a
    text shorter than ``n`` tokens gives none, so it cannot be detected. The n-grams
    are kept as 64-bit hashes in a set (Python's ``hash`` of the token tuple: fast,
    salted per process, so the set is not saved; a false match needs a 64-bit
    collision). ``dropped`` counts the documents :meth:`contaminated` rejected.
    """

    def __init__(self, eval_texts: Iterable[str], n: int = DEFAULT_NGRAM) -> None:
        if not isinstance(n, int) or isinstance(n, bool) or n < 1:
            raise ConfigError(f"n-gram size must be a positive integer, got {n!r}")
        self.n = n
        self._grams: set[int] = set()
        for text in eval_texts:
            tokens = _gram_tokens(text)
            self._grams.update(hash(tuple(tokens[i : i + n])) for i in range(len(tokens) - n + 1))
        self.dropped = 0

    def __len__(self) -> int:
        """How many distinct evaluation n-grams are held."""
        return len(self._grams)

    @classmethod
    def from_file(
        cls,
        path: str | os.PathLike[str],
        *,
        fields: Sequence[str] | None = None,
        n: int = DEFAULT_NGRAM,
    ) -> Decontaminator:
        """Evaluation examples from ``path``: ``.jsonl`` (one object a line), ``.json``
        (an array of objects or strings) or ``.txt`` (the whole file is one text).

        Of an object, every string value is a text, nested lists and objects
        included (a ``contexts`` list counts), or only those of ``fields``. Raises
        :class:`InputError` naming the line for a bad row or one with none of ``fields``.
        """
        path = Path(path)
        if path.is_dir():  # a datasets folder (save_to_disk)
            return cls(_eval_texts(path, fields), n=n)
        if not path.is_file():
            raise InputError("no such file", path=str(path))
        suffix = path.suffix.lower()
        if suffix == ".txt":
            return cls([path.read_text(encoding="utf-8")], n=n)
        if suffix not in _ROW_SUFFIXES:
            raise InputError(
                f"unsupported evaluation file type {suffix or '(none)'}; use .jsonl, .json, "
                ".csv, .parquet, .txt or a datasets folder",
                path=str(path),
            )
        return cls(_eval_texts(path, fields), n=n)

    def overlap(self, text: str) -> str | None:
        """The first n-gram of ``text`` that an evaluation example has (its tokens,
        space-joined: a reason to record with the rejection), or ``None``."""
        tokens = _gram_tokens(text)
        n, grams = self.n, self._grams
        for i in range(len(tokens) - n + 1):
            if hash(tuple(tokens[i : i + n])) in grams:
                return " ".join(tokens[i : i + n])
        return None

    def contaminated(self, text: str) -> bool:
        """Whether ``text`` shares an n-gram with an evaluation example (counted in ``dropped``)."""
        if self.overlap(text) is None:
            return False
        self.dropped += 1
        return True


_ROW_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
# Record fields that are not text the record teaches or asks: ids, provenance, and the
# retrieved contexts of a RAG sample (documents, which IN2 checks as documents).
_NOT_TEXT = frozenset(
    {
        "id", "kind", "parent_id", "lineage", "meta", "contexts", "chunk_ids", "needles",
        "provenance", "reference_contexts", "reference_context_ids", "retrieved_contexts",
        "synthesizer_name",
    }
)  # fmt: skip


def record_text(record: dict[str, Any]) -> str:
    """The text of a record to test: every string of its fields but ids, provenance,
    metadata and retrieved contexts (instruction, input, output, question, answer,
    messages ...), one per line."""
    return "\n".join(
        text for key, value in record.items() if key not in _NOT_TEXT for text in _strings(value)
    )


class Benchmarks:
    """Benchmark files (``--decontaminate FILE...``): which one shares an n-gram with a
    record. Each file is a :class:`Decontaminator` of its own, so a match names it."""

    def __init__(self, paths: Sequence[str | os.PathLike[str]], *, n: int = DEFAULT_NGRAM) -> None:
        if not paths:
            raise ConfigError("--decontaminate needs at least one benchmark file")
        self.files = [(str(path), Decontaminator.from_file(path, n=n)) for path in paths]
        self.n = n
        self.rejected = 0

    def match(self, text: str) -> tuple[str, str] | None:
        """``(n-gram, file)`` of the first benchmark file sharing an n-gram, or ``None``."""
        for path, decontaminator in self.files:
            gram = decontaminator.overlap(text)
            if gram is not None:
                return gram, path
        return None

    def verdict(self, record: dict[str, Any], _settings: Any = None) -> Verdict:
        """``contaminated`` (the n-gram and the file in the detail) or a pass."""
        found = self.match(record_text(record))
        if found is None:
            return PASS
        self.rejected += 1
        gram, path = found
        return Verdict.failed(
            "contaminated", f"shares the {self.n}-gram {gram!r} with the benchmark {path}"
        )

    def check(self) -> Check:
        """This test as a named check (``validate`` runs it after the others)."""
        return Check("contaminated", self.verdict)

    def to_json(self) -> dict[str, Any]:
        return {"files": [path for path, _ in self.files], "n": self.n, "rejected": self.rejected}


@dataclass
class Decontaminated:
    """A record step that drops what ``task`` made when it shares an n-gram with a
    benchmark (``contaminated``); the rest of its result passes through."""

    task: Task
    benchmarks: Benchmarks

    async def __call__(self, item: Record, ctx: RecordContext) -> Result:
        result = await self.task(item, ctx)
        kept: list[Record] = []
        for record in result.records:
            verdict = self.benchmarks.verdict(record.to_json())
            if verdict.ok:
                kept.append(record)
                continue
            result.rejections.append(
                Rejection.of(record, "contaminated", verdict.detail, step="check.contaminated")
            )
        result.records = kept
        return result


def decontaminated(task: Task, paths: Sequence[str | os.PathLike[str]] | None) -> Task:
    """``task`` behind the benchmark check when ``paths`` names benchmark files."""
    return Decontaminated(task, Benchmarks(paths)) if paths else task


def _eval_texts(path: Path, fields: Sequence[str] | None) -> Iterator[str]:
    if path.suffix.lower() == ".json" and _json_is_string_list(path):
        with open(path, encoding="utf-8") as fh:
            yield from json.load(fh)
        return
    for item in iter_rows(path):
        if isinstance(item, InputError):
            raise item
        line, row = item
        if fields is None:
            yield from _strings(row)
            continue
        present = [row[name] for name in fields if row.get(name) is not None]
        if not present:
            raise InputError(
                f"has none of the fields {', '.join(fields)}; name the evaluation text fields",
                path=str(path),
                line=line,
            )
        for value in present:
            yield from _strings(value)


def _json_is_string_list(path: Path) -> bool:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except (ValueError, OSError):
        return False  # iter_rows reports it with its location
    return isinstance(data, list) and all(isinstance(item, str) for item in data)


def _strings(value: Any) -> Iterator[str]:
    if isinstance(value, str):
        yield value
    elif isinstance(value, dict):
        for item in value.values():
            yield from _strings(item)
    elif isinstance(value, list):
        for item in value:
            yield from _strings(item)
