"""The other commands: probe build / score, export, report."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.cli.app import app, probe_app
from evoforge.cli.flags import Wait, errors_as_messages, shared_flags, with_options
from evoforge.cli.show import print_json, print_report
from evoforge.options import ExportOptions, ProbeOptions


@probe_app.command("build")
@errors_as_messages
@with_options(ProbeOptions, into="probe")
@shared_flags(report=False)
def probe_build(
    task: Annotated[str, typer.Option("--task", help="document | code | database")],
    corpus: Annotated[
        list[Path],
        typer.Option(
            "--corpus",
            help="document: text; code: .py files or folders; database: JSONL of "
            "id/label/description.",
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Probes to build.")],
    out: Annotated[Path, typer.Option("--out", help="Output .jsonl of probes.")],
    probe: Any = None,
    wait: Wait = False,
    as_json: bool = False,
) -> None:
    """Build a probing set: long contexts, one needle each at positions spread evenly.

    Example: evoforge probe build --task document --corpus doc.txt --n 64 --out probe.jsonl
    """
    from evoforge.commands.probe import build

    stats = build(task, corpus, n, out, probe=probe, wait=wait)
    print_report(stats, title="evoforge probe build", as_json=as_json)


@probe_app.command("score")
@errors_as_messages
@shared_flags(report=False)
def probe_score(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions .jsonl: {id, prediction}.")],
    gold: Annotated[Path, typer.Option("--gold", help="The probing set built by probe build.")],
    plot: Annotated[
        Path | None, typer.Option(help="PNG of score against position (default: beside --pred).")
    ] = None,
    as_json: bool = False,
) -> None:
    """Score predictions per position bucket: the average and the best-worst gap.

    Example: evoforge probe score --pred preds.jsonl --gold probe.jsonl --plot probe.png
    """
    from evoforge.commands.probe import score

    report, plot = score(pred, gold, plot=plot)
    print_report(report, title="evoforge probe score", as_json=as_json)
    typer.echo(f"plot: {plot}", err=True)


@app.command("export")
@errors_as_messages
@with_options(ExportOptions, into="settings")
@shared_flags(report=False)
def export_command(
    source: Annotated[Path, typer.Argument(help="Records written by evoforge (.jsonl ...).")],
    to: Annotated[
        str,
        typer.Option(
            "--to",
            help="messages | alpaca | sharegpt | ragas | deepeval | parquet | hf-dir | tokens",
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (hf-dir: a folder).")],
    settings: Any = None,
    as_json: bool = False,
) -> None:
    """Write records in the format a trainer or evaluator loads, with a dataset card.

    Example: evoforge export out/evolved.jsonl --to messages --out train/evolved.jsonl
    """  # fmt: skip
    from evoforge.commands.export import export_records

    summary = export_records(source, to=to, out=out, settings=settings)
    print_report(summary, title="evoforge export", as_json=as_json)


@app.command("report")
@errors_as_messages
@shared_flags(report=False)
def report_command(
    run_output: Annotated[
        Path, typer.Argument(help="A run's output file, or a folder of outputs.")
    ],
    redact: Annotated[
        bool,
        typer.Option(
            "--redact",
            help="Leave source document texts out of the page (RAG contexts and "
            "documents, IN2 contexts and needles), for reports that leave the machine.",
        ),
    ] = False,
    docs: Annotated[
        list[Path] | None,
        typer.Option(
            "--docs",
            help="The RAG documents folder, to highlight contexts in their source "
            "(default: the rag run's own documents argument, when it still exists).",
        ),
    ] = None,
    as_json: bool = False,
) -> None:
    """Write report.html (funnel, rejection reasons, plots, every seed's fate, a browser
    of every record) and summary.md; open report.html in a browser.

    Example: evoforge report out/
    """
    from evoforge.commands.report import report

    paths = report(run_output, redact=redact, docs=docs)
    if as_json:
        print_json({name: str(path) for name, path in paths.items()})
    else:
        typer.echo(paths["summary"].read_text("utf-8"), nl=False)
    typer.echo(f"report: {paths['html']}", err=True)
