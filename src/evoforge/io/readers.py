"""Seed readers: JSONL, JSON array, CSV/TSV, Parquet and ``datasets`` folders.

Rows stream from disk (JSONL, CSV and Parquet never load the whole file; a
``datasets`` folder is memory-mapped). A file that cannot be read at all raises
:class:`InputError`; a bad row is yielded as an ``InputError`` naming the file,
line and field, so a run records it as a rejection and goes on.
"""

from __future__ import annotations

import csv
import hashlib
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import InputError, MissingDependency
from evoforge.records import KINDS, Record

RowItem = tuple[int, dict[str, Any]] | InputError

_JSON_TYPES = {str: "string", int: "integer", float: "number", bool: "boolean", list: "array"}


# The fields a seed of each kind brings (see read_records).
SEED_FIELDS: dict[str, dict[str, Any]] = {
    "instruction": {"required": ("instruction",), "optional": {"input": "", "output": None}},
    "qa": {"required": ("question", "answer"), "lists": ("contexts",)},
    "rag": {"required": ("user_input", "reference"), "lists": ("reference_contexts",)},
}


def iter_rows(path: str | Path) -> Iterator[RowItem]:
    """``(line_or_row_number, row)`` for each row of ``path``, or an ``InputError``."""
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    if path.is_dir():
        yield from _datasets_rows(path)
        return
    suffix = "".join(path.suffixes[-1:]).lower()
    reader = _READERS.get(suffix)
    if reader is None:
        raise InputError(
            f"unsupported file type {suffix or '(none)'}; use .jsonl, .json, .csv, .tsv, "
            ".parquet or a datasets folder (save_to_disk)",
            path=str(path),
        )
    if suffix != ".parquet" and _looks_binary(path):
        raise InputError(
            f"is a binary file, not {suffix[1:].upper()} text (NUL bytes near the start)",
            path=str(path),
        )
    yield from reader(path)


def _looks_binary(path: Path) -> bool:
    """A NUL byte in the first 8 KiB: no UTF-8 text format has one."""
    with open(path, "rb") as fh:
        return b"\x00" in fh.read(8192)


def _jsonl_rows(path: Path) -> Iterator[RowItem]:
    # Binary lines, decoded one by one: a bad byte is reported on its own line.
    with open(path, "rb") as fh:
        for line_no, raw in enumerate(fh, start=1):
            try:
                line = raw.decode("utf-8")
            except UnicodeDecodeError as exc:
                yield InputError(f"is not UTF-8 text ({exc.reason})", path=str(path), line=line_no)
                continue
            if not line.strip():
                continue
            try:
                data = json.loads(line)
            except json.JSONDecodeError as exc:
                yield InputError(
                    f"is not valid JSON: {exc.msg} (column {exc.colno})",
                    path=str(path),
                    line=line_no,
                )
                continue
            if not isinstance(data, dict):
                yield InputError(
                    f"expected a JSON object, got {_type_name(data)}", path=str(path), line=line_no
                )
                continue
            yield line_no, data


def _json_rows(path: Path) -> Iterator[RowItem]:
    try:
        with open(path, encoding="utf-8") as fh:
            data = json.load(fh)
    except json.JSONDecodeError as exc:
        raise InputError(
            f"is not valid JSON: {exc.msg} (column {exc.colno})", path=str(path), line=exc.lineno
        ) from None
    except UnicodeDecodeError as exc:
        raise InputError(f"is not UTF-8 text ({exc.reason})", path=str(path)) from None
    if not isinstance(data, list):
        raise InputError(
            f"expected a JSON array of objects, got {_type_name(data)} "
            "(for one object per line, name the file .jsonl)",
            path=str(path),
        )
    for index, item in enumerate(data, start=1):
        if isinstance(item, dict):
            yield index, item
        else:
            yield InputError(
                f"expected a JSON object, got {_type_name(item)}",
                path=str(path),
                line=index,
                unit="item",
            )


def _csv_rows(path: Path) -> Iterator[RowItem]:
    delimiter = "\t" if path.suffix.lower() == ".tsv" else ","
    with open(path, encoding="utf-8-sig", newline="") as fh:
        reader = csv.DictReader(fh, delimiter=delimiter)
        try:
            for row in reader:
                line = reader.line_num
                if None in row:
                    yield InputError(
                        f"has {len(reader.fieldnames or []) + len(row[None])} cells but the "
                        f"header has {len(reader.fieldnames or [])}",
                        path=str(path),
                        line=line,
                    )
                    continue
                yield line, dict(row)
        except (csv.Error, UnicodeDecodeError) as exc:
            raise InputError(f"cannot be read as CSV: {exc}", path=str(path)) from None


def _parquet_rows(path: Path) -> Iterator[RowItem]:
    import pyarrow.parquet as pq

    try:
        parquet = pq.ParquetFile(path)
    except Exception as exc:  # pyarrow raises several unrelated types here
        raise InputError(f"is not a readable Parquet file: {exc}", path=str(path)) from None
    index = 0
    for batch in parquet.iter_batches(batch_size=1024):
        for row in batch.to_pylist():
            index += 1
            yield index, row


def _datasets_rows(path: Path) -> Iterator[RowItem]:
    try:
        import datasets
    except ImportError:  # pragma: no cover - a core dependency
        raise MissingDependency("datasets", "core") from None
    try:
        loaded = datasets.load_from_disk(str(path))
    except FileNotFoundError:
        raise InputError(
            "is a folder but not a datasets folder (Dataset.save_to_disk)", path=str(path)
        ) from None
    except Exception as exc:  # a damaged folder: datasets raises many unrelated types
        raise InputError(
            f"is not a readable datasets folder: {_brief(exc)}", path=str(path)
        ) from None
    if isinstance(loaded, datasets.DatasetDict):
        split = "train" if "train" in loaded else next(iter(loaded), None)
        if split is None:
            raise InputError("the DatasetDict has no splits", path=str(path))
        loaded = loaded[split]
    for index, row in enumerate(loaded, start=1):
        yield index, dict(row)


_READERS = {
    ".jsonl": _jsonl_rows,
    ".ndjson": _jsonl_rows,
    ".json": _json_rows,
    ".csv": _csv_rows,
    ".tsv": _csv_rows,
    ".parquet": _parquet_rows,
}


def _brief(exc: BaseException) -> str:
    """An exception as one short line, for a message that names a file."""
    text = " ".join(str(exc).split())
    return f"{type(exc).__name__}: {text[:200]}"


def _type_name(value: Any) -> str:
    if value is None:
        return "null"
    return _JSON_TYPES.get(type(value), type(value).__name__)


def parse_field_map(pairs: list[str] | None) -> dict[str, str]:
    """``["instruction=prompt", ...]`` -> ``{"instruction": "prompt"}`` (target = source)."""
    mapping: dict[str, str] = {}
    for pair in pairs or []:
        target, sep, source = pair.partition("=")
        if not sep or not target.strip() or not source.strip():
            raise InputError(f"--field {pair!r}: expected TARGET=SOURCE, e.g. instruction=prompt")
        mapping[target.strip()] = source.strip()
    return mapping


def read_records(
    path: str | Path,
    *,
    kind: str,
    required: tuple[str, ...],
    optional: dict[str, Any] | None = None,
    lists: tuple[str, ...] = (),
    field_map: dict[str, str] | None = None,
) -> Iterator[Record | InputError]:
    """Seed records of ``kind`` from ``path``, streaming.

    ``required`` fields must be non-empty strings; ``optional`` gives defaults
    (a default of ``None`` leaves the field out when the row has none).
    ``lists`` fields must be non-empty lists of strings (in CSV, a JSON array).
    ``field_map`` maps a record field to the column it comes from. Other columns
    are kept in ``meta["source"]``. A row's id is its ``id`` column when present,
    else its line number plus a hash of its content (stable across runs).
    """
    optional = optional or {}
    field_map = field_map or {}
    unknown = set(field_map) - set(required) - set(optional) - set(lists) - {"id"}
    if unknown:
        raise InputError(
            f"--field {', '.join(sorted(unknown))}: not a field of {kind} records "
            f"(fields: {', '.join([*required, *lists, *optional, 'id'])})"
        )
    id_column = field_map.get("id", "id")
    rows = 0
    for item in iter_rows(path):
        rows += 1
        if isinstance(item, InputError):
            yield item
            continue
        line, row = item
        try:
            yield _to_record(row, line, path, kind, required, optional, lists, field_map, id_column)
        except InputError as exc:
            yield exc
    if rows == 0:
        # No seeds is an error, not an empty dataset presented as a finished run.
        raise InputError("has no rows (the file is empty or only whitespace)", path=str(path))


def _to_record(
    row: dict[str, Any],
    line: int,
    path: str | Path,
    kind: str,
    required: tuple[str, ...],
    optional: dict[str, Any],
    lists: tuple[str, ...],
    field_map: dict[str, str],
    id_column: str,
) -> Record:
    fields: dict[str, Any] = {}
    used = {id_column}
    for name in lists:
        column = field_map.get(name, name)
        used.add(column)
        fields[name] = _string_list(row.get(column), path=str(path), line=line, field=column)
    for name in (*required, *optional):
        column = field_map.get(name, name)
        used.add(column)
        value = row.get(column)
        if value is None or (name in optional and value == ""):
            if name in required:
                raise InputError(
                    "is missing (expected string)", path=str(path), line=line, field=column
                )
            if optional[name] is not None:
                fields[name] = optional[name]
            continue
        if not isinstance(value, str):
            raise InputError(
                f"must be a string, got {_type_name(value)}",
                path=str(path),
                line=line,
                field=column,
            )
        if name in required and not value.strip():
            raise InputError("is empty", path=str(path), line=line, field=column)
        fields[name] = value
    source = {k: v for k, v in row.items() if k not in used}
    raw_id = row.get(id_column)
    if raw_id not in (None, ""):
        record_id = str(raw_id)
    else:
        digest = hashlib.sha256(json.dumps(fields, sort_keys=True).encode()).hexdigest()
        record_id = f"s{line}-{digest[:8]}"
    meta = {"source": _jsonable(source)} if source else {}
    return Record(kind=kind, fields=fields, id=record_id, meta=meta)


def _string_list(value: Any, *, path: str, line: int, field: str) -> list[str]:
    """A non-empty list of strings; CSV cells may hold it as a JSON array."""
    if value is None:
        raise InputError(
            "is missing (expected a list of strings)", path=path, line=line, field=field
        )
    if isinstance(value, str):
        try:
            value = json.loads(value) if value.lstrip().startswith("[") else [value]
        except json.JSONDecodeError:
            raise InputError(
                "is not a JSON array of strings", path=path, line=line, field=field
            ) from None
    if hasattr(value, "tolist"):  # numpy arrays from Parquet
        value = value.tolist()
    if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
        raise InputError(
            f"must be a list of strings, got {_type_name(value)}", path=path, line=line, field=field
        )
    if not any(v.strip() for v in value):
        raise InputError("is empty", path=path, line=line, field=field)
    return value


def _jsonable(value: Any) -> Any:
    """Parquet and datasets rows can hold dates or numpy values; keep them as JSON."""
    try:
        json.dumps(value)
        return value
    except TypeError:
        return json.loads(json.dumps(value, default=str))


def read_evoforge_records(path: str | Path) -> Iterator[Record | InputError]:
    """Records written by evoforge (with an ``id`` and a known ``kind``), in file order;
    any other row is yielded as an :class:`InputError` naming its line."""
    for item in iter_rows(path):
        if isinstance(item, InputError):
            yield item
            continue
        line, data = item
        if not data.get("id") or data.get("kind") not in KINDS:
            yield InputError(
                "is not an evoforge record (needs an id and a kind)", path=str(path), line=line
            )
            continue
        yield Record.from_json(data)


def load_jsonl(path: str | Path) -> list[dict[str, Any]]:
    """The records of a JSON-lines file evoforge wrote itself (so no checks: user
    input goes through :func:`iter_rows`, which names a bad line)."""
    with open(path, encoding="utf-8") as fh:
        return [json.loads(line) for line in fh if line.strip()]


def count_items(path: str | Path) -> int:
    """How many rows (good or bad) ``path`` has: one streaming pass, no memory."""
    fast = count_rows(path)
    if fast is not None:
        return fast
    return sum(1 for _ in iter_rows(path))


def count_rows(path: str | Path) -> int | None:
    """A cheap row count for the progress bar, where the format allows one."""
    path = Path(path)
    try:
        if path.suffix.lower() in (".jsonl", ".ndjson"):
            with open(path, "rb") as fh:
                return sum(1 for line in fh if line.strip())
        if path.suffix.lower() == ".parquet":
            import pyarrow.parquet as pq

            return pq.ParquetFile(path).metadata.num_rows
    except Exception:
        return None
    return None
