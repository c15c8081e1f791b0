"""The README's code runs as written: its Python block against a local
OpenAI-compatible server, and each ``evoforge ...`` line names a real command and
only its real flags. The docs site's blocks are checked in tests/test_docs_snippets.py.
"""

from __future__ import annotations

import pytest
from docs_snippets import ROOT, blocks, check_command, shell_commands

from helpers import read_jsonl

README = ROOT / "README.md"
BLOCKS = blocks(README)


def test_the_readme_stays_a_three_minute_read():
    assert README.stat().st_size < 12_000, "move detail into docs/, keep the README short"
    text = README.read_text("utf-8")
    for needed in ("make demo", "make test", "docs/index.md"):
        assert needed in text


def test_readme_links_point_at_pages_that_exist():
    import re

    text = README.read_text("utf-8")
    for target in re.findall(r"\]\(([^)#]+)(?:#[^)]*)?\)", text):
        if not target.startswith("http"):
            assert (ROOT / target).exists(), f"README links to a missing {target}"


@pytest.mark.parametrize(
    "block", [b for b in BLOCKS if b.language == "bash"], ids=lambda b: b.where
)
def test_readme_command_lines_use_real_commands_and_flags(block):
    problems = [p for argv in shell_commands(block.code) for p in check_command(argv)]
    assert not problems, f"{block.where}: {problems}"


def test_readme_python_snippets_run(fake_openai, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    snippets = [b for b in BLOCKS if b.language == "python"]
    assert snippets
    for block in snippets:
        exec(compile(block.code, block.where, "exec"), {"__name__": "readme"})
    assert fake_openai.requests  # the snippet went through the server
    answers = read_jsonl(tmp_path / "out" / "answers.jsonl")
    assert answers and all(r["output"] for r in answers)
