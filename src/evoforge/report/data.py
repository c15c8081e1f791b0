"""The figures of a report, read from a folder: each output's stage and what one record tells.

An output ``X.jsonl`` has ``X.rejects.jsonl``, ``X.manifest.json`` and
``X.journal.db`` beside it (see :func:`evoforge.engine.runner.output_paths`).
:func:`discover_stages` reads each into a :class:`Stage` (its role, the records it kept
and those it dropped with the reason), keeping of each record only an :class:`Item`,
never the whole record. The journal is opened read-only, through
:func:`_journal_query`: for the seeds in input order, and for the records of an export
format that drops ids.
"""

from __future__ import annotations

import contextlib
import functools
import json
import sqlite3
from collections import Counter
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from evoforge.errors import EvoforgeError, InputError

GENERATE_COMMANDS = frozenset({"answer", "evolve", "rag", "in2", "orca2", "pam"})
GENERATE_COMMANDS = GENERATE_COMMANDS | {"grow"}  # issue 18: grow's records are generated
# Evol-Instruct's four elimination rules (Xu et al., 2023): (rule, reason code, what it
# catches, whether it judges the answer -- rules 2 and 3 apply only with answers on).
EVOL_INSTRUCT_RULES = (
    ("1", "no_information_gain", "no information gain: the same as the original", False),
    ("2", "refusal", 'the answer refuses ("sorry", under 80 words)', True),
    ("3", "empty_answer", "the answer is only punctuation and stop words", True),
    ("4", "prompt_leak", "copies words of the evolving prompt", False),
)
OUT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SIDE_FILES = (".manifest.json", ".rejects.jsonl", ".journal.db")  # beside each output
RECORD_FORMATS = (None, "jsonl", "json", "csv", "parquet")  # the others drop ids and meta

# (prompt field, response field) per kind, for the length plots.
_TEXT_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question", "answer"),
    "rag": ("user_input", "reference"),
    "in2": (None, "messages"),
    "chat": (None, "messages"),
    "pam": ("question", "messages"),
}


@dataclass
class Item:
    """What the report keeps of one record: never the whole record."""

    id: str
    kind: str
    op: str
    prompt_words: int | None
    response_words: int | None
    text: str  # the start of the prompt, for the seed table
    scores: dict[str, float]
    context_tokens: int | None
    needle_positions: list[float]


@dataclass
class Drop:
    """A record a step dropped: why, and for a duplicate, the id it lost to."""

    id: str
    reason: str
    detail: str
    lost_to: str | None
    item: Item | None


@dataclass
class Stage:
    """One output in the folder and what its step kept and dropped."""

    name: str
    role: str
    command: str
    out: Path
    manifest: dict[str, Any]
    kept: list[Item] = field(default_factory=list)
    dropped: list[Drop] = field(default_factory=list)
    seed_ids: list[str] | None = None  # from the journal, in input order
    mtime: float = 0.0

    @functools.cached_property
    def kept_ids(self) -> set[str]:
        return {item.id for item in self.kept}

    @functools.cached_property
    def input_ids(self) -> set[str]:
        return self.kept_ids | {drop.id for drop in self.dropped}

    @functools.cached_property
    def drops_by_id(self) -> dict[str, Drop]:
        return {drop.id: drop for drop in self.dropped}

    @property
    def seeds_read(self) -> int | None:
        """The seeds the run read, as its input step counted them (the manifest's
        ``steps``, equal after a resume); ``None`` for a run made before runs counted."""
        counted = (self.manifest.get("steps") or {}).get("input") or {}
        return counted.get("in")


@dataclass
class Chain:
    """A generation output and the later stages its records went through, in order."""

    source: Stage
    later: list[Stage]

    def fate(self, record_id: str) -> tuple[Stage, Drop] | None:
        """The first later stage that dropped ``record_id``, with its reason."""
        for stage in self.later:
            drop = stage.drops_by_id.get(record_id)
            if drop is not None:
                return stage, drop
        return None


# --- reading a folder ----------------------------------------------------------------


def stored_block(
    manifest: dict[str, Any], key: str, compute: Callable[[dict[str, Any], int], dict[str, Any]]
) -> dict[str, Any] | None:
    """The manifest's ``key`` block (``cost``, ``efficiency``), or ``compute(usage,
    accepted)`` for a manifest written before the block existed; None for a manifest
    without model usage."""
    usage = manifest.get("usage")
    if not isinstance(usage, dict) or not usage:
        return None
    block = manifest.get(key)
    if isinstance(block, dict):
        return block
    counts = manifest.get("counts") if isinstance(manifest.get("counts"), dict) else {}
    return compute(usage, int(counts.get("accepted") or 0))


def discover_stages(path: Path) -> list[Stage]:
    """Every output in ``path`` (a folder), with its role; for a file, that output and the
    outputs beside it that share records with it (the steps before and after it)."""
    if path.is_file():
        is_out = not path.name.endswith(SIDE_FILES)  # not its rejects, manifest or journal
        target = _read_stage(path.parent, _stem(path), out_hint=path if is_out else None)
        if target is None:
            return []
        others = [s for s in discover_stages(path.parent) if s.name != target.name]
        return [target, *(s for s in others if s.input_ids & target.input_ids)]
    stems: dict[str, None] = {}
    for candidate in sorted(path.iterdir()):
        name = candidate.name
        if name.startswith(".") or not candidate.is_file():
            continue
        for marker in SIDE_FILES[:2]:
            if name.endswith(marker):
                stems[name[: -len(marker)]] = None
    stages = [_read_stage(path, stem) for stem in stems]
    return [s for s in stages if s is not None]


def _stem(path: Path) -> str:
    name = path.name
    for marker in SIDE_FILES:
        if name.endswith(marker):
            return name[: -len(marker)]
    return name[: -len(path.suffix)] if path.suffix else name


def _read_stage(folder: Path, stem: str, out_hint: Path | None = None) -> Stage | None:
    manifest_path = folder / f"{stem}.manifest.json"
    rejects_path = folder / f"{stem}.rejects.jsonl"
    manifest: dict[str, Any] = {}
    if manifest_path.exists():
        try:
            manifest = json.loads(manifest_path.read_text("utf-8"))
        except (OSError, ValueError) as exc:
            raise InputError(
                f"is not a readable manifest ({exc})", path=str(manifest_path)
            ) from None
    out = out_hint if out_hint is not None and out_hint.suffix in OUT_SUFFIXES else None
    out = out or _out_file(folder, stem, manifest)
    if out is None:
        return None
    dropped = list(_read_rejects(rejects_path)) if rejects_path.exists() else []
    role, command = _role(manifest, dropped, has_rejects=rejects_path.exists())
    if role is None:
        return None
    stage = Stage(
        name=stem, role=role, command=command, out=out, manifest=manifest, dropped=dropped
    )
    journal = folder / f"{stem}.journal.db"
    if role == "generate" and manifest.get("format") not in RECORD_FORMATS and journal.exists():
        # An export format (ragas, deepeval, plain) drops the ids: the journal has the
        # records as made, and the rejects name the ones the run's selector left out.
        left_out = {drop.id for drop in dropped}
        rows = [r for r in _journal_records(journal) if r.get("id") not in left_out]
    else:
        rows = list(_read_rows(out))
    stage.kept = [_item(row) for row in rows]
    stage.mtime = max(p.stat().st_mtime for p in (out, manifest_path, rejects_path) if p.exists())
    if role == "generate":
        seeds = _journal_query(journal, "SELECT seed_id FROM seeds ORDER BY seq")
        stage.seed_ids = [seed_id for (seed_id,) in seeds] if seeds is not None else None
    return stage


def _out_file(folder: Path, stem: str, manifest: dict[str, Any]) -> Path | None:
    named = (manifest.get("files") or {}).get("out")
    if named:
        # The folder may have moved since the run: look for the file by name here.
        here = folder / Path(named).name
        if here.exists():
            return here
    for suffix in OUT_SUFFIXES:
        candidate = folder / f"{stem}{suffix}"
        if candidate.exists():
            return candidate
    return None


def _role(
    manifest: dict[str, Any], dropped: list[Drop], *, has_rejects: bool
) -> tuple[str | None, str]:
    command = str(manifest.get("command") or "")
    if command in GENERATE_COMMANDS:
        return "generate", command
    if command.startswith("select-"):
        return "score", command
    if command == "dedup" or any(d.reason == "duplicate" and d.lost_to for d in dropped):
        return "dedup", "dedup"
    if command == "select" or ("method" in manifest and "selected" in manifest):
        return "select", f"select ({manifest.get('method', '?')})"
    if command == "validate" or (not manifest and has_rejects):
        return "validate", "validate"
    return None, command


def _read_rows(path: Path) -> Iterator[dict[str, Any]]:
    from evoforge.io.readers import iter_rows

    try:
        for row in iter_rows(path):
            if not isinstance(row, EvoforgeError):
                yield row[1]
    except EvoforgeError:
        return


def _read_rejects(path: Path) -> Iterator[Drop]:
    for row in _read_rows(path):
        record = row.get("record")
        item = _item(record) if isinstance(record, dict) and record.get("id") else None
        yield Drop(
            id=str(row.get("id") or (item.id if item else "")),
            reason=str(row.get("reason") or "unknown"),
            detail=str(row.get("detail") or ""),
            lost_to=row.get("lost_to"),
            item=item,
        )


def _journal_query(path: Path, sql: str) -> list[tuple[Any, ...]] | None:
    """Rows of a run's journal, opened read-only (one row per seed, in input order);
    None when there is no readable journal (it may have been deleted to forget a run)."""
    if not path.exists():
        return None
    # A closed journal is read as immutable: a read-only WAL connection would otherwise
    # leave -wal and -shm files beside it. One with a WAL left by a crash is read with it.
    wal = path.with_name(f"{path.name}-wal").exists()
    uri = f"{path.resolve().as_uri()}?mode=ro" + ("" if wal else "&immutable=1")
    try:
        with contextlib.closing(sqlite3.connect(uri, uri=True)) as conn:
            return conn.execute(sql).fetchall()
    except sqlite3.Error:
        return None


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    for (payload,) in _journal_query(path, "SELECT payload FROM seeds ORDER BY seq") or []:
        yield from json.loads(payload).get("records", [])


def cluster_sizes(folder: Path, stages: list[Stage]) -> list[int]:
    """Duplicate-group sizes: from a clusters file (``dedup --clusters``) when there is one,
    else from the dedup rejects (each group: its kept record and those that lost to it)."""
    sizes: list[int] = []
    for stage in stages:
        if stage.role != "dedup":
            continue
        named = stage.manifest.get("clusters")
        clusters_file = folder / Path(named).name if named else None
        if clusters_file is not None and clusters_file.exists():
            sizes += [len(row.get("ids") or []) for row in _read_rows(clusters_file)]
            continue
        groups = Counter(d.lost_to for d in stage.dropped if d.lost_to)
        sizes += [count + 1 for count in groups.values()]
    return [s for s in sizes if s >= 2]


# --- what one record tells ------------------------------------------------------------


def _words(value: Any) -> int | None:
    text = _text(value)
    return len(text.split()) if text is not None else None


def _text(value: Any) -> str | None:
    if value is None:
        return None
    if isinstance(value, str):
        return value
    if isinstance(value, list):  # turns: [{"role", "content"}] or strings
        parts = [t.get("content", "") if isinstance(t, dict) else str(t) for t in value]
        return "\n".join(str(p) for p in parts)
    return str(value)


def operator_of(record: dict[str, Any]) -> str:
    """The operator that made a record: its evolution op, rewrite, scenario or sample type."""
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    for method, key in (("orca2", "strategy"), ("pam", "verdict")):  # issue 16
        if isinstance(meta.get(method), dict) and meta[method].get(key):
            return f"{method}:{meta[method][key]}"
    if isinstance(meta.get("evol_quality"), dict):
        return f"quality_{meta['evol_quality'].get('op', '?')}"
    for key in ("evol", "rewrite"):
        if isinstance(meta.get(key), dict) and meta[key].get("op"):
            return str(meta[key]["op"])
    for name in ("synthesizer_name", "sample_type"):
        if record.get(name):
            return str(record[name])
    lineage = record.get("lineage") or []
    if isinstance(lineage, list) and lineage and isinstance(lineage[-1], dict):
        return str(lineage[-1].get("op") or "seed")
    return "seed"


def _scores(meta: dict[str, Any]) -> dict[str, float]:
    scores: dict[str, float] = {}
    deita = meta.get("deita")
    if isinstance(deita, dict):
        for part in ("score", "complexity", "quality"):
            if isinstance(deita.get(part), int | float):
                scores[f"deita_{part}"] = float(deita[part])
    alpagasus = meta.get("alpagasus")
    if isinstance(alpagasus, dict) and isinstance(alpagasus.get("score"), int | float):
        scores["alpagasus"] = float(alpagasus["score"])
    for name in ("ifd", "mining", "memorisation"):  # model signals (issue 17)
        block = meta.get(name)
        if isinstance(block, dict) and isinstance(block.get("score"), int | float):
            scores[name] = float(block["score"])
    return scores


def _item(record: dict[str, Any]) -> Item:
    kind = str(record.get("kind") or "")
    prompt_field, response_field = _TEXT_FIELDS.get(kind, ("instruction", "output"))
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    response = record.get(response_field) if response_field else None
    if kind in ("in2", "chat", "pam") and isinstance(response, list):
        answers = [t for t in response if isinstance(t, dict) and t.get("role") == "assistant"]
        response = answers[-1].get("content") if answers else None
    prompt = record.get(prompt_field) if prompt_field else meta.get("question")
    context_tokens = record.get("context_tokens")
    positions = []
    if isinstance(context_tokens, int) and context_tokens > 0:
        for needle in record.get("needles") or []:
            start = needle.get("token_start") if isinstance(needle, dict) else None
            if isinstance(start, int):
                positions.append(min(1.0, start / context_tokens))
    return Item(
        id=str(record.get("id") or ""),
        kind=kind,
        op=operator_of(record),
        prompt_words=_words(prompt) if prompt_field else None,
        response_words=_words(response),
        text=(_text(prompt) or "")[:160],
        scores=_scores(meta),
        context_tokens=context_tokens if isinstance(context_tokens, int) else None,
        needle_positions=positions,
    )
