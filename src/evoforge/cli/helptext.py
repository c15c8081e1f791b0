"""``--help`` that reads well in 80 columns.

typer's rich layout puts a flag, its negative, its type and its help in five columns, so
at 80 columns long flags are cut (``--allow-truncat…``) and help wraps two words a line.
These command classes keep click's plain two-column layout, which wraps and never cuts,
and keep typer's sections (``rich_help_panel``): a command's own flags first, then its
groups, then the model, engine, budget, run and general flags. A docstring's
``Example:`` paragraph is kept as a command a user can paste, broken with ``\\`` where
it is longer than the line. Errors still print the way typer prints them.
"""

from __future__ import annotations

import re
import textwrap
from collections.abc import Iterator
from typing import Any

import typer
import typer.core

OPTIONS = "Options"
# The panels every command shares, after its own, in this order.
TRAILING = ("Model", "Engine", "Budget", "Run", "General")
GENERAL = "General"
EXAMPLE_LABELS = ("Example:", "Examples:")
# The flag column's widest; a longer flag has its help on the next line.
FIRST_COLUMN = 26


def paragraphs(text: str) -> list[str]:
    """A docstring's paragraphs (split at blank lines), without click's ``\\f`` tail."""
    text = (text or "").partition("\f")[0]
    blocks, current = [], []
    for line in text.strip().splitlines():
        if line.strip():
            current.append(line.strip())
        elif current:
            blocks.append("\n".join(current))
            current = []
    if current:
        blocks.append("\n".join(current))
    return blocks


def examples(text: str) -> list[str]:
    """The example command lines of a docstring (its ``Example:`` paragraphs); a line
    that does not start with ``evoforge`` continues the one before."""
    found: list[str] = []
    for block in paragraphs(text):
        if not block.startswith(EXAMPLE_LABELS):
            continue
        commands: list[str] = []
        for line in block.split(":", 1)[1].strip().splitlines():
            if line.startswith("evoforge ") or not commands:
                commands.append(line.strip())
            else:
                commands[-1] += " " + line.strip()
        found += commands
    return found


def wrap_command(command: str, width: int) -> list[str]:
    """A shell command in lines of at most ``width``, each but the last ending ``\\``,
    broken only between a flag and the next one (a flag keeps its value)."""
    words = command.split()
    groups: list[str] = []
    for word in words:
        value = groups and not word.startswith("-") and groups[-1].startswith("-")
        if value and " " not in groups[-1]:  # a flag's value stays with it
            groups[-1] += " " + word
        else:
            groups.append(word)
    lines = [groups[0]]
    for group in groups[1:]:
        if len(lines[-1]) + 1 + len(group) + 2 <= width:
            lines[-1] += " " + group
        else:
            lines.append("  " + group)
    return [line + " \\" for line in lines[:-1]] + lines[-1:]


def write_help_text(command: Any, formatter: Any) -> None:
    """The command's docstring: prose wrapped to the width, examples kept pasteable."""
    for block in paragraphs(command.help or ""):
        formatter.write_paragraph()
        with formatter.indentation():
            if block.startswith(EXAMPLE_LABELS):
                label = block.split(":", 1)[0] + ":"
                formatter.write_text(label)
                with formatter.indentation():
                    width = formatter.width - formatter.current_indent
                    for example in examples(block):
                        for line in wrap_command(example, width):
                            formatter.write(f"{'':>{formatter.current_indent}}{line}\n")
            else:
                formatter.write_text(" ".join(block.split()))


def panel_of(param: Any) -> str:
    if param.name == "help":
        return GENERAL
    return getattr(param, "rich_help_panel", None) or OPTIONS


def panels(command: Any, ctx: Any) -> Iterator[tuple[str, list[tuple[str, str]]]]:
    """(title, help rows) per panel, in the order the help shows them."""
    rows: dict[str, list[tuple[str, str]]] = {}
    arguments = []
    for param in command.get_params(ctx):
        record = param.get_help_record(ctx)
        if record is None:
            continue
        if param.param_type_name == "argument":
            arguments.append(record)
        else:
            rows.setdefault(panel_of(param), []).append(record)
    if arguments:
        yield "Arguments", arguments
    own = [title for title in rows if title not in TRAILING and title != OPTIONS]
    for title in [OPTIONS, *own, *TRAILING]:
        if rows.get(title):
            yield title, rows[title]


def wrap(text: str, width: int) -> list[str]:
    """``text`` in lines of at most ``width``: broken at spaces, and inside a word too
    long for a line after its commas (``a=1,b=2``), then anywhere."""
    pieces: list[tuple[str, bool]] = []  # (piece, joins the one before without a space)
    for word in text.split():
        parts = re.findall(r"[^,]*,|[^,]+", word) if len(word) > width else [word]
        pieces += [(part, i > 0) for i, part in enumerate(parts)]
    lines: list[str] = []
    for piece, glued in pieces:
        join = "" if glued else " "
        if lines and len(lines[-1]) + len(join) + len(piece) <= width:
            lines[-1] += join + piece
        else:
            lines += textwrap.wrap(piece, width, break_on_hyphens=False) or [piece]
    return lines or [""]


def write_rows(formatter: Any, rows: list[tuple[str, str]], first: int) -> None:
    """Two columns, the first ``first`` wide in every section so they line up; a flag
    longer than that has its help on the lines below. Words longer than a line are
    broken, so no line is wider than the formatter's width."""
    indent = formatter.current_indent
    room = max(formatter.width - indent - first - 2, 20)
    for name, text in rows:
        lines = wrap(text, room)
        if len(name) > first:
            formatter.write(f"{'':>{indent}}{name}\n")
        else:
            formatter.write(f"{'':>{indent}}{name:<{first}}  {lines.pop(0)}".rstrip() + "\n")
        for line in lines:
            formatter.write(f"{'':>{indent + first + 2}}{line}\n")


def write_panels(command: Any, ctx: Any, formatter: Any, extra: Any = ()) -> None:
    """Every section of flags (and ``extra``'s, e.g. a group's commands), aligned."""
    sections = [*panels(command, ctx), *extra]
    widths = [len(name) for _, rows in sections for name, _ in rows]
    first = min(max(widths, default=0), FIRST_COLUMN)
    for title, rows in sections:
        with formatter.section(title):
            write_rows(formatter, rows, first)


class HelpCommand(typer.core.TyperCommand):
    """A command whose ``--help`` is :mod:`evoforge.cli.helptext`'s."""

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.format_usage(ctx, formatter)
        write_help_text(self, formatter)
        write_panels(self, ctx, formatter)
        self.format_epilog(ctx, formatter)


class HelpGroup(typer.core.TyperGroup):
    """A group (``evoforge``, ``evoforge probe``) with the same help, and its commands
    each with its whole summary, wrapped, not cut at the width."""

    def parse_args(self, ctx: Any, args: list[str]) -> list[str]:
        # typer's own path prints nothing here once the help is not rich's: print it
        # (stdout, exit 2, as typer did)
        if not args and self.no_args_is_help and not ctx.resilient_parsing:
            typer.echo(ctx.get_help())
            ctx.exit(2)
        return super().parse_args(ctx, args)

    def format_help(self, ctx: Any, formatter: Any) -> None:
        self.format_usage(ctx, formatter)
        write_help_text(self, formatter)
        rows = []
        for name in self.list_commands(ctx):
            sub = self.get_command(ctx, name)
            if sub is not None and not sub.hidden:
                summary = paragraphs(sub.help or "")
                rows.append((name, " ".join(summary[0].split()) if summary else ""))
        write_panels(self, ctx, formatter, extra=[("Commands", rows)] if rows else [])
        self.format_epilog(ctx, formatter)


class Typer(typer.Typer):
    """``typer.Typer`` whose groups and commands use the help above."""

    def __init__(self, **settings: Any) -> None:
        super().__init__(cls=HelpGroup, **settings)

    def command(self, *args: Any, **settings: Any) -> Any:
        settings.setdefault("cls", HelpCommand)
        return super().command(*args, **settings)
