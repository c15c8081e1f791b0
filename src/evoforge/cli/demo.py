"""``evoforge demo``: the engine end to end, offline, on the embedded model
(:mod:`evoforge.commands.demo`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.cli.app import app
from evoforge.cli.flags import errors_as_messages, shared_flags, with_engine_options
from evoforge.cli.show import print_json, print_summary, rag_report, run_summary_json
from evoforge.options import DEMO_ENGINE, DEMO_OUT


@app.command()
@errors_as_messages
@with_engine_options(fixed={"overwrite": DEMO_ENGINE["overwrite"]},
                     **{k: v for k, v in DEMO_ENGINE.items() if k != "overwrite"})  # fmt: skip
@shared_flags(quiet=False, folder=lambda out: Path(out))
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        DEMO_OUT
    ),
    options: Any = None,
    as_json: bool = False,
) -> None:
    """Run the engine end to end offline on the embedded model and show what came out.

    Example: evoforge demo --out evoforge-demo
    """
    from evoforge.commands.demo import run_demo

    def show(summary: Any, title: str) -> None:
        if as_json:  # one JSON document at the end; the stages' text goes to stderr
            return
        print_summary(summary, title=title)
        if "coverage" in summary.extra:
            rag_report(summary.extra, sum(summary.extra["plan"].values()))

    summaries = run_demo(
        out, options, show=show, say=lambda text, err: typer.echo(text, err=err or as_json)
    )
    if as_json:
        print_json([run_summary_json(summary) for summary in summaries])
    # A demo step that writes fewer samples than it shows is not an error (issue 14's
    # shortfall exit code 3 is for rag and in2 runs): the demo exits as it always has.
    codes = [0 if summary.status == "complete" else summary.exit_code for summary in summaries]
    raise typer.Exit(max(codes))
