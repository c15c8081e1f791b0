"""Checks ordered by cost (issue 19): model-free checks before model calls, judges that
share a call, and calls and tokens per accepted sample in the manifest and the report."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest

from evoforge import EngineOptions, RagOptions, rag, write_report
from evoforge.engine.client import LLMClient
from evoforge.engine.efficiency import efficiency_block
from evoforge.engine.runner import RecordContext, Rejection
from evoforge.generators.rag import RagSampleTask
from evoforge.records import Record
from evoforge.report.efficiency import efficiency_of
from evoforge.testing.scripted import ScriptedChatModel, rag_prompt
from evoforge.validators.critics import CriticPanel
from evoforge.validators.critics.merged import critics_for
from helpers import prompt_parts, rag_responder, read_jsonl, run_cli, write_jsonl

DOCS = Path(__file__).resolve().parent.parent / "examples" / "docs"
SMALL = {"embedder": "hashing", "chunk_size": 400, "chunk_overlap": 40}


def test_the_efficiency_block_is_per_accepted_sample_and_counts_cached_tokens():
    usage = {
        "rag_seed": {"calls": 12, "cache_hits": 5, "prompt_tokens": 3000, "completion_tokens": 240},
        "critic_merged": {"calls": 8, "prompt_tokens": 2000, "completion_tokens": 160,
                          "cached_tokens": 1280},
    }  # fmt: skip
    block = efficiency_block(usage, 4)
    assert block == {
        "accepted": 4, "calls": 20, "calls_per_accepted": 5.0,
        "prompt_tokens_per_accepted": 1250.0, "completion_tokens_per_accepted": 100.0,
        "cached_prompt_tokens": 1280, "cached_share": 0.256,
    }  # fmt: skip
    nothing = efficiency_block(usage, 0)
    assert nothing["calls_per_accepted"] is None and nothing["calls"] == 20
    assert efficiency_block({}, 0)["cached_share"] is None


@pytest.mark.parametrize("calls", ["merged", "separate"])
def test_a_sample_failing_a_model_free_screen_costs_no_model_call(calls):
    model = ScriptedChatModel(lambda _m, _n: pytest.fail("no model call expected"))
    record = Record(
        "rag",
        {"user_input": "What does the passage say about the Amazon river?",
         "reference": "It is long.", "reference_contexts": ["The Amazon is a long river."],
         "synthesizer_name": "reasoning"},
        id="r0", meta={"seed_question": "How long is the Amazon?"},
    )  # fmt: skip
    panel = CriticPanel(critics_for(calls), rewrite_once=False)  # no judge call, no rewrite
    got = asyncio.run(panel.review(record, RecordContext(LLMClient(model), 0, record.id)))
    assert isinstance(got, Rejection) and got.reason == "not_self_contained"
    assert model.call_count == 0


def _rag_run(folder: Path, calls: str, responder=rag_responder, **settings) -> dict:
    model = ScriptedChatModel(responder)
    out = folder / calls / "eval.jsonl"
    rag(
        [DOCS], out, rag=RagOptions(n=10, critic_calls=calls, **SMALL, **settings),
        options=EngineOptions(quiet=True, cache=False, seed=7), model=model,
    )  # fmt: skip
    manifest = json.loads(out.with_name("eval.manifest.json").read_text())
    return {"out": out, "manifest": manifest, "model": model}


def test_merged_judges_cut_calls_per_accepted_sample_by_a_quarter_for_the_same_set(tmp_path):
    merged = _rag_run(tmp_path, "merged")
    separate = _rag_run(tmp_path, "separate")
    assert merged["out"].read_bytes() == separate["out"].read_bytes()
    assert read_jsonl(merged["out"].with_name("eval.rejects.jsonl")) == read_jsonl(
        separate["out"].with_name("eval.rejects.jsonl")
    )
    new, old = merged["manifest"]["efficiency"], separate["manifest"]["efficiency"]
    assert new["accepted"] == old["accepted"] == 10
    assert new["calls_per_accepted"] <= 0.75 * old["calls_per_accepted"], (new, old)
    assert new["prompt_tokens_per_accepted"] < old["prompt_tokens_per_accepted"]


def test_the_benchmark_check_runs_before_the_critics(tmp_path, monkeypatch):
    texts = [doc.read_text(encoding="utf-8") for doc in sorted(DOCS.iterdir())]
    bench = write_jsonl(tmp_path / "bench.jsonl", [{"question": text} for text in texts])

    def quoting(messages, n):  # seed answers quote their passage: contaminated
        reply = rag_responder(messages, n)
        rag_parts = rag_prompt(messages)  # (task, contexts): context [1] is the passage
        if rag_parts and "You write questions for a test set" in rag_parts[0]:
            passage = rag_parts[1][0].split("\n\n")
            body = max(passage, key=len)
            if "Tides" in body or "volcano" in body:
                reply = json.dumps({**json.loads(reply), "answer": body[:300]})
        return reply

    def critic_calls(run: dict) -> int:
        return sum("critic" in op for op in run["manifest"]["usage"])

    new = _rag_run(tmp_path, "merged", quoting, decontaminate=[str(bench)])
    rejects = read_jsonl(new["out"].with_name("eval.rejects.jsonl"))
    early = [r for r in rejects if r["reason"] == "contaminated"]
    assert early and all(r["step"] == "check.contaminated" for r in early)
    judged = [c["messages"][-1]["content"] for c in new["model"].calls
              if "several criteria" in prompt_parts(c["messages"])[0]]  # fmt: skip
    for rejected in early:  # never shown to a judge
        question = rejected["record"]["user_input"]
        question = question if isinstance(question, str) else question[-1]["content"]
        assert not any(f"Question:\n{question}\n" in text for text in judged), question
    # The same run with the benchmark check only after the critics (the order before
    # issue 19): the same records kept and rejected, more critic calls.
    monkeypatch.setattr(RagSampleTask, "before_critics", property(lambda _: (), lambda *_: None))
    old = _rag_run(tmp_path / "old", "merged", quoting, decontaminate=[str(bench)])
    assert old["out"].read_bytes() == new["out"].read_bytes()
    old_rejects = read_jsonl(old["out"].with_name("eval.rejects.jsonl"))
    assert [(r["id"], r["reason"]) for r in old_rejects] == [
        (r["id"], r["reason"]) for r in rejects
    ]
    used, before = new["manifest"]["usage"], old["manifest"]["usage"]
    assert critic_calls(new) and used["critic_merged"]["calls"] < before["critic_merged"]["calls"]


def test_the_report_shows_calls_and_tokens_per_accepted_sample(tmp_path):
    run = _rag_run(tmp_path, "merged")
    folder = run["out"].parent
    paths = write_report(folder)
    block = run["manifest"]["efficiency"]
    page = paths["html"].read_text()
    assert "Calls and tokens per accepted sample" in page
    assert f"<td>{block['calls']}</td>" in page.replace("\n", "").replace(" ", "")
    summary = paths["summary"].read_text()
    assert "## per accepted sample" in summary
    assert f"{block['calls']} calls for {block['accepted']} accepted" in summary
    # A manifest written before the block: the report computes it from usage and counts.
    older = {k: v for k, v in run["manifest"].items() if k != "efficiency"}
    assert efficiency_of(older) == block


@pytest.mark.parametrize(
    ("llm", "judges"),
    [
        ("local", {"critic_grounded", "critic_answerable", "critic_information_gain"}),
        ("openai:gpt-4o-mini", {"critic_merged"}),
    ],
)
def test_a_dry_run_plans_the_judges_auto_chooses_for_the_model(tmp_path, llm, judges):
    result = run_cli(
        "rag", "--docs", str(DOCS), "--n", "4", "--embedder", "hashing", "--chunk-size", "400",
        "--out", str(tmp_path / "eval.jsonl"), "--llm", llm, "--dry-run",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    ops = {line.split()[0] for line in result.stdout.splitlines() if line.startswith("critic_")}
    assert ops == judges, result.stdout
