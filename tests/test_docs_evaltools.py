"""The docs' Ragas and DeepEval blocks (marked ``<!-- evaltools -->``) run as written,
on real exports. ragas and deepeval pin older openai / langchain releases than
evoforge runs on, so `make test-exports` runs this file in .venv-evaltools; in the
main venv it skips."""

from __future__ import annotations

import os

import pytest
from docs_snippets import blocks, pages

MARKED = [b for page in pages() for b in blocks(page) if b.evaltools]
RAG = {
    "id": "r1",
    "kind": "rag",
    "user_input": "By which year did Venice have a printing press?",
    "reference": "By 1469.",
    "reference_contexts": ["Venice had its first printing press by 1469."],
}


def test_the_ragas_and_deepeval_blocks_are_marked():
    code = "\n".join(b.code for b in MARKED)
    assert "from ragas" in code and "from deepeval" in code


@pytest.mark.parametrize("block", MARKED, ids=lambda b: b.where)
def test_evaltools_blocks_run_on_real_exports(block, tmp_path, monkeypatch):
    monkeypatch.setenv("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    os.environ.setdefault("DEEPEVAL_TELEMETRY_OPT_OUT", "YES")
    for module in ("ragas", "deepeval"):
        if f"from {module}" in block.code or f"import {module}" in block.code:
            pytest.importorskip(
                module,
                reason=f"{module} is not installed here; `make test` runs this in .venv-evaltools",
            )
    import evoforge

    monkeypatch.chdir(tmp_path)
    evoforge.export([RAG], to="ragas", out="eval/ragas.jsonl")
    evoforge.export([RAG], to="deepeval", out="goldens/goldens.json")
    (tmp_path / "eval" / "goldens.json").write_bytes(
        (tmp_path / "goldens" / "goldens.json").read_bytes()
    )
    exec(compile(block.code, block.where, "exec"), {"__name__": "docs"})
