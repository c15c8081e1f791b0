"""The typer application and its ``probe`` group; the commands register on them."""

from __future__ import annotations

import typer

app = typer.Typer(
    name="evoforge",
    help="Synthetic data for LLM training and evaluation: answer, evolve, RAG eval sets, IN2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

probe_app = typer.Typer(
    help="VaL probing sets (An et al., 2024): measure lost-in-the-middle by needle position.",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")
