"""Dataset conversions: evoforge records as the rows trainers load, and as ``datasets``.

How a record becomes a conversation: an instruction record is one user turn
(``instruction``, then ``input`` after a blank line) and its ``output``; a qa or
rag record is its question (every turn of a conversational one) and its
reference answer; an IN2 record is its ``messages`` (the user turn holds the
context and the question).

- ``messages``: ``{"id", "messages": [{"role", "content"}, ...]}``, the OpenAI / TRL
  chat format (``SFTTrainer`` loads it as is);
- ``alpaca``: ``{"id", "instruction", "input", "output"}``; qa, rag and in2 rows add
  ``history`` (``[[user, assistant], ...]``, the earlier turns) and ``system``, as
  LLaMA-Factory reads them;
- ``sharegpt``: ``{"id", "conversations": [{"from": "human" | "gpt" | "system", "value"}]}``.

Records come in as a path (any format :mod:`evoforge.io.readers` takes), a
``datasets.Dataset``, a ``pandas.DataFrame`` or an iterable of dicts.
"""

from __future__ import annotations

import contextlib
import json
import os
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.io.readers import read_evoforge_records
from evoforge.io.writers import atomic_output, open_writer
from evoforge.records import KINDS, SAMPLE_FIELDS

Row = dict[str, Any]


def _conversation(record: Row, fmt: str) -> list[dict[str, str]]:
    """The record's turns, ending with the answer (see the module docstring)."""
    kind = record["kind"]
    if kind == "instruction":
        output = record.get("output")
        if not output:
            raise InputError(
                f"record {record['id']!r} has no output; --to {fmt} needs answered "
                "instructions (run `evoforge answer`, or `evoforge evolve --answers`)"
            )
        user = record["instruction"]
        if record.get("input"):
            user = f"{user}\n\n{record['input']}"
        return [{"role": "user", "content": user}, {"role": "assistant", "content": output}]
    if kind in ("in2", "chat", "pam"):  # pam: the question with its trigger, then the target
        return [{"role": t["role"], "content": t["content"]} for t in record["messages"]]
    fields = SAMPLE_FIELDS[kind]
    question = record[fields.question]
    if isinstance(question, list):
        turns = [{"role": t["role"], "content": t["content"]} for t in question]
    else:
        turns = [{"role": "user", "content": question}]
    return [*turns, {"role": "assistant", "content": record[fields.answer]}]


def skip_reason(record: Row, fmt: str) -> str | None:
    """Why ``record`` cannot be a row of ``fmt`` although its kind can (``None``: it can).

    An instruction without an output (an evolution whose answer failed, a seed
    kept because no evolution survived) is no training example: it is left out
    and counted, not an error for the whole file.
    """
    chat_rows = fmt in CHAT_ROWS or fmt == "tokens"
    if chat_rows and record["kind"] == "instruction" and not record.get("output"):
        return "no_output"
    return None


def to_messages(record: Row) -> Row:
    return {"id": record["id"], "messages": _conversation(record, "messages")}


_SHAREGPT_ROLES = {"user": "human", "assistant": "gpt", "system": "system"}


def to_sharegpt(record: Row) -> Row:
    turns = _conversation(record, "sharegpt")
    return {
        "id": record["id"],
        "conversations": [
            {"from": _SHAREGPT_ROLES[t["role"]], "value": t["content"]} for t in turns
        ],
    }


def to_alpaca(record: Row) -> Row:
    if record["kind"] == "instruction":
        _conversation(record, "alpaca")  # the missing-output check
        return {
            "id": record["id"],
            "instruction": record["instruction"],
            "input": record.get("input") or "",
            "output": record["output"],
        }
    turns = _conversation(record, "alpaca")
    system = [t["content"] for t in turns if t["role"] == "system"]
    chat = [t for t in turns if t["role"] != "system"]
    row: Row = {
        "id": record["id"],
        "instruction": chat[-2]["content"] if len(chat) >= 2 else "",
        "input": "",
        "output": chat[-1]["content"],
    }
    earlier = chat[:-2]
    # Always present on these kinds, so a file mixing single and multi-turn rows has one schema.
    row["history"] = [
        [earlier[i]["content"], earlier[i + 1]["content"]] for i in range(0, len(earlier) - 1, 2)
    ]
    row["system"] = "\n\n".join(system)
    return row


# The chat formats: one training row per record (to_dataset builds tables of these too).
CHAT_ROWS: dict[str, Callable[[Row], Row]] = {
    "messages": to_messages,
    "alpaca": to_alpaca,
    "sharegpt": to_sharegpt,
}


@contextlib.contextmanager
def quiet_datasets() -> Iterator[None]:
    """No ``datasets`` progress bars inside (restored after, if they were on)."""
    from datasets.utils import logging as datasets_logging

    was_on = datasets_logging.is_progress_bar_enabled()
    datasets_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_on:
            datasets_logging.enable_progress_bar()


def iter_records(source: Any) -> Iterator[Row]:
    """The evoforge records of ``source`` as dicts: a path (any format the readers take),
    a ``datasets.Dataset``, a ``pandas.DataFrame`` or an iterable of dicts. A row that is
    not an evoforge record (it needs an ``id`` and a ``kind``) is an :class:`InputError`
    naming it."""
    if isinstance(source, str | os.PathLike):
        for item in read_evoforge_records(source):
            if isinstance(item, InputError):
                raise item
            yield item.to_json()
        return
    for index, row in enumerate(iter_dicts(source), start=1):
        if not row.get("id") or row.get("kind") not in KINDS:
            raise InputError(f"row {index} is not an evoforge record (needs an id and a kind)")
        yield row


def iter_dicts(source: Iterable[Any]) -> Iterator[Row]:
    """Plain dicts from a ``pandas.DataFrame`` (see :mod:`evoforge.io.frames`), a
    ``datasets.Dataset`` or an iterable of mappings."""
    from evoforge.io.frames import frame_rows, is_frame

    if is_frame(source):
        yield from frame_rows(source)
        return
    for row in source:
        if not hasattr(row, "keys"):
            raise InputError(f"expected records as dicts, got {type(row).__name__}")
        yield dict(row)


def is_path(source: Any) -> bool:
    return isinstance(source, str | os.PathLike)


def rows_to_jsonl(rows: Iterable[Any], path: Path) -> Path:
    """Write ``rows`` (a ``datasets.Dataset``, a DataFrame or dicts) as JSONL to ``path``,
    atomically; values JSON cannot hold (dates, numpy numbers) become text."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_output(path) as fh:
        for row in iter_dicts(rows):
            fh.write(json.dumps(row, ensure_ascii=False, default=_plain) + "\n")
    return path


def _plain(value: Any) -> Any:
    if hasattr(value, "tolist"):  # numpy arrays and scalars
        return value.tolist()
    return str(value)


def to_dataset(source: Any, *, to: str | None = None) -> Any:
    """A ``datasets.Dataset`` of ``source``'s records (a path, a Dataset or dicts).

    ``to=None`` keeps the records as the parquet export lays them out (lists of
    strings as lists; ``lineage``, ``meta`` and other nested values as JSON text,
    so records of one kind always share a schema). ``to="messages"`` (or
    ``"alpaca"``, ``"sharegpt"``) gives the rows of that export, ready for a trainer
    (instructions without an output left out, as the export leaves them out).
    """
    if to is None:  # through the parquet writer: one flattening rule for all three
        import tempfile

        import datasets
        import pyarrow.parquet as pq

        with tempfile.TemporaryDirectory(prefix="evoforge-") as folder:
            writer = open_writer(Path(folder) / "records.parquet", "parquet")
            for record in iter_records(source):
                writer.write(record)
            writer.close()
            return datasets.Dataset(pq.read_table(writer.path))
    convert = CHAT_ROWS.get(to)
    if convert is None:
        raise ConfigError(
            f"to_dataset(to={to!r}): use one of {', '.join(CHAT_ROWS)}, or None for records"
        )
    return _table(convert(r) for r in iter_records(source) if skip_reason(r, to) is None)


def _table(rows: Iterable[Row]) -> Any:
    """A Dataset with every column any row has (``Dataset.from_list`` keeps only the
    first row's); a row without a column gets ``None`` there."""
    import datasets

    rows = list(rows)
    names = list(dict.fromkeys(name for row in rows for name in row))
    return datasets.Dataset.from_dict({name: [row.get(name) for row in rows] for name in names})
