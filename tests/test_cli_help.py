"""Every ``--help`` reads well in an 80-column terminal: no line cut or wider than 80,
every command (and every ``probe`` subcommand) shows an example that is a real
invocation, and the flags are grouped in sections."""

from __future__ import annotations

import pytest
import typer
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.cli.helptext import examples, wrap, wrap_command
from helpers import run_cli


def _commands(command, path):
    yield path, command
    for name, sub in getattr(command, "commands", {}).items():
        yield from _commands(sub, [*path, name])


ROOT = typer.main.get_command(app)
COMMANDS = {" ".join(path): command for path, command in _commands(ROOT, [])}


def _help(*args: str, columns: int = 80) -> str:
    result = CliRunner().invoke(app, [*args, "--help"], env={"COLUMNS": str(columns)})
    assert result.exit_code == 0, result.output
    return result.output


def _resolve(words: list[str]):
    """The command an example runs, and the words after its name."""
    command = ROOT
    while words and words[0] in getattr(command, "commands", {}):
        command, words = command.commands[words[0]], words[1:]
    return command, words


def test_every_command_and_probe_subcommand_is_covered():
    names = set(COMMANDS)
    assert {"", "answer", "rag", "demo", "probe", "probe build", "probe score"} <= names
    assert len(names) >= 15


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_fits_80_columns(path):
    text = _help(*path.split())
    for line in text.splitlines():
        assert len(line) <= 80, f"{path!r}: {line!r}"
        assert "…" not in line, f"{path!r}: {line!r}"
        if not line.startswith("Usage:"):  # click shortens a summary with "..."
            assert not line.rstrip().endswith("..."), f"{path!r}: {line!r}"
    for name in ("--help",):
        assert name in text


@pytest.mark.parametrize("path", sorted(COMMANDS))
def test_help_has_a_valid_example(path):
    command = COMMANDS[path]
    found = examples(command.help or "")
    assert found, f"{path!r} has no Example: paragraph"
    for example in found:
        words = example.split()
        assert words[0] == "evoforge", example
        target, rest = _resolve(words[1:])
        assert not getattr(target, "commands", None), f"{example!r} runs a group"
        if path:
            assert path in example, f"{path!r} shows an example of another command"
        known = {opt for param in target.params for opt in (*param.opts, *param.secondary_opts)}
        flags = [word.split("=")[0] for word in rest if word.startswith("-")]
        unknown = [flag for flag in flags if flag not in known]
        assert not unknown, f"{example!r}: {unknown} are not flags of {target.name}"
        # it parses: every required flag is there, values have the right type
        ctx = target.make_context("evoforge", list(rest), resilient_parsing=False)
        assert ctx is not None
    assert "Example" in _help(*path.split())


def test_flags_are_grouped_in_sections():
    text = _help("answer")
    sections = [line[:-1] for line in text.splitlines() if line and not line[0].isspace()]
    assert sections[0].startswith("Usage:")
    assert sections[1:] == ["Options", "Model", "Engine", "Budget", "Run", "General"]
    evolve = _help("evolve")
    order = [evolve.index(f"\n{title}:\n") for title in ("Options", "Evol-Instruct", "Model")]
    assert order == sorted(order)
    # the flags every command shares sit in the same place
    for path in ("dedup", "report", "probe score"):
        general = _help(*path.split()).split("\nGeneral:\n")[1]
        assert "--json" in general and "--quiet" in general


def test_long_flags_and_lists_wrap_instead_of_being_cut():
    text = _help("answer")
    assert "--allow-truncated / --no-allow-truncated" in text
    assert "FIELD=COLUMN" in text and "KEY=VALUE" in text and "list[str]" not in text
    # a comma list longer than a line breaks after a comma, not inside a name
    assert wrap("mix a=0.1,bb=0.2,ccc=0.3", 12) == ["mix a=0.1,", "bb=0.2,", "ccc=0.3"]
    assert wrap_command("evoforge x --a 1 --bb 2 --ccc 3", 20) == [
        "evoforge x --a 1 \\",
        "  --bb 2 --ccc 3",
    ]


def test_narrow_and_wide_terminals():
    for columns in (60, 200):
        for line in _help("rag", columns=columns).splitlines():
            assert len(line) <= max(columns, 80) and "…" not in line


def test_no_arguments_prints_the_help():
    result = run_cli(env={"COLUMNS": "80"})
    assert result.returncode == 2
    assert "Commands:" in result.stdout and "probe" in result.stdout
    assert all(len(line) <= 80 for line in result.stdout.splitlines())


def test_a_real_terminal_width_of_80():
    result = run_cli("rag", "--help", env={"COLUMNS": "80"})
    assert result.returncode == 0, result.stderr
    assert max(len(line) for line in result.stdout.splitlines()) <= 80
    assert "Example:" in result.stdout and "…" not in result.stdout
