"""``orca2``: instruction seeds -> ``chat`` records answered under an Orca 2 strategy
prompt that the record then erases (Mitra et al., 2023; see ``evoforge.generators.orca2``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.commands.common import Source, run_task_async, source_path
from evoforge.engine.runner import RunSummary
from evoforge.errors import InputError
from evoforge.io.readers import count_rows, read_records
from evoforge.options import EngineOptions
from evoforge.options_training import Orca2Options


def read_seeds(seeds: Any, **how: Any) -> list[Any]:
    """Every seed of ``seeds``, read up front: a row that lacks a required field is bad
    input for the whole run (one line naming file, line and field; exit 2), not a
    rejection, since it means the wrong file or the wrong ``--field`` mapping."""
    items = list(read_records(seeds, **how))
    for item in items:
        if isinstance(item, InputError):
            raise item
    return items


def orca2(
    seeds: Source,
    out: str | Path,
    *,
    orca: Orca2Options | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
) -> RunSummary:
    """Answer every instruction seed under its Orca 2 strategy prompt and write ``chat``
    records that keep only the generic system message (prompt erasure)."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        orca2_async(seeds, out, orca=orca, options=options, field_map=field_map, model=model)
    )


async def orca2_async(
    seeds: Source,
    out: str | Path,
    *,
    orca: Orca2Options | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
) -> RunSummary:
    from evoforge.generators.orca2 import Orca2Task

    orca = orca or Orca2Options()
    options = options or EngineOptions()
    seeds = source_path(seeds, out)
    task = Orca2Task(
        strategy_map=orca.strategies(),
        student_system=orca.student_system,
        allow_truncated=orca.allow_truncated,
    )
    items = read_seeds(
        seeds,
        kind="instruction",
        required=("instruction",),
        optional={"input": "", "task": None},
        field_map=field_map,
    )
    return await run_task_async(
        command="orca2",
        task=task,
        kind="chat",
        items=items,
        out=out,
        options=options,
        config={
            "seed": options.seed,
            "prompts": {t.id: t.content_hash for t in task.templates()},
            "strategy_map": task.strategy_map,
            "student_system": orca.student_system,
            "allow_truncated": orca.allow_truncated,
        },
        model=model,
        total=count_rows(seeds),
    )
