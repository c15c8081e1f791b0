"""Output writers: the formats a run's records can be written in, each atomically.

``jsonl`` (default) and ``json`` keep evoforge's records as they are; ``csv``
and ``parquet`` flatten them for tables; ``ragas`` and ``deepeval`` map them to
the fields those tools load without adapters:

- ``ragas``: one JSON object a line that ``ragas.EvaluationDataset.from_jsonl``
  (or ``from_list``) loads: ``user_input``, ``reference``,
  ``reference_contexts``, ``reference_context_ids`` (``"doc_id:start-end"``),
  ``persona_name``, ``query_style``, ``synthesizer_name``. Ragas keeps
  single-turn and multi-turn samples in different datasets, so conversational
  samples (turns as ``{"content", "type": "human" | "ai"}``) go to a sibling file
  ``<stem>.multi_turn.jsonl``.
- ``plain`` (IN2 records): ``{"id", "sample_type", "context", "question",
  "answer", "needles"}`` a line, the context cut out of the training prompt.
- ``deepeval``: a JSON array of Golden fields that
  ``EvaluationDataset.add_goldens_from_json_file`` loads: ``input``,
  ``expected_output``, ``context``, ``source_file``, ``additional_metadata``
  (id, synthesizer, provenance; for a conversation its earlier turns).

Every writer writes to a temporary file beside the target and renames it into
place on ``close``, so a reader never sees half a file.
"""

from __future__ import annotations

import contextlib
import csv
import json
import os
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, did_you_mean
from evoforge.io.disk import failed_write, hooked
from evoforge.io.lock import Owner
from evoforge.records import SAMPLE_FIELDS

FORMATS = ("jsonl", "json", "csv", "parquet", "ragas", "deepeval", "plain")
_BY_SUFFIX = {
    ".jsonl": "jsonl",
    ".ndjson": "jsonl",
    ".json": "json",
    ".csv": "csv",
    ".parquet": "parquet",
}


def format_for(path: Path, fmt: str | None) -> str:
    """The format to write: ``fmt`` if given, else the one ``path``'s suffix names."""
    if fmt is not None:
        if fmt not in FORMATS:
            raise ConfigError(
                f"--format {fmt!r}: use one of {', '.join(FORMATS)}{did_you_mean(fmt, FORMATS)}"
            )
        return fmt
    found = _BY_SUFFIX.get(path.suffix.lower())
    if found is None:
        raise ConfigError(
            f"--out {path}: name it .jsonl, .json, .csv or .parquet, or pass --format "
            f"({', '.join(FORMATS)}){did_you_mean(path.suffix.lower(), _BY_SUFFIX)}"
        )
    return found


def temporary_for(path: Path) -> Path:
    """The temporary a write of ``path`` goes to first: ``.NAME.tmp-PID-START-HOST``,
    its owner process in its name (see :class:`evoforge.io.lock.Owner`)."""
    return path.with_name(f".{path.name}.tmp-{Owner.me().tag()}")


def remove_stale_temporaries(path: Path) -> None:
    """Delete the temporaries a killed run left beside ``path``: only those whose owner
    process is gone (a PID alone is not enough: PIDs are reused), never another live
    run's."""
    prefix = f".{path.name}.tmp-"
    for stale in path.parent.glob(f"{prefix}*"):
        owner = Owner.from_tag(stale.name[len(prefix) :])
        if owner is not None and owner.gone():
            stale.unlink(missing_ok=True)


@contextlib.contextmanager
def atomic_output(path: str | os.PathLike[str], *, binary: bool = False) -> Iterator[Any]:
    """A file handle whose content replaces ``path`` only when the block ends without
    an error (written beside it, fsynced, renamed); on an error ``path`` is untouched.
    A failed write (a full disk) raises :class:`~evoforge.io.disk.WriteFailed`.
    Temporaries a killed run left beside ``path`` go once it is replaced."""
    path = Path(path)
    tmp = temporary_for(path)
    mode = "wb" if binary else "w"
    encoding = None if binary else "utf-8"
    try:
        with failed_write(path):
            with open(tmp, mode, encoding=encoding) as handle:
                yield hooked(handle, path)
                handle.flush()
                os.fsync(handle.fileno())
            os.replace(tmp, path)
        remove_stale_temporaries(path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_text(path: str | os.PathLike[str], text: str) -> None:
    """Replace ``path`` with ``text`` atomically (see :func:`atomic_output`)."""
    with atomic_output(path) as handle:
        handle.write(text)


class _AtomicFile:
    """A temporary file beside ``path`` that replaces it on ``commit``."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.tmp = temporary_for(path)
        # Held open across write() calls until commit() or abort().
        with failed_write(path):
            handle = open(self.tmp, "w", encoding="utf-8", newline="")  # noqa: SIM115
        self.fh: Any = hooked(handle, path)

    def commit(self) -> None:
        with failed_write(self.path):
            self.fh.flush()
            os.fsync(self.fh.fileno())
            self.fh.close()
            os.replace(self.tmp, self.path)
        remove_stale_temporaries(self.path)

    def abort(self) -> None:
        with contextlib.suppress(OSError):  # a full disk fails the close's flush too
            self.fh.close()
        self.tmp.unlink(missing_ok=True)


class RecordWriter:
    """Base: ``write(record)`` for each record, then ``close()`` (or ``abort()``)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.count = 0

    def write(self, record: dict[str, Any]) -> None:
        raise NotImplementedError

    def close(self) -> None:
        raise NotImplementedError

    def abort(self) -> None:
        raise NotImplementedError

    @property
    def files(self) -> list[Path]:
        return [self.path]


class JsonlWriter(RecordWriter):
    def __init__(self, path: Path, convert: Callable[[dict], dict] | None = None) -> None:
        super().__init__(path)
        self._file = _AtomicFile(path)
        self._convert = convert

    def write(self, record: dict[str, Any]) -> None:
        data = self._convert(record) if self._convert else record
        self._file.fh.write(json.dumps(data, ensure_ascii=False) + "\n")
        self.count += 1

    def close(self) -> None:
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()


class JsonArrayWriter(RecordWriter):
    def __init__(self, path: Path, convert: Callable[[dict], dict] | None = None) -> None:
        super().__init__(path)
        self._file = _AtomicFile(path)
        self._file.fh.write("[")
        self._convert = convert

    def write(self, record: dict[str, Any]) -> None:
        data = self._convert(record) if self._convert else record
        prefix = ",\n" if self.count else "\n"
        self._file.fh.write(prefix + json.dumps(data, ensure_ascii=False))
        self.count += 1

    def close(self) -> None:
        self._file.fh.write("\n]\n")
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()


def _flat(value: Any) -> Any:
    """Scalars stay; lists of strings stay (parquet) or become JSON (csv); the rest is JSON."""
    if value is None or isinstance(value, str | int | float | bool):
        return value
    return json.dumps(value, ensure_ascii=False)


class CsvWriter(RecordWriter):
    """Columns from the first record (later ones add nothing); nested values as JSON text."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._file = _AtomicFile(path)
        self._writer: csv.DictWriter | None = None

    def write(self, record: dict[str, Any]) -> None:
        if self._writer is None:
            self._writer = csv.DictWriter(
                self._file.fh, fieldnames=list(record), extrasaction="ignore"
            )
            self._writer.writeheader()
        self._writer.writerow({key: _flat(value) for key, value in record.items()})
        self.count += 1

    def close(self) -> None:
        self._file.commit()

    def abort(self) -> None:
        self._file.abort()


class ParquetWriter(RecordWriter):
    """Streams row groups of ``batch`` records; the schema comes from the first group.

    Lists of strings stay lists; other nested values are JSON text, so records
    whose ``meta`` differ still share one schema.
    """

    def __init__(self, path: Path, batch: int = 1000) -> None:
        super().__init__(path)
        self._tmp = temporary_for(path)
        self._rows: list[dict[str, Any]] = []
        self._batch = batch
        self._writer: Any = None
        self._schema: Any = None

    @staticmethod
    def _cell(value: Any) -> Any:
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return value
        return _flat(value)

    def write(self, record: dict[str, Any]) -> None:
        self._rows.append({key: self._cell(value) for key, value in record.items()})
        self.count += 1
        if len(self._rows) >= self._batch:
            self._flush()

    def _flush(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        if not self._rows:
            return
        if self._schema is None:
            # Every column of the group (not only the first row's); a column where any
            # row holds text is text (an empty list beside JSON-text lists, mixed kinds).
            names = list(dict.fromkeys(name for row in self._rows for name in row))
            text = {n for n in names if any(isinstance(r.get(n), str) for r in self._rows)}
            typed = pa.table({n: [r.get(n) for r in self._rows] for n in names if n not in text})
            self._schema = pa.schema(
                [pa.field(n, pa.string()) if n in text else typed.schema.field(n) for n in names]
            )
            self._writer = pq.ParquetWriter(self._tmp, self._schema)
        rows = [{name: row.get(name) for name in self._schema.names} for row in self._rows]
        for row in rows:  # a column typed from the first group keeps its type
            for field in self._schema:
                if pa.types.is_string(field.type) and not isinstance(row[field.name], str | None):
                    row[field.name] = json.dumps(row[field.name], ensure_ascii=False)
        self._writer.write_table(pa.Table.from_pylist(rows, schema=self._schema))
        self._rows = []

    def close(self) -> None:
        import pyarrow as pa
        import pyarrow.parquet as pq

        self._flush()
        if self._writer is None:  # no records: an empty file with no columns
            pq.write_table(pa.table({}), self._tmp)
        else:
            self._writer.close()
        os.replace(self._tmp, self.path)
        remove_stale_temporaries(self.path)

    def abort(self) -> None:
        if self._writer is not None:
            with contextlib.suppress(OSError):
                self._writer.close()
        self._tmp.unlink(missing_ok=True)


# --- evaluation-tool formats ---------------------------------------------------------


def _sample_parts(record: dict[str, Any]) -> tuple[Any, str, list[str]]:
    """Question, answer and contexts of a qa or rag record (an instruction's output is its
    answer, with no contexts)."""
    kind = record.get("kind", "rag")
    if kind == "instruction":
        return record.get("instruction"), record.get("output") or "", []
    fields = SAMPLE_FIELDS.get(kind, SAMPLE_FIELDS["rag"])
    return (
        record.get(fields.question),
        record.get(fields.answer) or "",
        list(record.get(fields.contexts) or []),
    )


def _context_ids(record: dict[str, Any]) -> list[str] | None:
    ids = record.get("reference_context_ids")
    if not ids:
        return None
    return [f"{ref['doc_id']}:{ref['start']}-{ref['end']}" for ref in ids]


def to_ragas(record: dict[str, Any]) -> dict[str, Any]:
    question, reference, contexts = _sample_parts(record)
    if isinstance(question, list):
        question = [
            {"content": turn["content"], "type": "human" if turn["role"] == "user" else "ai"}
            for turn in question
        ]
    data: dict[str, Any] = {
        "user_input": question,
        "reference": reference,
        "reference_contexts": contexts,
    }
    if isinstance(question, str):
        ids = _context_ids(record)
        if ids:
            data["reference_context_ids"] = ids
        if record.get("persona"):
            data["persona_name"] = record["persona"]
        if record.get("style"):
            data["query_style"] = record["style"]
    data["synthesizer_name"] = record.get("synthesizer_name", record.get("kind", ""))
    return data


def to_deepeval(record: dict[str, Any]) -> dict[str, Any]:
    question, reference, contexts = _sample_parts(record)
    metadata: dict[str, Any] = {"id": record.get("id")}
    for key in ("synthesizer_name", "persona", "style", "reference_context_ids"):
        if record.get(key):
            metadata[key] = record[key]
    if isinstance(question, list):
        metadata["turns"] = question[:-1]
        question = question[-1]["content"]
    ids = record.get("reference_context_ids") or []
    source = sorted({ref.get("path", ref["doc_id"]) for ref in ids})
    return {
        "input": question,
        "expected_output": reference,
        "context": contexts,
        "source_file": ", ".join(source) if source else None,
        "additional_metadata": metadata,
    }


def to_plain(record: dict[str, Any]) -> dict[str, Any]:
    """An IN2 record as ``context / question / answer`` (needle offsets are into ``context``)."""
    user = record["messages"][0]["content"]
    start = record.get("context_start")
    context = user[start : start + record["context_chars"]] if start is not None else ""
    return {
        "id": record["id"],
        "sample_type": record.get("sample_type"),
        "context": context,
        "question": (record.get("meta") or {}).get("question", user),
        "answer": record["messages"][-1]["content"],
        "needles": record.get("needles", []),
    }


class RagasWriter(RecordWriter):
    """Single-turn samples to ``path``; multi-turn ones to ``<stem>.multi_turn.jsonl``."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        stem = path.name[: -len(path.suffix)] if path.suffix else path.name
        self.multi_turn_path = path.with_name(f"{stem}.multi_turn.jsonl")
        self._single = JsonlWriter(path, to_ragas)
        self._multi: JsonlWriter | None = None

    def write(self, record: dict[str, Any]) -> None:
        question, _, _ = _sample_parts(record)
        if isinstance(question, list):
            if self._multi is None:
                self._multi = JsonlWriter(self.multi_turn_path, to_ragas)
            self._multi.write(record)
        else:
            self._single.write(record)
        self.count += 1

    def close(self) -> None:
        self._single.close()
        if self._multi is not None:
            self._multi.close()
        else:
            self.multi_turn_path.unlink(missing_ok=True)  # no stale file from an earlier run

    def abort(self) -> None:
        self._single.abort()
        if self._multi is not None:
            self._multi.abort()

    @property
    def files(self) -> list[Path]:
        return [self.path] + ([self.multi_turn_path] if self._multi is not None else [])


_WRITERS: dict[str, Callable[[Path], RecordWriter]] = {
    "jsonl": JsonlWriter,
    "json": JsonArrayWriter,
    "csv": CsvWriter,
    "parquet": ParquetWriter,
    "ragas": RagasWriter,
    "deepeval": lambda path: JsonArrayWriter(path, to_deepeval),
    "plain": lambda path: JsonlWriter(path, to_plain),
}


def open_writer(path: Path, fmt: str) -> RecordWriter:
    return _WRITERS[fmt](path)
