"""``evoforge run``: a whole pipeline from a YAML recipe (the runner: ``evoforge.recipe``)."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Annotated

import typer

from evoforge.cli.app import app
from evoforge.cli.flags import Quiet, Wait, errors_as_messages, shared_flags
from evoforge.cli.show import print_json


@app.command("run")
@errors_as_messages
@shared_flags(report=False, dry_run=True)
def run_command(
    recipe: Annotated[Path, typer.Argument(help="A YAML recipe (see examples/recipes/).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: the recipe's outputs.dir).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan: LLM calls and tokens per step; no calls."),
    ] = False,
    price: Annotated[
        str | None,
        typer.Option(
            help="Dollars per 1M tokens, IN[,OUT], e.g. 0.15,0.60: the cost expected "
            "(--dry-run) or spent."
        ),
    ] = None,
    prices: Annotated[
        Path | None, typer.Option(help="A prices file (YAML/JSON) over models.yaml's.")
    ] = None,
    llm: Annotated[
        str | None, typer.Option("--llm", help="Override the recipe's llm spec.")
    ] = None,
    overwrite: Annotated[
        bool, typer.Option("--overwrite", help="Start over instead of resuming a previous run.")
    ] = False,
    quiet: Quiet = False,
    wait: Wait = False,
    as_json: bool = False,
) -> None:
    """Run a whole pipeline from a YAML recipe; re-running resumes where it stopped.

    Example: evoforge run examples/recipes/rag-eval.yaml --dry-run --price 0.15,0.60
    """
    from evoforge.commands.run import load, plan, run
    from evoforge.dry_run import parse_price

    loaded = load(recipe, llm=llm)
    if prices is not None:  # issue 19: over the recipe's engine.prices (docs/cost.md)
        loaded.engine["prices"] = str(prices)
    prices = parse_price(price) if price else None
    if dry_run:
        planned = plan(loaded, out=out, price=prices)
        if as_json:
            print_json(planned.to_json())
        else:
            typer.echo(planned.render())
        return
    result = run(
        loaded, out=out, quiet=quiet or None, overwrite=overwrite or None, wait=wait or None
    )
    if as_json:
        print_json({
            "status": result.status, "steps": [asdict(step) for step in result.steps],
            "dataset": result.dataset, "exports": result.exports,
            "manifest": result.manifest, "calls": result.calls, "report": result.report,
        })  # fmt: skip
    for step in result.steps if not as_json else ():
        typer.echo(f"{step.name:>10}: {step.status}, {step.accepted} kept, {step.rejected} "
                   f"rejected, {step.calls} calls ({step.cache_hits} cache hits), "
                   f"{step.tokens} tokens -> {step.out}")  # fmt: skip
    say = (lambda text: typer.echo(text, err=True)) if as_json else typer.echo
    say(f"dataset: {result.dataset}" if result.dataset else "no dataset: the run stopped")
    for to, files in result.exports.items():
        say(f"export {to}: {', '.join(map(str, files))}")
    say(f"manifest: {result.manifest}")
    if prices is not None:
        say(f"cost of this run's {result.calls} calls: ${result.cost(prices):.4f}")
    if result.report is not None:
        say(f"report: {result.report}")
    if result.report_error:
        typer.echo(f"evoforge: report not written: {result.report_error}", err=True)
    if result.status != "complete":
        typer.echo("evoforge: the recipe stopped early; run it again to resume", err=True)
    raise typer.Exit(result.exit_code)
