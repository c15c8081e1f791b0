"""The commands that generate records through the engine: answer, evolve, rag, in2, grow."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.cli.app import app
from evoforge.cli.flags import errors_as_messages, shared_flags, with_engine_options, with_options
from evoforge.cli.show import dry_runner, finish, print_summary, rag_report, shortfall_report
from evoforge.options import AnswerOptions, EvolveOptions, In2Options, RagOptions
from evoforge.options_grow import GrowOptions

FieldMap = Annotated[
    list[str] | None,
    typer.Option(
        "--field",
        help="Map a record field to a column, e.g. instruction=prompt; repeat for more.",
        metavar="FIELD=COLUMN",
    ),
]
OUT_HELP = "Output .jsonl; rejects and manifest go beside it."
# the --out of rag and in2 (the same option, written once)
SideOut = Annotated[
    Path, typer.Option("--out", help="Output file; rejects and manifest go beside it.")
]


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(AnswerOptions, into="settings")
@shared_flags(quiet=False, dry_run=True)
def answer(
    seeds: Annotated[
        Path,
        typer.Option(
            "--seeds", help="Instruction seeds (.jsonl .json .csv .parquet or a datasets folder)."
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    field: FieldMap = None,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Write an output for every instruction seed.

    Example: evoforge answer --seeds seeds.jsonl --out out/answers.jsonl --llm openai:gpt-4o-mini
    """
    from evoforge.commands.answer import answer as run_answer
    from evoforge.io.readers import parse_field_map

    run = dry_runner(run_answer, dry_run, as_json)
    summary = run(
        seeds, out, options=options, field_map=parse_field_map(field),
        allow_truncated=settings.allow_truncated,
    )  # fmt: skip
    finish(summary, title="evoforge answer", as_json=as_json)


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(EvolveOptions, into="evolution")
@shared_flags(quiet=False, dry_run=True)
def evolve(
    seeds: Annotated[
        Path, typer.Option("--seeds", help="Seeds: instructions, or qa / rag samples.")
    ],
    out: Annotated[Path, typer.Option("--out", help=OUT_HELP)],
    field: FieldMap = None,
    evolution: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Grow seeds into harder ones: Evol-Instruct (+ Evol-Quality), or Ragas-style rewrites.

    Example: evoforge evolve --seeds seeds.jsonl --out out/evolved.jsonl --rounds 4 --answers
    """  # fmt: skip
    from evoforge.commands.evolve import evolve as run_evolve
    from evoforge.io.readers import parse_field_map

    run = dry_runner(run_evolve, dry_run, as_json)
    summary = run(
        seeds, out, evolution=evolution, options=options, field_map=parse_field_map(field)
    )
    finish(summary, title="evoforge evolve", as_json=as_json)


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(RagOptions, into="settings")
@shared_flags(quiet=False, dry_run=True)
def rag(
    docs: Annotated[
        list[Path],
        typer.Option(
            "--docs",
            help="Files or folders (.txt .md .html .jsonl .pdf); repeat for more.",
            metavar="PATH",
        ),
    ],
    out: SideOut,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Build a RAG evaluation set from documents: exactly N samples with provenance.

    Example: evoforge rag --docs ./mydocs --n 100 --out eval.jsonl --format ragas --llm openai:MODEL
    """
    from evoforge.commands.rag import rag as run_rag

    if settings.max_passes is not None:
        typer.echo("evoforge: --max-passes is deprecated: passes now adapt to the acceptance "
                   "rate until N, --max-calls / --max-tokens or the material runs out",
                   err=True)  # fmt: skip

    summary = dry_runner(run_rag, dry_run, as_json)(docs, out, rag=settings, options=options)
    if summary is None:
        return
    print_summary(summary, title="evoforge rag", as_json=as_json)
    rag_report(summary.extra, settings.n, as_json=as_json)
    raise typer.Exit(summary.exit_code)


@app.command()
@errors_as_messages
@with_engine_options(max_tokens_flag="--max-total-tokens")
@with_options(In2Options, into="settings")
@shared_flags(quiet=False, dry_run=True)
def in2(
    corpus: Annotated[
        list[Path],
        typer.Option(
            "--corpus",
            help="Text files, .jsonl, folders or a datasets folder; repeat for more.",
            metavar="PATH",
        ),
    ],
    out: SideOut,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """IN2 long-context training data (An et al., 2024): needles in 4K-32K token contexts.

    Example: evoforge in2 --corpus ./texts --n 1000 --out in2.jsonl --llm openai:MODEL
    """  # fmt: skip
    from evoforge.commands.in2 import in2 as run_in2

    summary = dry_runner(run_in2, dry_run, as_json)(corpus, out, in2=settings, options=options)
    if summary is None:
        return
    print_summary(summary, title="evoforge in2", as_json=as_json)
    extra = summary.extra
    if not as_json:
        typer.echo(f"plan {extra['plan']}; kept {extra['kept']}; documents used "
                   f"{extra['documents']['used']}; decontamination dropped "
                   f"{extra['decontamination']['documents_dropped']}")  # fmt: skip
    shortfall_report(extra)
    raise typer.Exit(summary.exit_code)


@app.command()
@errors_as_messages
@with_engine_options()
@with_options(GrowOptions, into="settings")
@shared_flags(quiet=False, dry_run=True)
def grow(
    out: SideOut,
    seeds: Annotated[
        Path | None,
        typer.Option("--seeds", help="self-instruct (8+), magpie (optional): seed instructions."),
    ] = None,
    docs: Annotated[
        list[Path] | None,
        typer.Option(
            "--docs", help="backtranslate: files or folders; repeat for more.", metavar="PATH"
        ),
    ] = None,  # fmt: skip
    field: FieldMap = None,
    settings: Any = None,
    options: Any = None,
    as_json: bool = False,
    dry_run: bool = False,
) -> None:
    """Grow a seed set: exactly N new instructions by Self-Instruct, back-translation or Magpie.

    Example: evoforge grow --method self-instruct --seeds seeds.jsonl --n 200 --out grown.jsonl
    """  # fmt: skip
    from evoforge.commands.grow import grow as run_grow
    from evoforge.errors import ConfigError
    from evoforge.io.readers import parse_field_map

    if settings.method == "backtranslate" and seeds is not None:
        raise ConfigError("--seeds is for self-instruct and magpie; backtranslate reads --docs")
    if settings.method != "backtranslate" and docs:
        raise ConfigError(f"--docs is for backtranslate; {settings.method} reads --seeds")
    source: Any = docs if settings.method == "backtranslate" else seeds
    summary = dry_runner(run_grow, dry_run, as_json)(
        source, out, grow=settings, options=options, field_map=parse_field_map(field)
    )
    if summary is None:
        return
    print_summary(summary, title="evoforge grow", as_json=as_json)
    extra = summary.extra
    if not as_json:
        typer.echo(f"{extra['method']}: kept {extra['kept']} of {extra['plan']} in "
                   f"{extra['passes']} passes")  # fmt: skip
    shortfall_report(extra)
    raise typer.Exit(summary.exit_code)
