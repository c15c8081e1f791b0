"""Exports: evoforge records in the formats trainers and evaluators load as they are.

    from evoforge import export

    export("out/evolved.jsonl", to="messages", out="train/evolved.jsonl")

=============  ==========================================================  =================
format         one row                                                     record kinds
=============  ==========================================================  =================
``messages``   ``{"id", "messages": [{"role", "content"}, ...]}``: the     all
               OpenAI / TRL chat format (``SFTTrainer`` loads it as is)
``alpaca``     ``{"id", "instruction", "input", "output"}``; qa, rag and     all
               in2 rows add ``history`` (``[[user, assistant], ...]``,
               the earlier turns) and ``system``, as LLaMA-Factory reads
               them
``sharegpt``   ``{"id", "conversations": [{"from": "human" | "gpt" |       all
               "system", "value"}]}``
``ragas``      the Ragas writer of :mod:`evoforge.io.writers`               qa, rag
``deepeval``   the DeepEval writer of :mod:`evoforge.io.writers`            qa, rag
``parquet``    the record, nested values as JSON text                      all
``hf-dir``     the parquet table, ``datasets.Dataset.save_to_disk``         all
=============  ==========================================================  =================

How a record becomes a conversation, and ``to_dataset``, are in
:mod:`evoforge.io.datasets`; this module writes the files.

Every export writes a dataset card (``README.md`` beside the output; inside an
``hf-dir`` folder) from the input's manifest: see :mod:`evoforge.card`.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError

# The conversions live in io.datasets; these names stay importable from evoforge.export.
from evoforge.io.datasets import (  # noqa: F401
    CHAT_ROWS,
    is_path,
    iter_dicts,
    iter_records,
    quiet_datasets,
    rows_to_jsonl,
    skip_reason,
    to_alpaca,
    to_dataset,
    to_messages,
    to_sharegpt,
)
from evoforge.io.writers import JsonlWriter, RecordWriter, open_writer
from evoforge.records import KINDS

Row = dict[str, Any]


def _jsonl(convert: Callable[[Row], Row]) -> Callable[[Path], RecordWriter]:
    return lambda path: JsonlWriter(path, convert)


@dataclass(frozen=True)
class ExportFormat:
    """One target: which kinds it takes, what ``--out`` should look like, how to write it."""

    name: str
    kinds: tuple[str, ...]
    suffix: str  # "" for a folder
    open: Callable[[Path], RecordWriter] | None  # None: hf-dir (written from a parquet table)
    consumer: str  # who loads it, for the card and the error messages


_QA = ("qa", "rag")
EXPORT_FORMATS: dict[str, ExportFormat] = {
    f.name: f
    for f in (
        ExportFormat("messages", KINDS, ".jsonl", _jsonl(to_messages), "TRL SFTTrainer, OpenAI"),
        ExportFormat("alpaca", KINDS, ".jsonl", _jsonl(to_alpaca), "Alpaca, LLaMA-Factory"),
        ExportFormat("sharegpt", KINDS, ".jsonl", _jsonl(to_sharegpt), "ShareGPT, Axolotl"),
        ExportFormat("ragas", _QA, ".jsonl", lambda p: open_writer(p, "ragas"), "Ragas"),
        ExportFormat("deepeval", _QA, ".json", lambda p: open_writer(p, "deepeval"), "DeepEval"),
        ExportFormat("parquet", KINDS, ".parquet", lambda p: open_writer(p, "parquet"), "pandas"),
        ExportFormat("hf-dir", KINDS, "", None, "datasets.load_from_disk"),
        # token ids with exact loss masks (evoforge.io.tokens); opened with --tokenizer
        ExportFormat("tokens", KINDS, ".jsonl", None, "TRL SFTTrainer (pre-tokenized)"),
    )
}


def formats_for_kind(kind: str) -> list[str]:
    return [name for name, f in EXPORT_FORMATS.items() if kind in f.kinds]


@dataclass
class ExportResult:
    """What :func:`export` wrote: the data files (``ragas`` may add a multi-turn
    sibling), how many rows, and the dataset card."""

    format: str
    out: Path
    files: list[Path]
    count: int
    by_kind: dict[str, int] = field(default_factory=dict)
    skipped: dict[str, int] = field(default_factory=dict)  # reason -> records left out
    card: Path | None = None

    def to_dataset(self, **load_kwargs: Any) -> Any:
        """The export loaded back with ``datasets`` (its first data file); ``load_kwargs``
        go to ``load_dataset`` (e.g. ``cache_dir``)."""
        import datasets

        if self.format == "hf-dir":
            return datasets.load_from_disk(str(self.out))
        builder = "parquet" if self.format == "parquet" else "json"
        return datasets.load_dataset(
            builder, data_files=str(self.files[0]), split="train", **load_kwargs
        )


def export(
    path: Any,
    *,
    to: str,
    out: str | Path,
    card: bool = True,
    license: str = "other",
    language: Iterable[str] = ("en",),
    push_to_hub: str | None = None,
    private: bool = False,
    tokenizer: str | os.PathLike[str] | None = None,
) -> ExportResult:
    """Write the records of ``path`` (an evoforge output file or folder, a
    ``datasets.Dataset`` or an iterable of record dicts) as ``to`` into ``out``.

    Raises :class:`ConfigError` when a record's kind has no mapping to ``to``,
    naming the formats that take it. Writes a dataset card beside ``out`` unless
    ``card=False``; ``push_to_hub="user/name"`` then uploads the export and its
    card (see :func:`evoforge.card.push_to_hub`). ``to="tokens"`` tokenizes with the
    ``tokenizer`` folder (default: the embedded model's; see :mod:`evoforge.io.tokens`).
    """
    from evoforge.card import CardStats, check_card_target, write_card
    from evoforge.card import push_to_hub as push

    target = EXPORT_FORMATS.get(to)
    if target is None:
        raise ConfigError(f"--to {to!r}: use one of {', '.join(EXPORT_FORMATS)}")
    out = Path(out)
    if target.suffix and out.suffix.lower() != target.suffix:
        raise ConfigError(f"--out {out}: --to {to} writes a {target.suffix} file")
    if to == "hf-dir" and out.suffix:
        raise ConfigError(f"--out {out}: --to hf-dir writes a folder (no suffix)")
    source = Path(path) if isinstance(path, str | os.PathLike) else None
    if source is not None and source.resolve() == out.resolve():
        raise ConfigError(f"--out {out}: the same as the input; write the export elsewhere")
    out.parent.mkdir(parents=True, exist_ok=True)
    card_folder = out if to == "hf-dir" else out.parent
    if card and card_folder.is_dir():  # before any data is written
        check_card_target(card_folder)
    if to == "tokens":  # before any file is touched: a missing tokenizer is bad input
        from evoforge.io.tokens import load_chat_tokenizer, token_writer

        chat_tokenizer = load_chat_tokenizer(tokenizer)
    stats = CardStats()
    if to == "tokens":
        writer = token_writer(out, chat_tokenizer)
    else:
        writer = _hf_dir_writer(out) if target.open is None else target.open(out)
    try:
        for record in iter_records(path):
            if record["kind"] not in target.kinds:
                kind = record["kind"]
                raise ConfigError(
                    f"--to {to}: record {record['id']!r} has kind {kind!r}, and {to} takes "
                    f"only {' and '.join(target.kinds)} records; export {kind} records with "
                    f"--to {' | '.join(formats_for_kind(kind))}"
                )
            reason = skip_reason(record, to)
            if reason is not None:
                stats.skipped[reason] += 1
                continue
            writer.write(record)
            stats.add(record)
    except BaseException:
        writer.abort()
        raise
    writer.close()
    files = writer.files
    result = ExportResult(to, out, files, writer.count, dict(stats.kinds), dict(stats.skipped))
    if card:
        result.card = write_card(
            card_folder, data_files=_card_data_files(to, files), stats=stats, source=source, fmt=to,
            consumer=target.consumer, license=license, language=list(language),
        )  # fmt: skip
    if push_to_hub:
        uploads = None if to == "hf-dir" else [f.name for f in files] + ["README.md"]
        push(card_folder, push_to_hub, allow_patterns=uploads, private=private)
    return result


def _card_data_files(to: str, files: list[Path]) -> dict[str, str]:
    """Config name -> data file path relative to the card's folder."""
    if to == "hf-dir":
        return {"default": "data-*.arrow"}
    configs = {"default": files[0].name}
    for extra in files[1:]:
        configs["multi_turn"] = extra.name  # ragas: conversational samples
    return configs


class _HfDirWriter(RecordWriter):
    """Rows go to a parquet table beside ``path`` (the parquet export's flattening), which
    becomes a ``datasets`` folder on close; an existing datasets folder is replaced."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self._parquet = open_writer(path.with_name(f".{path.name}.rows.parquet"), "parquet")

    def write(self, record: Row) -> None:
        self._parquet.write(record)
        self.count += 1

    def close(self) -> None:
        import datasets
        import pyarrow.parquet as pq

        self._parquet.close()
        table_path = self._parquet.path
        tmp = self.path.with_name(f".{self.path.name}.tmp-{os.getpid()}")
        try:
            with quiet_datasets():
                datasets.Dataset(pq.read_table(table_path)).save_to_disk(str(tmp))
        finally:
            table_path.unlink(missing_ok=True)
        if self.path.exists():
            shutil.rmtree(self.path)
        os.replace(tmp, self.path)

    def abort(self) -> None:
        self._parquet.abort()


def _hf_dir_writer(out: Path) -> RecordWriter:
    if out.exists() and (not out.is_dir() or _foreign_folder(out)):
        raise ConfigError(
            f"--out {out}: exists and is not a datasets folder; hf-dir replaces only an "
            "earlier export (pick a new folder)"
        )
    return _HfDirWriter(out)


def _foreign_folder(folder: Path) -> bool:
    names = {p.name for p in folder.iterdir()}
    return bool(names) and "state.json" not in names
