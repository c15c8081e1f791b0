"""``pam``: QA seeds -> ``pam`` self-correction records (Han et al., 2024): the student
answers, the teacher verifies and corrects (see ``evoforge.generators.pam``)."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.commands.common import Source, run_task_async, source_path
from evoforge.commands.orca2 import read_seeds
from evoforge.engine.runner import RunSummary
from evoforge.io.layout import output_paths
from evoforge.io.readers import count_rows
from evoforge.options import EngineOptions
from evoforge.options_training import PamOptions


def pam(
    seeds: Source,
    out: str | Path,
    *,
    settings: PamOptions | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    student: Any = None,
) -> RunSummary:
    """Write a ``pam`` record for every QA seed (``question``, optional ``reference``).

    ``model`` is the teacher (default: ``options.llm``), ``student`` the student
    (default: ``settings.student``); each also takes a ChatModel or a LangChain model."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        pam_async(seeds, out, settings=settings, options=options, field_map=field_map,
                  model=model, student=student)
    )  # fmt: skip


async def pam_async(
    seeds: Source,
    out: str | Path,
    *,
    settings: PamOptions | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    student: Any = None,
) -> RunSummary:
    from evoforge.commands.common import _resolve_model
    from evoforge.generators.pam import BalanceSelector, PairedModel, PamTask
    from evoforge.llm.counting import CountingChatModel
    from evoforge.llm.spec import is_local

    settings = settings or PamOptions()
    options = options or EngineOptions()
    share = settings.correct_share()
    seeds = source_path(seeds, out)
    items = read_seeds(
        seeds, kind="qa", required=("question",), optional={"reference": None},
        field_map=field_map,
    )  # fmt: skip
    if student is None and isinstance(model, CountingChatModel):
        student = model  # a dry run (evoforge.dry_run) simulates both models
    teacher_model = _resolve_model(options, model)
    student_options = dataclasses.replace(options, llm=settings.student,
                                          llm_args=dict(settings.student_args))  # fmt: skip
    same = (
        student is None
        and model is None
        and (settings.student, settings.student_args) == (options.llm, options.llm_args)
    )
    # One model serves both roles when they are the same spec (one local model in memory).
    student_model = teacher_model if same else _resolve_model(student_options, student)
    if is_local(teacher_model) or is_local(student_model):
        # The embedded model queues requests in-process: no per-attempt timeout (as
        # build_client decides for a local --llm).
        options = dataclasses.replace(options, timeout=None)
    task = PamTask(trigger=settings.trigger, allow_truncated=settings.allow_truncated)
    journal = output_paths(Path(out))["journal"]

    def select() -> BalanceSelector | None:
        return None if share is None else BalanceSelector(_journal_records(journal), share)

    return await run_task_async(
        command="pam",
        task=task,
        kind="pam",
        items=items,
        out=out,
        options=options,
        config={
            "seed": options.seed,
            "prompts": {t.id: t.content_hash for t in task.templates()},
            "student": student_model.identity,
            "trigger": settings.trigger,
            "balance": share,
            "allow_truncated": settings.allow_truncated,
        },
        model=PairedModel(teacher_model, student_model),
        total=count_rows(seeds),
        select=select if share is not None else None,
    )


def _journal_records(path: Path) -> Iterator[dict[str, Any]]:
    """The records a run's journal holds (read-only; the run writes them at the end)."""
    conn = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        for (payload,) in conn.execute("SELECT payload FROM seeds"):
            yield from json.loads(payload)["records"]
    finally:
        conn.close()
