"""The commands that make training data for a method: orca2 (Orca 2 prompt erasure) and
pam (PAM self-correction data)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.cli.app import app
from evoforge.cli.flags import errors_as_messages, shared_flags, with_engine_options, with_options
from evoforge.cli.generate import OUT_HELP, FieldMap
from evoforge.cli.show import dry_runner, finish
from evoforge.options_training import Orca2Options, PamOptions


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(Orca2Options, into="settings")
@shared_flags(quiet=False, dry_run=True)
def orca2(
    seeds: Annotated[
        Path,
        typer.Option("--seeds", help="Instruction seeds (instruction, optional input, task)."),
    ],
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    field: FieldMap = None,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Orca 2 (Mitra et al., 2023): answer under a strategy prompt, then erase it.

    Example: evoforge orca2 --seeds seeds.jsonl --out orca2.jsonl --strategy-map math=step_by_step
    """  # fmt: skip
    from evoforge.commands.orca2 import orca2 as run_orca2
    from evoforge.io.readers import parse_field_map

    run = dry_runner(run_orca2, dry_run, as_json)
    summary = run(seeds, out, orca=settings, options=options, field_map=parse_field_map(field))
    finish(summary, title="evoforge orca2", as_json=as_json)


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(PamOptions, into="settings")
@shared_flags(quiet=False, dry_run=True)
def pam(
    seeds: Annotated[
        Path, typer.Option("--seeds", help="QA seeds (question, optional reference).")
    ],
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    field: FieldMap = None,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """PAM self-correction data (Han et al., 2024): answer, verify, correct.

    Example: evoforge pam --seeds qa.jsonl --out pam.jsonl --llm openai:gpt-4o --balance correct=0.5
    """  # fmt: skip
    from evoforge.commands.pam import pam as run_pam
    from evoforge.io.readers import parse_field_map

    run = dry_runner(run_pam, dry_run, as_json)
    summary = run(seeds, out, settings=settings, options=options,
                  field_map=parse_field_map(field))  # fmt: skip
    finish(summary, title="evoforge pam", as_json=as_json)
