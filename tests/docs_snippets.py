"""Code blocks of the README and the docs site, found and checked the same way.

``tests/test_readme_snippets.py`` and ``tests/test_docs_snippets.py`` run them; the
blocks that need ragas or deepeval are marked ``<!-- evaltools -->`` on the line
before the fence and run in ``tests/test_docs_evaltools.py`` (``.venv-evaltools``).
"""

from __future__ import annotations

import re
import shlex
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
DOCS = ROOT / "docs"
EVALTOOLS_MARK = "<!-- evaltools -->"
FENCE = re.compile(
    r"^(?P<indent>[ ]*)```(?P<lang>[\w-]*)[^\n]*\n(?P<code>.*?)^(?P=indent)```", re.S | re.M
)


@dataclass(frozen=True)
class Block:
    path: Path
    line: int
    language: str
    code: str
    evaltools: bool

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"


def blocks(path: Path) -> list[Block]:
    text = path.read_text("utf-8")
    found = []
    for match in FENCE.finditer(text):
        before = text[: match.start()].rstrip("\n").rsplit("\n", 1)[-1].strip()
        indent = match.group("indent")
        code = "\n".join(line[len(indent) :] for line in match.group("code").split("\n"))
        found.append(
            Block(
                path=path,
                line=text.count("\n", 0, match.start()) + 1,
                language=match.group("lang"),
                code=code,
                evaltools=before == EVALTOOLS_MARK,
            )
        )
    return found


def pages() -> list[Path]:
    return sorted(DOCS.rglob("*.md"))


def shell_commands(code: str) -> list[list[str]]:
    """The ``evoforge ...`` command lines of a shell block, continuation lines joined,
    comments dropped, each split as the shell would."""
    joined = re.sub(r"\\\n", " ", code)
    commands = []
    for line in joined.splitlines():
        words = shlex.split(line, comments=True)
        if words and words[0] == "evoforge":
            commands.append(words[1:])
    return commands


def check_command(argv: list[str]) -> list[str]:
    """What is wrong with ``evoforge ARGV`` as the CLI defines it: an unknown command
    or an unknown flag. Values and files are not checked (the examples name yours)."""
    import typer.main

    from evoforge.cli import app

    command = typer.main.get_command(app)  # typer may vendor click: duck-type the group
    words = list(argv)
    path = ["evoforge"]
    while hasattr(command, "commands"):
        if not words or words[0].startswith("-"):
            return [] if "--help" in words else [f"{' '.join(path)}: no subcommand"]
        name = words.pop(0)
        sub = command.commands.get(name)
        if sub is None:
            return [f"{' '.join(path)}: no command {name!r}"]
        path.append(name)
        command = sub
    known = {"--help"}
    for param in command.params:
        known.update(param.opts)
        known.update(param.secondary_opts)
    problems = []
    for word in words:
        if word.startswith("-") and word != "-":
            flag = word.split("=", 1)[0]
            if flag not in known:
                problems.append(f"{' '.join(path)}: no option {flag}")
    return problems
