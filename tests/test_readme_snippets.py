"""The README's Python API snippets run as written, against a local OpenAI-compatible server.

Each ```python block of the "## Python API" section runs in order in one working
folder (later snippets read what earlier ones wrote, as a reader following the
README would), with ``OPENAI_BASE_URL`` pointing at the fake server. The prompt
template the custom-operator snippet loads is the one "## Prompt templates" shows.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from helpers import read_jsonl

ROOT = Path(__file__).resolve().parents[1]


def section(text: str, title: str) -> str:
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start : end if end != -1 else len(text)]


def fenced(text: str, language: str) -> list[str]:
    return re.findall(rf"^```{language}\n(.*?)^```", text, re.S | re.M)


README = (ROOT / "README.md").read_text("utf-8")
SNIPPETS = fenced(section(README, "Python API"), "python")


def test_the_python_api_section_shows_every_entry_point():
    code = "\n".join(SNIPPETS)
    for call in ("answer(", "evolve(", "rag(", "in2(", "dedup(", "select(", "export(",
                 ".to_dataset(", "datasets.Dataset"):  # fmt: skip
        assert call in code, f"the Python API section shows no {call}"


def test_readme_python_snippets_run(fake_openai, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "examples").symlink_to(ROOT / "examples")
    template = fenced(section(README, "Prompt templates"), "yaml")[0]
    (tmp_path / "my_prompts").mkdir()
    (tmp_path / "my_prompts" / "shout.yaml").write_text(template, "utf-8")
    monkeypatch.setenv("OPENAI_BASE_URL", fake_openai.base_url)
    monkeypatch.setenv("OPENAI_API_KEY", "sk-test")
    for number, code in enumerate(SNIPPETS, start=1):
        first_line = code.strip().splitlines()[0]
        try:
            exec(
                compile(code, f"README.md python snippet {number}", "exec"), {"__name__": "readme"}
            )
        except Exception as exc:  # name the snippet, not only the line inside it
            pytest.fail(f"README Python API snippet {number} ({first_line}) failed: {exc!r}")
    assert fake_openai.requests  # the snippets went through the server
    answers = read_jsonl(tmp_path / "out" / "answers.jsonl")
    assert answers and all(r["output"] for r in answers)
    exported = read_jsonl(tmp_path / "train" / "best.jsonl")
    assert exported and all(r["messages"][-1]["role"] == "assistant" for r in exported)
    assert (tmp_path / "train" / "README.md").read_text("utf-8").startswith("---\n")
    assert read_jsonl(tmp_path / "out" / "shout.jsonl")
