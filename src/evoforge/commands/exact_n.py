"""Exactly N samples: planned scenarios run in passes until each type has its count
(``rag`` and ``in2`` compose this with their own planner and selector)."""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable
from pathlib import Path
from typing import Any

from evoforge.commands.common import engine_settings
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import Run, RunSummary, Task
from evoforge.errors import ConfigError
from evoforge.options import EngineOptions
from evoforge.progress import ProgressBar
from evoforge.records import Record


def shortfall(
    counts: dict[str, int], kept: Counter[str], exhausted: set[str], passes: int, material: str
) -> dict[str, dict[str, Any]]:
    """Per type that fell short: how many are missing and why."""
    return {
        kind: {
            "missing": counts[kind] - kept[kind],
            "why": f"the corpus has no unused {material} left for it"
            if kind in exhausted
            else f"samples kept failing the checks after {passes} passes (see the rejects)",
        }
        for kind in counts
        if kept[kind] < counts[kind]
    }


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
    max_passes: int,
    out_format: str | None,
) -> tuple[RunSummary, Counter[str], int]:
    """Run planned scenarios until each type has its count: pass 1 plans exactly the
    counts, later passes plan what is missing (with a margin) from fresh material.

    All passes share one journal, so a re-run replays them without paying again;
    ``selector`` (per-type quotas, duplicates) decides what is written. Returns the
    last summary (its ``extra["selector"]`` is the last selector), the kept counts
    per type, and the number of passes run.
    """
    from evoforge.generators.rag import deficits

    selectors: list[Any] = []

    def select() -> Any:
        selectors.append(selector())
        return selectors[-1]

    summary: RunSummary | None = None
    kept: Counter[str] = Counter()
    passes = 0
    progress = ProgressBar(command, sum(counts.values()), enabled=False if options.quiet else None)
    with progress:
        for pass_no in range(1, max_passes + 1):
            items = plan(deficits(counts, kept, factor=1.0 if pass_no == 1 else 1.5), pass_no)
            if not items:
                break
            passes = pass_no
            run = Run(
                command=command, task=task, kind=kind, client=client, out=out, config=config,
                seed=options.seed, overwrite=options.overwrite and pass_no == 1,
                progress=progress.update if progress.enabled else None,
                settings=engine_settings(options), out_format=out_format, select=select,
            )  # fmt: skip
            summary = await run.execute(items)
            kept = selectors[-1].kept
            if summary.status != "complete" or all(kept[k] >= v for k, v in counts.items()):
                break
    if summary is None:
        raise ConfigError("nothing to plan: the inputs give no material for any sample")
    summary.extra["selector"] = selectors[-1]
    return summary, kept, passes
