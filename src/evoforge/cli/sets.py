"""The commands over a whole set of records: dedup, select, validate."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.cli.app import app
from evoforge.cli.flags import (
    Wait,
    errors_as_messages,
    shared_flags,
    with_engine_options,
    with_options,
)
from evoforge.cli.show import dry_runner, print_json, print_report
from evoforge.io.layout import output_paths
from evoforge.options import DedupOptions, SelectOptions, ValidateOptions


@app.command()
@errors_as_messages
@with_options(DedupOptions, into="settings")
@shared_flags()
def dedup(
    source: Annotated[
        Path, typer.Argument(help="Records (.jsonl .json .csv .parquet) with an id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Kept records; rejects beside it.")],
    settings: Any = None,
    wait: Wait = False,
    as_json: bool = False,
) -> None:
    """Drop exact, near (MinHash LSH) and semantic duplicates, one kept per group.

    Example: evoforge dedup out/evolved.jsonl --out out/unique.jsonl --method exact,minhash,semantic
    """  # fmt: skip
    from evoforge.commands.dedup import dedup as run_dedup

    result = run_dedup(source, out, wait=wait, **asdict(settings))
    if as_json:
        print_json(result.summary)
        return
    paths = output_paths(Path(out))
    files = {"out": out, "rejects": paths["rejects"], "manifest": paths["manifest"]}
    print_report({**result.summary, "files": files}, title="evoforge dedup")


@app.command("select")
@errors_as_messages
@with_engine_options()
@with_options(SelectOptions, into="selection")
@shared_flags(quiet=False, dry_run=True)
def select_command(
    source: Annotated[Path, typer.Argument(help="Records written by evoforge (.jsonl ...).")],
    out: Annotated[
        Path, typer.Option("--out", help="The selected records; rejects and manifest beside.")
    ],
    selection: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Select the best-and-most-diverse subset: DEITA, AlpaGasus, LTD k-center, random;
    by model signals (IFD, Instruction Mining, memorisation level); LIMA, balanced.

    Example: evoforge select out/evolved.jsonl --out out/best.jsonl --method deita --budget 1000
    """  # fmt: skip
    from evoforge.commands.select import select as run_select

    report = dry_runner(run_select, dry_run, as_json)(
        source, out, options=options, selection=selection
    )
    if report is None:
        return
    print_report(report, title="evoforge select", as_json=as_json)


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(ValidateOptions, into="validation")
@shared_flags(quiet=False, dry_run=True)
def validate(
    file: Annotated[Path, typer.Argument(help="Records to check (.jsonl .json .csv .parquet).")],
    out: Annotated[
        Path | None, typer.Option(help="Write the records that pass here; rejects beside it.")
    ] = None,
    validation: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Check every record (its JSON Schema, and any heuristics named); exit 1 if any fails.

    Example: evoforge validate out/answers.jsonl --kind instruction --checks schema,refusal,lima
    """
    from evoforge.commands.validate import validate as run_validate

    if dry_run:
        return dry_runner(run_validate, dry_run, as_json)(
            file, out, validation=validation, options=options
        )
    # --json keeps stdout for the summary: each failure is named on stderr instead
    summary = run_validate(
        file, out, validation=validation, options=options,
        on_invalid=lambda line: typer.echo(line, err=as_json),
    )  # fmt: skip
    if as_json:
        print_json(summary.to_json())
    typer.echo(summary.line, err=True)
    raise typer.Exit(summary.exit_code)
