"""``answer``: an ``output`` for every instruction seed (the answer step)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from evoforge.commands.common import Source, run_task_async, source_path
from evoforge.engine.runner import RunSummary
from evoforge.io.readers import count_rows, read_records
from evoforge.options import AnswerOptions, EngineOptions


def answer(
    seeds: Source,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    allow_truncated: bool = AnswerOptions.allow_truncated,
) -> RunSummary:
    """Write an ``output`` for every instruction seed in ``seeds`` (the answer step)."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        answer_async(
            seeds,
            out,
            options=options,
            field_map=field_map,
            model=model,
            allow_truncated=allow_truncated,
        )
    )


async def answer_async(
    seeds: Source,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    allow_truncated: bool = AnswerOptions.allow_truncated,
) -> RunSummary:
    from evoforge.generators.instructions import AnswerInstructions

    options = options or EngineOptions()
    seeds = source_path(seeds, out)
    task = AnswerInstructions(allow_truncated=allow_truncated)
    assert task.template is not None
    items = read_records(
        seeds,
        kind="instruction",
        required=("instruction",),
        optional={"input": ""},
        field_map=field_map,
    )
    return await run_task_async(
        command="answer",
        task=task,
        kind="instruction",
        items=items,
        out=out,
        options=options,
        config={
            "seed": options.seed,
            "prompts": {task.template.id: task.template.content_hash},
            "allow_truncated": allow_truncated,
        },
        model=model,
        total=count_rows(seeds),
    )
