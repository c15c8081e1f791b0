"""The typer application and its ``probe`` group; the commands register on them."""

from __future__ import annotations

from evoforge.cli.helptext import Typer

app = Typer(
    name="evoforge",
    help="""Synthetic data for LLM training and evaluation: answer, evolve, RAG eval sets, IN2.

    Every command takes -q/--quiet and --json; 'evoforge COMMAND --help' shows its flags.
    Exit codes: 0 done, 1 invalid records (validate), 2 bad input or flag, 3 stopped
    early (a re-run resumes), 4 out of quota (a re-run resumes), 130 interrupted.

    Examples:
    evoforge demo
    evoforge answer --seeds seeds.jsonl --out out/answers.jsonl --llm openai:gpt-4o-mini
    evoforge report out/
    """,
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

probe_app = Typer(
    help="""VaL probing sets (An et al., 2024): measure lost-in-the-middle by needle position.

    Build a set, have the model under test answer it, then score its predictions.

    Examples:
    evoforge probe build --task document --corpus doc.txt --n 64 --out probe.jsonl
    evoforge probe score --pred preds.jsonl --gold probe.jsonl --plot probe.png
    """,
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")
