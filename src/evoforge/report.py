"""Run reports: what happened to every seed, as one self-contained HTML page.

:func:`write_report` reads a folder of outputs (or one output and the steps
beside it that share its records): each output ``X.jsonl`` with
``X.rejects.jsonl``, ``X.manifest.json`` and ``X.journal.db`` beside it (see
:func:`evoforge.engine.runner.output_paths`), and writes ``report.html`` and
``summary.md`` into that folder.

Outputs play one of five roles, told apart by their manifest:

- ``generate`` -- ``answer``, ``evolve``, ``rag``, ``in2``: seeds in, records out;
- ``score`` -- the DEITA / AlpaGasus scoring run of ``select`` (``X.scored.jsonl``);
- ``validate`` -- ``validate --out`` (rejects, no manifest): records that passed the checks;
- ``dedup`` -- rejects with reason ``duplicate`` and the id each lost to;
- ``select`` -- a ``select`` manifest (``method``, ``selected``).

Records keep their ids through validate, dedup, score and select, so a
generation output's records are followed through every later stage in the
folder: that is the funnel, and per seed, the trace. Plots are SVG drawn by
matplotlib (no pyplot state) and inlined; the page needs no network.
"""

from __future__ import annotations

import contextlib
import functools
import io
import json
import re
import sqlite3
import warnings
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

from evoforge.errors import EvoforgeError, InputError
from evoforge.io.writers import atomic_text

GENERATE_COMMANDS = frozenset({"answer", "evolve", "rag", "in2"})
OUT_SUFFIXES = (".jsonl", ".json", ".csv", ".tsv", ".parquet")
SIDE_FILES = (".manifest.json", ".rejects.jsonl", ".journal.db")  # beside each output
RECORD_FORMATS = (None, "jsonl", "json", "csv", "parquet")  # the others drop ids and meta
SEED_TABLE_ROWS = 200  # a big run's per-seed table is capped (the counts are not)
TOP_REASONS = 25
FUNNEL_REASONS = 8  # a funnel names its commonest reasons; the others share one step

# (prompt field, response field) per kind, for the length plots.
_TEXT_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question", "answer"),
    "rag": ("user_input", "reference"),
    "in2": (None, "messages"),
}
_ROLE_VERB = {
    "score": "scored",
    "validate": "passed validation",
    "dedup": "deduplicated",
    "select": "selected",
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


def write_report(path: str | Path) -> dict[str, Path]:
    """Write ``report.html`` and ``summary.md`` for a run's output file or a folder of outputs.

    A folder reports every output in it (the commands refresh their folder's report
    this way when they finish); a file, that output and the steps in its folder that
    its records went through or came from. Returns
    ``{"html": ..., "summary": ...}``. Raises :class:`InputError` when the path
    holds no evoforge output.
    """
    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    folder = path if path.is_dir() else path.parent
    stages = discover_stages(path)
    if not stages:
        raise InputError(
            "no evoforge outputs here (an output X.jsonl has X.manifest.json or "
            "X.rejects.jsonl beside it)",
            path=str(path),
        )
    clusters = _cluster_sizes(folder, stages)
    report = _Report(path, stages, clusters)
    html_path = folder / "report.html"
    summary_path = folder / "summary.md"
    atomic_text(html_path, report.html())
    atomic_text(summary_path, report.markdown())
    return {"html": html_path, "summary": summary_path}


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


def _cluster_sizes(folder: Path, stages: list[Stage]) -> list[int]:
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
    return scores


def _item(record: dict[str, Any]) -> Item:
    kind = str(record.get("kind") or "")
    prompt_field, response_field = _TEXT_FIELDS.get(kind, ("instruction", "output"))
    meta = record.get("meta") if isinstance(record.get("meta"), dict) else {}
    response = record.get(response_field) if response_field else None
    if kind == "in2" and isinstance(response, list):
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


# --- the report -----------------------------------------------------------------------


@dataclass
class Section:
    """A part of the page: notes, plots and tables, shown in the order they were added."""

    id: str
    title: str
    intro: str = ""
    blocks: list[dict[str, Any]] = field(default_factory=list)

    def add_plot(self, plot_id: str, svg: str) -> None:
        self.blocks.append({"type": "plot", "id": plot_id, "svg": svg})

    def add_table(
        self, caption: str, head: list[str], rows: list[list[str]], table_id: str = ""
    ) -> None:
        self.blocks.append(
            {"type": "table", "caption": caption, "head": head, "rows": rows, "id": table_id}
        )

    def add_note(self, text: str) -> None:
        self.blocks.append({"type": "note", "text": text})

    @property
    def plot_ids(self) -> list[str]:
        return [b["id"] for b in self.blocks if b["type"] == "plot"]


class _Report:
    def __init__(self, subject: Path, stages: list[Stage], clusters: list[int]) -> None:
        self.subject = subject  # the folder, or the one output asked about
        self.stages = stages
        self.clusters = clusters
        self.chains = [self._chain(s) for s in stages if s.role == "generate"]
        self.omitted: list[str] = []
        self._seed_rows: dict[str, tuple[list[list[str]], dict[str, Any]]] = {}

    def _chain(self, source: Stage) -> Chain:
        ids = source.kept_ids
        later = []
        for stage in self.stages:
            if stage.role != "generate" and stage.input_ids & ids:
                later.append(stage)
        later.sort(key=lambda s: (-len(s.input_ids & ids), s.mtime, s.name))
        return Chain(source, later)

    # -- numbers --

    def funnel(self, chain: Chain) -> list[tuple[str, int]]:
        source = chain.source
        seeds = self.seed_map(chain)
        made = [d for d in source.dropped if d.item is not None]  # not e.g. bad_seed
        generated = len(source.kept) + len(made)
        n_seeds = len(set(source.seed_ids or []) | set(seeds.values()))
        steps = [(_seed_label(source.command), n_seeds), ("generated", generated)]
        remaining = generated
        reasons = Counter(d.reason for d in made).most_common()
        for reason, count in reasons[:FUNNEL_REASONS]:
            remaining -= count
            steps.append((f"passed {reason} check", remaining))
        if len(reasons) > FUNNEL_REASONS:  # the rest are in the rejection-reasons plot
            remaining -= sum(count for _, count in reasons[FUNNEL_REASONS:])
            steps.append((f"passed {len(reasons) - FUNNEL_REASONS} other checks", remaining))
        alive = source.kept_ids
        for stage in chain.later:
            alive = alive - {d.id for d in stage.dropped}
            verb = _ROLE_VERB.get(stage.role, stage.role)
            steps.append((f"{verb} ({stage.name})", len(alive & stage.kept_ids)))
        return steps

    def seed_map(self, chain: Chain) -> dict[str, str]:
        """Record id -> seed id, for every record the generation stage wrote or dropped."""
        source = chain.source
        known = set(source.seed_ids or [])
        ids = [i.id for i in source.kept] + [d.id for d in source.dropped]
        return {record_id: _seed_of(record_id, known) for record_id in ids}

    def final_items(self, chain: Chain) -> list[Item]:
        return [item for item in chain.source.kept if chain.fate(item.id) is None]

    # -- sections --

    def sections(self) -> list[Section]:
        builders = [
            self._overview,
            self._funnels,
            self._reasons,
            self._lengths,
            self._operators,
            self._scores,
            self._clusters,
            self._in2,
            self._seeds,
        ]
        sections = []
        for build in builders:
            section = build()
            if section is not None:
                sections.append(section)
        return sections

    def _overview(self) -> Section:
        rows = []
        for stage in self.stages:
            model = stage.manifest.get("model") or {}
            rows.append([
                stage.out.name, stage.command, str(len(stage.kept)), str(len(stage.dropped)),
                str(stage.manifest.get("status", "")),
                str(model.get("model", "") if isinstance(model, dict) else model),
                _wall(stage.manifest),
            ])  # fmt: skip
        section = Section("overview", "Outputs", "Every output found in this folder.")
        head = ["output", "step", "kept", "dropped", "status", "model", "wall time"]
        section.add_table("outputs", head, rows)
        return section

    def _funnels(self) -> Section | None:
        if not self.chains:
            self.omitted.append("Funnel: no generation output (answer, evolve, rag, in2) here.")
            return None
        section = Section(
            "funnel",
            "Funnel",
            "Seeds in, records generated, then what remained after each rejection reason "
            "and each later step (validate, dedup, score, select) that saw these records.",
        )
        for chain in self.chains:
            title = f"{chain.source.name} ({chain.source.command})"
            section.add_plot(
                f"plot-funnel-{_slug(chain.source.name)}", _funnel_svg(self.funnel(chain), title)
            )
        return section

    def _reasons(self) -> Section | None:
        counts: Counter[str] = Counter()
        for stage in self.stages:
            for drop in stage.dropped:
                counts[f"{drop.reason} ({stage.name})"] += 1
        if not counts:
            self.omitted.append("Rejection reasons: nothing was rejected.")
            return None
        section = Section(
            "reasons", "Rejection reasons", "Why records were dropped, per step (output name)."
        )
        if len(counts) > TOP_REASONS:
            section.add_note(f"The {TOP_REASONS} most common of {len(counts)} reasons.")
        section.add_plot("plot-reasons", _barh_svg(counts.most_common(TOP_REASONS), "records"))
        return section

    def _lengths(self) -> Section | None:
        before: dict[str, list[Item]] = {}
        after: dict[str, list[Item]] = {}
        for chain in self.chains:
            source = chain.source
            for item in source.kept + [d.item for d in source.dropped if d.item is not None]:
                before.setdefault(item.kind, []).append(item)
            for item in self.final_items(chain):
                after.setdefault(item.kind, []).append(item)
        section = Section(
            "lengths",
            "Length distributions",
            "Words per prompt and per response, by record kind: every record generated "
            "(before) and those kept at the end of the chain (after).",
        )
        for kind, items in sorted(before.items()):
            panels: list[tuple[str, list[float], list[float] | None]] = []
            for label, attr in (("prompt", "prompt_words"), ("response", "response_words")):
                b = [getattr(i, attr) for i in items if getattr(i, attr) is not None]
                a = [getattr(i, attr) for i in after.get(kind, []) if getattr(i, attr) is not None]
                if b:
                    panels.append((f"{label} words", b, a))
            if panels:
                section.add_plot(f"plot-lengths-{_slug(kind)}", _histograms_svg(panels, kind))
        if not section.plot_ids:
            self.omitted.append("Length distributions: no generated records with text.")
            return None
        return section

    def _operators(self) -> Section | None:
        section = Section(
            "operators",
            "Per-operator yield and tokens",
            "Yield: the records each operator (evolution op, rewrite, scenario, sample type) "
            "produced, kept or rejected. Requests and tokens per operator come from the "
            "manifest; a cache hit costs no tokens.",
        )
        for chain in self.chains:
            source = chain.source
            kept = Counter(i.op for i in source.kept)
            rejected = Counter(d.item.op for d in source.dropped if d.item is not None)
            ops = sorted(set(kept) | set(rejected), key=lambda o: (-(kept[o] + rejected[o]), o))
            if not ops:
                continue
            series = [("kept", [kept[o] for o in ops]), ("rejected", [rejected[o] for o in ops])]
            title = f"{source.name}: yield per operator"
            section.add_plot(
                f"plot-yield-{_slug(source.name)}",
                _stacked_svg(ops, series, title, "records", (_COLORS["kept"], _COLORS["drop"])),
            )
            rows = [[o, str(kept[o]), str(rejected[o]), _pct(kept[o], kept[o] + rejected[o])]
                    for o in ops]  # fmt: skip
            section.add_table(title, ["operator", "kept", "rejected", "yield"], rows)
        for stage in self.stages:
            usage = stage.manifest.get("usage")
            if isinstance(usage, dict) and usage:
                self._usage(section, stage.name, usage)
        if not section.plot_ids:
            self.omitted.append("Per-operator yield and tokens: no operators or usage recorded.")
            return None
        return section

    def _usage(self, section: Section, name: str, usage: dict[str, dict[str, int]]) -> None:
        ops = sorted(usage, key=lambda o: (-_usage_total(usage[o]), o))

        def column(key: str) -> list[int]:
            return [int(usage[o].get(key, 0)) for o in ops]

        requests = [("sent", column("calls")), ("cache hits", column("cache_hits"))]
        section.add_plot(
            f"plot-requests-{_slug(name)}",
            _stacked_svg(ops, requests, f"{name}: requests per operator", "requests"),
        )
        tokens = [("prompt", column("prompt_tokens")), ("completion", column("completion_tokens"))]
        if sum(tokens[0][1]) + sum(tokens[1][1]):
            section.add_plot(
                f"plot-tokens-{_slug(name)}",
                _stacked_svg(ops, tokens, f"{name}: tokens per operator", "tokens"),
            )
        else:
            section.add_note(f"{name}: no tokens spent (every request was a cache hit).")
        keys = ("calls", "cache_hits", "retries", "prompt_tokens", "completion_tokens")
        section.add_table(
            f"{name}: requests and tokens per operator",
            ["operator", "sent", "cache hits", "retries", "prompt tokens", "completion tokens"],
            [[o, *(str(usage[o].get(k, 0)) for k in keys)] for o in ops],
        )

    def _scores(self) -> Section | None:
        by_id: dict[str, dict[str, float]] = {}
        for stage in self.stages:
            for item in stage.kept + [d.item for d in stage.dropped if d.item is not None]:
                if item.scores:
                    by_id[item.id] = item.scores
        names = {
            "deita_score": "DEITA score (complexity x quality)",
            "deita_complexity": "DEITA complexity (1-6)",
            "deita_quality": "DEITA quality (1-6)",
            "alpagasus": "AlpaGasus rating (0-5)",
        }
        panels: list[tuple[str, list[float], list[float] | None]] = []
        for key, label in names.items():
            values = [s[key] for s in by_id.values() if key in s]
            if values:
                panels.append((label, values, None))
        if not panels:
            self.omitted.append("Scores: no DEITA or AlpaGasus scores (select --method deita).")
            return None
        section = Section(
            "scores",
            "Score distributions",
            f"What the judges gave, one score per scored record ({len(by_id)} records).",
        )
        section.add_plot("plot-scores", _histograms_svg(panels, "judge scores"))
        return section

    def _clusters(self) -> Section | None:
        if not self.clusters:
            found = any(s.role == "dedup" for s in self.stages)
            self.omitted.append(
                "Dedup clusters: " + ("no duplicates found." if found else "no dedup output here.")
            )
            return None
        sizes = Counter(self.clusters)
        section = Section(
            "clusters",
            "Dedup cluster sizes",
            f"{len(self.clusters)} groups of duplicates; each kept one record and dropped "
            f"the rest ({sum(self.clusters) - len(self.clusters)} records).",
        )
        bars = [(str(size), sizes[size]) for size in sorted(sizes)]
        section.add_plot("plot-clusters", _bar_svg(bars, "records in the group", "groups"))
        return section

    def _in2(self) -> Section | None:
        items = [i for c in self.chains for i in self.final_items(c) if i.kind == "in2"]
        positions = [p for i in items for p in i.needle_positions]
        lengths = [i.context_tokens for i in items if i.context_tokens is not None]
        panels: list[tuple[str, list[float], list[float] | None]] = []
        if positions:
            panels.append(("needle position (0 start, 1 end)", positions, None))
        if lengths:
            panels.append(("context length (tokens)", lengths, None))
        if not panels:
            self.omitted.append("IN2: no in2 records with needles or context lengths here.")
            return None
        section = Section(
            "in2",
            "IN2 needles and contexts",
            f"{len(positions)} needles in {len(items)} kept samples: where each sits in its "
            "context (uniform is the aim), and how long the contexts are.",
        )
        section.add_plot("plot-in2", _histograms_svg(panels, "in2", bins=10))
        return section

    def seed_rows(self, chain: Chain) -> tuple[list[list[str]], dict[str, Any]]:
        """One row per seed: seed id, text, generated, kept at the end, what happened
        (seeds that kept nothing first), and the counts over all seeds."""
        name = chain.source.name
        if name not in self._seed_rows:  # the page and the summary both use it
            self._seed_rows[name] = self._trace_seeds(chain)
        return self._seed_rows[name]

    def _trace_seeds(self, chain: Chain) -> tuple[list[list[str]], dict[str, Any]]:
        seeds = self.seed_map(chain)
        order = list(dict.fromkeys([*(chain.source.seed_ids or []), *seeds.values()]))
        generated: Counter[str] = Counter(seeds[i.id] for i in chain.source.kept)
        generated.update(seeds[d.id] for d in chain.source.dropped if d.item is not None)
        kept: Counter[str] = Counter()
        events: dict[str, Counter[str]] = {s: Counter() for s in order}
        lost_later: dict[str, str] = {}  # a seed's record that a later step dropped: why
        text: dict[str, str] = {}
        for item in chain.source.kept:
            seed = seeds[item.id]
            if item.id == seed or seed not in text:
                text[seed] = item.text
            fate = chain.fate(item.id)
            if fate is None:
                kept[seed] += 1
            else:
                stage, drop = fate
                lost = f" to {drop.lost_to}" if drop.lost_to else ""
                events[seed][f"{drop.reason}{lost} at {stage.name}"] += 1
                lost_later[seed] = f"{drop.reason} at {stage.name}"
        for drop in chain.source.dropped:
            seed = seeds[drop.id]
            if drop.item is not None and (drop.id == seed or seed not in text):
                text[seed] = drop.item.text
            events[seed][drop.reason] += 1
        rows = []
        for seed in order:
            happened = "; ".join(
                f"{reason} x{n}" if n > 1 else reason for reason, n in events[seed].most_common()
            )
            rows.append([seed, text.get(seed, ""), str(generated.get(seed, 0)),
                         str(kept[seed]), happened or "all kept"])  # fmt: skip
        lost_all = [r for r in rows if r[3] == "0"]
        # Why a seed ended with nothing: the step that dropped its last records, else the
        # commonest reason its records were rejected when generated.
        last_reason: Counter[str] = Counter()
        for seed in (r[0] for r in lost_all):
            if seed in lost_later:
                last_reason[lost_later[seed]] += 1
            elif events[seed]:
                last_reason[events[seed].most_common(1)[0][0]] += 1
            else:
                last_reason["nothing generated"] += 1
        stats = {
            "seeds": len(rows),
            "with_output": len(rows) - len(lost_all),
            "without_output": len(lost_all),
            "why": dict(last_reason.most_common()),
        }
        rows = lost_all + [r for r in rows if r[3] != "0"]
        return rows, stats

    def _seeds(self) -> Section | None:
        if not self.chains:
            self.omitted.append("Per-seed trace: no generation output here.")
            return None
        section = Section(
            "seeds",
            "What happened to every seed",
            "Seeds that kept nothing come first, with the reasons their records were "
            'dropped; then the others. "kept" counts records that survived every later step.',
        )
        for chain in self.chains:
            rows, stats = self.seed_rows(chain)
            why = ", ".join(f"{reason} {n}" for reason, n in stats["why"].items())
            section.add_note(
                f"{chain.source.name}: {stats['seeds']} seeds; {stats['with_output']} kept at "
                f"least one record, {stats['without_output']} kept none"
                + (f" (main reason: {why})" if why else "")
                + "."
            )
            caption = f"{chain.source.name}: per seed"
            if len(rows) > SEED_TABLE_ROWS:
                caption += (
                    f" (the first {SEED_TABLE_ROWS} of {len(rows)} seeds; the counts above "
                    "cover all; every rejection is in the rejects file)"
                )
            section.add_table(
                caption,
                ["seed", "text", "generated", "kept", "what happened"],
                rows[:SEED_TABLE_ROWS],
                table_id=f"seeds-{_slug(chain.source.name)}",
            )
        return section

    # -- rendering --

    def html(self) -> str:
        from jinja2 import Environment, select_autoescape

        sections = self.sections()
        template = resources.files("evoforge").joinpath("report_template.html").read_text("utf-8")
        env = Environment(autoescape=select_autoescape(default=True), keep_trailing_newline=True)
        return env.from_string(template).render(
            title=f"evoforge report: {self.subject.name or self.subject}",
            folder=str(self.subject),
            sections=sections,
            omitted=self.omitted,
            plot_ids=[plot_id for section in sections for plot_id in section.plot_ids],
        )

    def markdown(self) -> str:
        lines = [f"# evoforge report: {self.subject}", ""]
        for chain in self.chains:
            steps = self.funnel(chain)
            lines.append(f"## {chain.source.out.name} ({chain.source.command})")
            lines.append("")
            lines.append(" -> ".join(f"{label} {n}" for label, n in steps))
            reasons = Counter(d.reason for d in chain.source.dropped)
            if reasons:
                lines.append("")
                lines.append("rejected: " + ", ".join(f"{r} {n}" for r, n in reasons.most_common()))
            _, stats = self.seed_rows(chain)
            why = ", ".join(f"{reason} {n}" for reason, n in stats["why"].items())
            lines.append("")
            lines.append(
                f"seeds: {stats['seeds']}; kept something: {stats['with_output']}; "
                f"kept nothing: {stats['without_output']}" + (f" ({why})" if why else "")
            )
            lines.append("")
        others = [s for s in self.stages if s.role != "generate"]
        if others:
            lines.append("## later steps")
            lines.append("")
            for stage in others:
                reasons = Counter(d.reason for d in stage.dropped)
                why = ", ".join(f"{r} {n}" for r, n in reasons.most_common())
                lines.append(
                    f"- {stage.out.name} ({stage.command}): kept {len(stage.kept)}, dropped "
                    f"{len(stage.dropped)}" + (f" ({why})" if why else "")
                )
            lines.append("")
        lines.append("Plots and the per-seed table: report.html")
        return "\n".join(lines) + "\n"


def _seed_of(record_id: str, known: set[str]) -> str:
    """The seed a record came from: the longest journal seed id that prefixes it (ids grow
    by ``/suffix`` per step), else its first path part."""
    if known:
        parts = record_id.split("/")
        for end in range(len(parts), 0, -1):
            prefix = "/".join(parts[:end])
            if prefix in known:
                return prefix
    return record_id.split("/")[0]


def _seed_label(command: str) -> str:
    return {"rag": "planned scenarios", "in2": "planned samples"}.get(command, "seeds")


def _usage_total(stats: dict[str, Any]) -> int:
    return int(stats.get("calls", 0)) + int(stats.get("cache_hits", 0))


def _wall(manifest: dict[str, Any]) -> str:
    wall = manifest.get("wall_s")
    return f"{wall:.1f} s" if isinstance(wall, int | float) else ""


def _pct(part: int, whole: int) -> str:
    return f"{100 * part / whole:.0f}%" if whole else ""


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9_-]+", "-", name).strip("-") or "x"


# --- plots ----------------------------------------------------------------------------

_COLORS = {"bar": "#4C72B0", "drop": "#C44E52", "kept": "#55A868", "before": "#F0B48A"}


@contextlib.contextmanager
def _figure(width: float, height: float) -> Iterator[Any]:
    """A matplotlib Figure outside pyplot (no global figure state), SVG text kept as text."""
    import matplotlib
    from matplotlib.figure import Figure

    style = {"svg.fonttype": "none", "svg.hashsalt": "evoforge", "font.size": 9}
    with matplotlib.rc_context(style), warnings.catch_warnings():
        # Labels come from the data (reasons, file names); a glyph DejaVu lacks is not an error.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _height(n: int) -> float:
    return min(12.0, 0.9 + 0.26 * max(n, 2))


def _whole_numbers(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def _funnel_svg(steps: list[tuple[str, int]], title: str) -> str:
    return _barh_svg(steps, "records", title=title, color=_COLORS["bar"])


def _barh_svg(
    pairs: list[tuple[str, int]], xlabel: str, *, title: str = "", color: str = _COLORS["drop"]
) -> str:
    with _figure(8, _height(len(pairs))) as fig:
        ax = fig.add_subplot()
        y = list(range(len(pairs)))[::-1]
        bars = ax.barh(y, [v for _, v in pairs], color=color)
        ax.bar_label(bars, padding=3)
        ax.set_yticks(y, [label for label, _ in pairs])
        ax.set_xlim(0, max([v for _, v in pairs] + [1]) * 1.15)
        _whole_numbers(ax.xaxis)
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title)
        return _svg(fig)


def _bar_svg(pairs: list[tuple[str, int]], xlabel: str, ylabel: str) -> str:
    with _figure(6, 2.8) as fig:
        ax = fig.add_subplot()
        bars = ax.bar([label for label, _ in pairs], [v for _, v in pairs], color=_COLORS["bar"])
        ax.bar_label(bars, padding=2)
        _whole_numbers(ax.yaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return _svg(fig)


def _stacked_svg(
    labels: list[str],
    series: list[tuple[str, list[int]]],
    title: str,
    xlabel: str,
    colors: tuple[str, str] = (_COLORS["bar"], _COLORS["before"]),
) -> str:
    with _figure(8, _height(len(labels)) + 0.3) as fig:
        ax = fig.add_subplot()
        y = list(range(len(labels)))[::-1]
        left = [0] * len(labels)
        for (name, values), color in zip(series, colors, strict=False):
            ax.barh(y, values, left=left, label=name, color=color)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(y, labels)
        _whole_numbers(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
        return _svg(fig)


def _histograms_svg(
    panels: list[tuple[str, list[float], list[float] | None]],
    title: str,
    bins: int | None = None,
) -> str:
    """One histogram per panel; a panel with a second series ("after", a subset of
    "before") draws it solid over the first, so what was dropped shows as the rest."""
    import numpy as np

    with _figure(min(12.0, 4.0 * len(panels)), 2.8) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (label, before, after) in zip(axes, panels, strict=True):
            data = np.asarray(before, dtype=float)
            edges = np.histogram_bin_edges(data, bins=bins or min(30, max(5, len(set(before)))))
            if after is not None:
                ax.hist(before, bins=edges, color=_COLORS["before"], label="before")
                ax.hist(after, bins=edges, color=_COLORS["bar"], label="after")
            else:
                ax.hist(before, bins=edges, color=_COLORS["bar"])
            _whole_numbers(ax.yaxis)
            ax.set_xlabel(label)
            ax.set_ylabel("records")
        if any(after is not None for _, _, after in panels):
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper",
                       fontsize=8, frameon=False)  # fmt: skip
        fig.suptitle(title)
        return _svg(fig)
