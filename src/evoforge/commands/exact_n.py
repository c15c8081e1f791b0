"""Exactly N samples: planned scenarios run in passes until each type has its count
(``rag`` and ``in2`` compose this with their own planner and selector).

Pass 1 plans exactly the counts. Each later pass plans, per type, what is still
missing divided by the acceptance rate observed so far (kept / planned, for that
type, else over all types), so a type that loses half its samples gets twice its
gap. Passes go on until every type has its count, the planner has no fresh
material left, or the engine stops at the run's budget (``--max-calls``,
``--max-tokens``). A shortfall is recorded per type with its cause: ``budget``
(resumable: re-run with a larger budget), ``material`` (every chunk or source was
tried: not resumable, needs more documents) or ``max_passes`` (the deprecated cap).
A run that falls short exits 3 (``RunSummary.exit_code``), complete or not; its
manifest's ``shortfall`` says, per type, what is missing and whether to re-run.
"""

from __future__ import annotations

import math
from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evoforge.commands.common import engine_settings, make_executor
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import Run, RunSummary, Task
from evoforge.errors import ConfigError
from evoforge.options import EngineOptions
from evoforge.progress import ProgressBar
from evoforge.records import Record

# A pass never plans more than this many times a type's gap (a type with no sample kept
# yet, on a corpus where nothing passes, would otherwise plan without bound).
MAX_FACTOR = 8.0


def pass_sizes(counts: dict[str, int], kept: Counter[str], planned: Counter[str]) -> dict[str, int]:
    """What each type still needs, divided by its acceptance rate so far.

    The rate is ``kept / planned`` of the type, or of all types while the type has
    kept nothing, and at least ``1 / MAX_FACTOR``; before any pass it is 1, so pass
    1 plans exactly the counts."""
    total_kept, total_planned = sum(kept.values()), sum(planned.values())
    overall = total_kept / total_planned if total_planned and total_kept else None
    need = {}
    for kind, count in counts.items():
        missing = count - kept.get(kind, 0)
        if missing <= 0:
            continue
        if not planned.get(kind):
            rate = 1.0
        elif kept.get(kind):
            rate = kept[kind] / planned[kind]
        else:
            rate = overall if overall is not None else 1 / MAX_FACTOR
        need[kind] = math.ceil(missing / max(rate, 1 / MAX_FACTOR))
    return need


def shortfall(
    counts: dict[str, int],
    kept: Counter[str],
    exhausted: set[str],
    passes: int,
    material: str,
    *,
    stopped: str | None = None,
) -> dict[str, dict[str, Any]]:
    """Per type that fell short: how many are missing, why, the cause (``material``,
    ``budget`` or ``max_passes``) and whether re-running the command can help."""
    gaps: dict[str, dict[str, Any]] = {}
    for kind in counts:
        if kept[kind] >= counts[kind]:
            continue
        if kind in exhausted:
            cause, resumable = "material", False
            why = f"the corpus has no unused {material} left for it"
        elif stopped is not None:
            cause, resumable = "budget", True
            why = f"the run stopped ({stopped}) after {passes} passes; re-run to resume"
        else:
            cause, resumable = "max_passes", True
            why = f"samples kept failing the checks after {passes} passes (see the rejects)"
        gaps[kind] = {
            "missing": counts[kind] - kept[kind],
            "why": why,
            "cause": cause,
            "resumable": resumable,
        }
    return gaps


def mark_shortfall(summary: RunSummary, gaps: dict[str, dict[str, Any]]) -> dict[str, Any]:
    """Say a shortfall in the summary's message; the run stays ``complete`` (its records
    are written, and a recipe goes on with them), and ``RunSummary.exit_code`` is 3 while
    ``extra["shortfall"]`` is not empty. Returns the manifest keys to add (none)."""
    if gaps and summary.status == "complete":
        missing = sum(gap["missing"] for gap in gaps.values())
        summary.message = f"{summary.message}; {missing} short of the count asked for"
    return {}


async def run_passes(
    *,
    command: str,
    kind: str,
    task: Task,
    out: str | Path,
    config: dict[str, Any],
    options: EngineOptions,
    client: LLMClient,
    counts: dict[str, int],
    plan: Callable[[dict[str, int], int], list[Record]],
    selector: Callable[[], Any],
    max_passes: int | None,
    out_format: str | None,
) -> tuple[RunSummary, Counter[str], int]:
    """Run planned scenarios until each type has its count (see the module's doc):
    pass 1 plans exactly the counts, later passes what is missing over the
    acceptance rate, from fresh material, until the planner has none or the budget
    stops the engine (``max_passes``, deprecated, caps the passes).

    All passes share one journal, so a re-run replays them without paying again;
    ``selector`` (per-type quotas, duplicates) decides what is written. Returns the
    last summary (its ``extra["selector"]`` is the last selector), the kept counts
    per type, and the number of passes run.
    """
    selectors: list[Any] = []

    def select() -> Any:
        selectors.append(selector())
        return selectors[-1]

    summary: RunSummary | None = None
    kept: Counter[str] = Counter()
    planned: Counter[str] = Counter()
    passes = 0
    progress = ProgressBar(command, sum(counts.values()), enabled=False if options.quiet else None)
    executor = make_executor(options, None, client)
    with progress:
        while max_passes is None or passes < max_passes:
            need = pass_sizes(counts, kept, planned)
            items = plan(need, passes + 1)
            if not items:
                break
            passes += 1
            planned.update(need)
            run = Run(
                command=command, task=task, kind=kind, client=client, out=out, config=config,
                seed=options.seed, overwrite=options.overwrite and passes == 1,
                progress=progress.update if progress.enabled else None,
                settings=engine_settings(options), out_format=out_format, select=select,
                executor=executor,
            )  # fmt: skip
            summary = await run.execute(items)
            kept = selectors[-1].kept
            if summary.status != "complete" or all(kept[k] >= v for k, v in counts.items()):
                break
    if summary is None:
        raise ConfigError("nothing to plan: the inputs give no material for any sample")
    summary.extra["selector"] = selectors[-1]
    return summary, kept, passes
