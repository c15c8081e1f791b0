"""Every code block of the docs site is checked (tests/docs_snippets.py finds them):

- Python blocks compile; those of the Python API page run in order, as written,
  against the fake OpenAI-compatible server (later snippets read what earlier ones
  wrote, as a reader following the page would).
- ``evoforge ...`` lines of shell blocks name a real command and only its real flags.
- JSON blocks parse (one object, or one object per line); YAML blocks load.
- Blocks marked ``<!-- evaltools -->`` need ragas or deepeval: they run in
  tests/test_docs_evaltools.py, in .venv-evaltools (`make test-exports`).
"""

from __future__ import annotations

import json

import pytest
import yaml
from docs_snippets import DOCS, ROOT, blocks, check_command, pages, shell_commands

from helpers import read_jsonl

ALL = [block for page in pages() for block in blocks(page)]
SHELL = [b for b in ALL if b.language in ("bash", "sh", "console", "shell")]
PYTHON = [b for b in ALL if b.language == "python"]


def test_the_docs_have_code_blocks_to_check():
    assert len(SHELL) >= 15 and len(PYTHON) > 5


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.where)
def test_python_blocks_compile(block):
    compile(block.code, block.where, "exec")


@pytest.mark.parametrize("block", SHELL, ids=lambda b: b.where)
def test_evoforge_command_lines_use_real_commands_and_flags(block):
    problems = [p for argv in shell_commands(block.code) for p in check_command(argv)]
    assert not problems, f"{block.where}: {problems}"


def test_the_checker_catches_a_wrong_flag_and_a_wrong_command():
    assert check_command(["answer", "--seeds", "s.jsonl", "--concurency", "4"])
    assert check_command(["anwser", "--seeds", "s.jsonl"])
    assert check_command(["probe", "buidl"])
    assert not check_command(["probe", "build", "--task", "code", "--n", "4"])


@pytest.mark.parametrize(
    "block", [b for b in ALL if b.language in ("json", "yaml")], ids=lambda b: b.where
)
def test_json_and_yaml_blocks_parse(block):
    code = block.code.replace("…", "")
    if block.language == "yaml":
        yaml.safe_load(code)
        return
    if "..." in code or "…" in block.code:  # an abridged record, shown for its shape
        pytest.skip("abridged")
    try:
        json.loads(code)
    except json.JSONDecodeError:
        for line in code.splitlines():
            json.loads(line)


API_PAGE = DOCS / "python-api.md"
API_SNIPPETS = [b for b in blocks(API_PAGE) if b.language == "python"]


def test_the_python_api_page_shows_every_entry_point():
    code = "\n".join(b.code for b in API_SNIPPETS)
    for call in ("answer(", "evolve(", "rag(", "in2(", "dedup(", "select(", "export(",
                 ".to_dataset(", "datasets.Dataset"):  # fmt: skip
        assert call in code, f"the Python API page shows no {call}"


def test_python_api_page_snippets_run(fake_openai, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    # the template the custom-operator snippet loads is the one "Prompt templates" shows
    template = next(
        b
        for b in blocks(DOCS / "how-it-works.md")
        if b.language == "yaml" and "id: shout" in b.code
    )
    (tmp_path / "my_prompts").mkdir()
    (tmp_path / "my_prompts" / "shout.yaml").write_text(template.code, "utf-8")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for number, block in enumerate(API_SNIPPETS, start=1):
        if block.evaltools:
            continue
        first_line = block.code.strip().splitlines()[0]
        try:
            exec(compile(block.code, block.where, "exec"), {"__name__": "docs"})
        except Exception as exc:  # name the snippet, not only the line inside it
            pytest.fail(f"{block.where} Python snippet {number} ({first_line}) failed: {exc!r}")
    assert fake_openai.requests  # the snippets went through the server
    answers = read_jsonl(tmp_path / "out" / "answers.jsonl")
    assert answers and all(r["output"] for r in answers)
    exported = read_jsonl(tmp_path / "train" / "best.jsonl")
    assert exported and all(r["messages"][-1]["role"] == "assistant" for r in exported)
    assert (tmp_path / "train" / "README.md").read_text("utf-8").startswith("---\n")
    assert read_jsonl(tmp_path / "out" / "shout.jsonl")


def test_the_guarantees_name_tests_that_exist():
    import re

    text = (DOCS / "how-it-works.md").read_text("utf-8")
    sources = {p.stem: p.read_text("utf-8") for p in (ROOT / "tests").rglob("test_*.py")}
    named = re.findall(r"`(test_[a-z0-9_]+)::(test_[a-z0-9_]+)", text)
    assert len(named) > 20
    for module, test in named:
        assert f"def {test}(" in sources.get(module, ""), f"no test {module}::{test}"
    for test in re.findall(r"\| `(test_[a-z0-9_]+)", text):  # the Bad input table
        assert f"def {test}(" in sources["test_bad_input"], f"no test test_bad_input::{test}"
    for path in re.findall(r"`(tests/[\w/]+\.py)`", text):
        assert (ROOT / path).is_file(), path
