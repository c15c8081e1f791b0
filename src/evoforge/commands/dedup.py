"""``dedup``: drop exact, near (MinHash LSH) and semantic duplicates, one kept per
group, each dropped record naming the one it lost to."""

from __future__ import annotations

import os
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from evoforge.commands.common import Source
from evoforge.errors import ConfigError, InputError
from evoforge.io.lock import holds_run_lock
from evoforge.options import DedupOptions
from evoforge.registry import lookup
from evoforge.steps import SetResult

DEDUP_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question",),
    "rag": ("user_input",),
    "in2": ("messages",),
    "chat": ("messages",),
    "pam": ("question",),
}


def dedup_fields(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The fields compared by default: by the first record's kind."""
    kind = records[0].get("kind") if records else None
    return DEDUP_FIELDS.get(kind or "", ("instruction", "output"))


def field_score(path: str) -> Callable[[dict[str, Any]], float]:
    """``"meta.deita.score"`` -> a function giving a record that value (or -inf)."""

    def score(record: dict[str, Any]) -> float:
        value: Any = record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, int | float) else float("-inf")

    return score


class JsonlRows(Sequence[dict[str, Any]]):
    """The records of a JSON-lines file a step wrote, read when asked instead of held:
    iterating streams the file; indexing reads it into memory once."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        if self._rows is not None:
            yield from self._rows
            return
        import json

        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def __getitem__(self, index: Any) -> Any:
        if self._rows is None:
            self._rows = list(iter(self))
        return self._rows[index]


@dataclass
class DedupResult:
    """What :func:`dedup` kept (input order) and dropped: each dropped record as
    ``{"id", "reason", "method", "lost_to", "similarity", "detail"}``, and the counts.
    A JSON-lines file deduplicated into a JSON-lines ``out`` is streamed (memory does
    not grow with the records): ``kept`` and ``dropped`` then read the written files."""

    kept: Sequence[dict[str, Any]]
    dropped: Sequence[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None

    def to_dataset(self, to: str | None = None) -> Any:
        """The kept records as a ``datasets.Dataset`` (see :func:`evoforge.to_dataset`)."""
        from evoforge.io.datasets import to_dataset

        return to_dataset(list(self.kept), to=to)


def _streamable(source: Any, out: str | Path | None) -> bool:
    """A JSON-lines file into a JSON-lines output: dedup can stream it."""
    from evoforge.io.writers import format_for

    return (
        isinstance(source, str | os.PathLike)
        and Path(source).suffix == ".jsonl"
        and out is not None
        and format_for(Path(out), None) == "jsonl"
    )


def _first_jsonl_record(path: Path) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return []  # the streaming reader names the line
                return [first] if isinstance(first, dict) else []
    return []


@holds_run_lock
def dedup(
    source: Source,
    out: str | Path | None = None,
    *,
    method: str = DedupOptions.method,
    threshold: float = DedupOptions.threshold,
    semantic_threshold: float = DedupOptions.semantic_threshold,
    fields: Sequence[str] | None = None,
    embedder: str = DedupOptions.embedder,
    prefer: str | None = None,
    clusters: str | Path | None = None,
    seed: int = DedupOptions.seed,
    shards: int = DedupOptions.shards,
    executor: str = DedupOptions.executor,
) -> DedupResult:
    """Drop exact, near (MinHash LSH) and semantic duplicates, one kept per group
    (see :class:`evoforge.validators.dedup.NearDuplicateGraph`).

    ``source`` is a path, a ``datasets.Dataset`` or an iterable of dicts, each with an
    ``id``. With ``out`` the kept records go there, the dropped ones to
    ``OUT.rejects.jsonl`` and the counts to ``OUT.manifest.json``. ``prefer`` keeps the
    record with the highest value of that field per group (e.g. ``meta.deita.score``);
    ``clusters`` writes each duplicate group as a JSON line; ``shards`` computes the
    MinHash signatures in that many worker processes, ``executor="ray[:ADDRESS]"`` as
    Ray Data jobs on a cluster (the result is the same).
    The defaults are :class:`evoforge.options.DedupOptions`'s.
    A ``.jsonl`` source with a ``.jsonl`` out is streamed: per record only its id,
    digests and band keys stay in memory, and candidate pairs are re-read by offset.
    """
    from evoforge.io.readers import iter_rows

    steps = dedup_steps(method)
    graph_step, plugins = steps[0], steps[1:]
    methods = graph_step.methods if graph_step is not None else ()
    if shards < 1:
        raise ConfigError(f"dedup: shards must be at least 1, got {shards}")
    stream = _streamable(source, out) and not plugins
    records: list[dict[str, Any]] = []
    if stream:
        sample = _first_jsonl_record(Path(source))  # type: ignore[arg-type]
    elif isinstance(source, str | os.PathLike):
        for item in iter_rows(source):
            if isinstance(item, InputError):
                raise item
            records.append(item[1])
        sample = records
    else:
        from evoforge.io.datasets import iter_dicts

        records = list(iter_dicts(source))
        sample = records
    model = None
    if "semantic" in methods:
        from evoforge.embeddings import load_embedder

        model = load_embedder(embedder)
    compared = tuple(fields) if fields else dedup_fields(sample)
    settings = dict(
        methods=methods, threshold=threshold, semantic_threshold=semantic_threshold,
        fields=compared, seed=seed, embedder=model, shards=shards,
    )  # fmt: skip
    if executor != "local":
        DedupOptions(executor=executor)  # the same check as the CLI's
        settings["executor"] = executor
    score = field_score(prefer) if prefer else None
    info: dict[str, Any] = {"fields": list(compared), "clusters": clusters}
    try:
        if stream:
            return _dedup_streamed(Path(source), Path(out), score, settings, info)  # type: ignore[arg-type]
        result, graph = SetResult(list(records), []), None
        if graph_step is not None:
            step = graph_step.configure(score=score, **settings)
            graph = step.build(records)
            result = step.resolve(graph)
    except ValueError as exc:
        raise ConfigError(f"dedup: {exc}") from None
    rejected = [_line(r, "?") for r in result.rejected]
    shared = {k: v for k, v in settings.items() if k != "methods"}
    for name, plugin in plugins:  # a plugin's method, over what the built-ins kept
        found = _configured(plugin, score=score, **shared).run(result.kept)
        result = SetResult(list(found.kept), [])
        rejected += [_line(r, name) for r in found.rejected]
    kept, dropped = result.kept, rejected
    if clusters is not None and graph is not None:
        graph.write_clusters(clusters, score)
    info["groups"] = len(graph.components()) if graph is not None else 0
    if out is not None:
        summary = write_dedup(Path(out), kept, dropped, **info)
    else:
        summary = _dedup_counts(kept, dropped, **info)
    return DedupResult(kept, dropped, summary, Path(out) if out is not None else None)


def dedup_steps(method: str) -> list[Any]:
    """The set steps of ``--method`` (a comma list of ``dedup`` registry names), in
    order: first one :class:`~evoforge.validators.dedup.DedupStep` over every built-in
    method named (``None`` if there is none: they share one graph), then
    ``(name, step)`` for each plugin's method. An unknown name is a ``ConfigError``
    with a did-you-mean hint."""
    from evoforge.validators.dedup import DedupStep

    names = [m.strip() for m in method.split(",") if m.strip()]
    try:
        found = [(name, lookup("dedup", name, flag="--method")) for name in names]
    except ConfigError as exc:  # the API's dedup errors all start "dedup: "
        raise ConfigError(f"dedup: {exc}") from None
    built_in = [step for _, step in found if isinstance(step, DedupStep)]
    graph = DedupStep.combine(built_in) if built_in or not names else None
    return [graph, *((n, s) for n, s in found if not isinstance(s, DedupStep))]


def _configured(step: Any, **settings: Any) -> Any:
    """``step.configure(...)`` with the settings its signature names, when it has one."""
    import inspect

    configure = getattr(step, "configure", None)
    if configure is None:
        return step
    parameters = inspect.signature(configure).parameters
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in parameters.values()):
        settings = {k: v for k, v in settings.items() if k in parameters}
    return configure(**settings)


def _line(rejection: Any, method: str) -> dict[str, Any]:
    """A dedup rejects line: ``{"id", "reason", "detail", "lost_to", ...}``, no record
    (the streamed path never holds one) and ``method`` where ``step`` would be."""
    line = (
        dict(rejection)
        if isinstance(rejection, dict)
        else rejection.to_json(record=False, step=False)
    )
    line.pop("record", None)
    line.setdefault("method", method)
    return line


def _dedup_streamed(
    source: Path,
    out: Path,
    score: Callable[[dict[str, Any]], float] | None,
    settings: dict[str, Any],
    info: dict[str, Any],
) -> DedupResult:
    from evoforge.io.layout import output_paths
    from evoforge.validators.dedup import dedup_jsonl

    paths = output_paths(out)
    counts = dedup_jsonl(
        source, out, paths["rejects"], score=score, clusters=info["clusters"], **settings
    )
    summary = {**counts, **info}
    _write_dedup_manifest(out, summary)
    kept = JsonlRows(out, counts["kept"])
    dropped = JsonlRows(paths["rejects"], counts["dropped"])
    return DedupResult(kept, dropped, summary, out)


def _dedup_counts(kept: Sequence[dict], dropped: Sequence[dict], **info: Any) -> dict[str, Any]:
    by_method = Counter(rejection.get("method", "?") for rejection in dropped)
    return {"input": len(kept) + len(dropped), "kept": len(kept), "dropped": len(dropped),
            "dropped_by_method": dict(by_method), **info}  # fmt: skip


def write_dedup(out: Path, kept: list[dict], dropped: list[dict], **info: Any) -> dict[str, Any]:
    """Write dedup's kept records, its rejects (each with the id it lost to) and a
    manifest beside them; return the manifest's counts."""
    from evoforge.io.outputs import write_outputs

    write_outputs(out, kept, dropped)
    summary = _dedup_counts(kept, dropped, **info)
    _write_dedup_manifest(out, summary)
    return summary


def _write_dedup_manifest(out: Path, summary: dict[str, Any]) -> None:
    from evoforge.io.layout import output_paths
    from evoforge.io.outputs import StepCounts, write_manifest

    paths = output_paths(out)
    counts = StepCounts()  # every record dedup drops is a duplicate of one it keeps
    counts.count("dedup", seen=summary["input"], kept=summary["kept"],
                 rejected=["duplicate"] * summary["dropped"])  # fmt: skip
    manifest = {"command": "dedup", **summary,
                "files": {"out": str(out), "rejects": str(paths["rejects"])},
                "steps": counts.to_json()}  # fmt: skip
    write_manifest(paths["manifest"], manifest, mask=False, ascii_only=True)
