"""``select``: score (DEITA, AlpaGasus: LLM judges through the engine) and keep the
best-and-most-diverse subset (DEITA, AlpaGasus, LTD k-center or random)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.commands.common import Source, load_run_embedder, run_task_async, source_path
from evoforge.commands.select_signals import (
    SIGNAL_METHODS,
    manifest_settings,
    select_signal_async,
)
from evoforge.errors import InputError
from evoforge.io.lock import holds_run_lock
from evoforge.io.readers import load_jsonl
from evoforge.io.readers import read_evoforge_records as _read_evoforge_records
from evoforge.options import EngineOptions, SelectOptions
from evoforge.records import Record

SCORERS = {"deita": "DeitaScorer", "alpagasus": "AlpagasusRater"}


@holds_run_lock
async def select_async(
    source: Source,
    out: str | Path,
    *,
    selection: SelectOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Score (DEITA, AlpaGasus: LLM judges through the engine) and select a subset.

    Writes ``OUT`` (the selected records, in input order), ``OUT.rejects.jsonl``
    (every other record with its reason: ``too_similar`` with the id and cosine it
    lost to, ``over_budget``, ``low_score``, ``not_selected``, ``unscored``) and
    ``OUT.manifest.json``. Scores go to ``OUT.scored.jsonl`` (journaled and cached,
    so a re-run pays nothing).
    """
    from evoforge.io.layout import output_paths
    from evoforge.io.outputs import write_outputs
    from evoforge.validators import select as selection_module

    selection = selection or SelectOptions()
    options = options or EngineOptions()
    source = source_path(source, out)
    if selection.method in SIGNAL_METHODS:  # scored by the model's own signals (issue 17)
        return await select_signal_async(
            source, out, selection=selection, options=options, model=model
        )
    out = Path(out)
    paths = output_paths(out)
    records: list[Any]
    if selection.method in SCORERS:
        stem = out.name[: -len(out.suffix)] if out.suffix else out.name
        scored_path = out.with_name(f"{stem}.scored.jsonl")
        scorer_class = getattr(selection_module, SCORERS[selection.method])
        if selection.method == "deita":
            scorer = scorer_class(mode=selection.deita_mode)
        else:
            scorer = scorer_class()
        first = next((r for r in _read_evoforge_records(source) if isinstance(r, Record)), None)
        scoring = await run_task_async(
            command=f"select-{selection.method}", task=scorer,
            kind=first.kind if first is not None else "instruction",
            items=_read_evoforge_records(source), out=scored_path, options=options,
            config={"method": selection.method, "seed": options.seed,
                    **({"deita_mode": selection.deita_mode} if selection.method == "deita"
                       else {})}, model=model,
        )  # fmt: skip
        records = [Record.from_json(r) for r in load_jsonl(scored_path)]
        scoring_report = {"scored": scoring.accepted, "rejected": scoring.rejected_by_reason}
    else:
        records = []
        for item in _read_evoforge_records(source):
            if isinstance(item, InputError):
                raise item
            records.append(item)
        scoring_report = {}
    kwargs: dict[str, Any] = {}
    if selection.method == "deita":
        kwargs = {"tau": selection.tau, "fields": selection.fields}
    elif selection.method == "alpagasus":
        kwargs = {"min_score": selection.min_score}
    elif selection.method == "kcenter":
        kwargs = {"k": selection.clusters, "seed": options.seed, "fields": selection.fields,
                  "mode": selection.kcenter_mode}  # fmt: skip
    elif selection.method in ("balanced", "lima"):
        kwargs = {"balance_by": selection.balance_by, "per_category": selection.per_category,
                  "seed": options.seed,
                  **({"lima_length": selection.lima_length} if selection.method == "lima"
                     else {})}  # fmt: skip
    else:
        kwargs = {"seed": options.seed}
    if selection.method in ("deita", "kcenter") and not (
        selection.method == "deita" and selection.tau >= 1
    ):
        kwargs["embedder"] = load_run_embedder(selection.embedder, options)
        if options.executor != "local":  # the embeddings as Ray Data jobs (issue 20)
            from evoforge.validators.dedup.ray_data import RayEmbedder

            kwargs["embedder"] = RayEmbedder(kwargs["embedder"], options.executor)
    step = selection_module.selector_step(selection.method, selection.budget, **kwargs)
    chosen = step.run(records)  # a set step: selected records, a Rejection for each other
    output = write_outputs(paths["out"], chosen.kept, chosen.rejected)
    report = {
        "method": selection.method,
        "budget": selection.budget,
        "input": len(records),
        "selected": len(chosen.kept),
        "dropped_by_reason": output.counts()["rejected_by_reason"],
        "settings": manifest_settings(selection),
        "scoring": scoring_report,
        "files": {"out": str(paths["out"]), "rejects": str(paths["rejects"])},
    }
    output.write_manifest({**report, "steps": output.step_counts("select")},
                          mask=False, ascii_only=True)  # fmt: skip
    return report


def select(
    source: Source,
    out: str | Path,
    *,
    selection: SelectOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Select the best-and-most-diverse subset: see :func:`select_async`."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        select_async(source, out, selection=selection, options=options, model=model)
    )
