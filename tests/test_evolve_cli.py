"""`evoforge evolve` end to end through the CLI and the Python API."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions
from evoforge.api import EvolveOptions, evolve
from helpers import prompt_parts, rag_responder, read_jsonl, run_cli, write_jsonl


def rewrite_responder(request):
    """A model that evolves instructions: rewrites append a constraint, the judge says
    Not Equal, answers answer."""
    system = request.messages[0]["content"] if request.messages else ""
    user = request.last_user
    if "prompt rewriter" in system or "prompt creator" in system:
        original = user.split("#The Given Prompt#:")[-1].split("#Given Prompt#:")[-1].strip()
        return original.splitlines()[0] + " Answer in under 50 words."
    if "Equal" in user and "Not Equal" in user:
        return "Not Equal"
    return "Here is a complete and helpful answer with enough content words."


def test_evolve_instructions_cli(fake_openai, seeds_file, tmp_path):
    fake_openai.responder = rewrite_responder
    out = tmp_path / "evolved.jsonl"
    # Answers and every round's version are the defaults since issue 14.
    result = run_cli(
        "evolve", "--seeds", str(seeds_file(3)), "--out", str(out), "--rounds", "2",
        "--quiet", "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert len(records) == 3 * (2 + 1)  # seeds + two accepted rounds each
    final = [r for r in records if r["id"].endswith("/r2")]
    assert len(final) == 3
    assert all(
        r["instruction"].endswith("Answer in under 50 words. Answer in under 50 words.")
        for r in final
    )
    assert all(r["output"] for r in final)
    assert [step["op"].split("_")[0] for step in final[0]["lineage"]] == ["evolve", "answer"] * 2
    manifest = json.loads((tmp_path / "evolved.manifest.json").read_text())
    assert manifest["config"]["evolve"]["rounds"] == 2
    assert "evol_constraints" in manifest["config"]["evolve"]["prompts"]


def test_evolve_reports_rejections_with_round_and_op(fake_openai, seeds_file, tmp_path):
    fake_openai.responder = lambda r: "#Rewritten Prompt#: something new"
    summary = evolve(
        seeds_file(2), tmp_path / "o.jsonl",
        evolution=EvolveOptions(rounds=2),
        options=EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True),
    )  # fmt: skip
    assert summary.accepted == 2  # the seeds themselves: no round succeeded
    assert summary.rejected_by_reason == {"prompt_leak": 4}
    rejects = read_jsonl(tmp_path / "o.rejects.jsonl")
    assert "(round 1, op " in rejects[0]["detail"]


def test_rewrite_questions_with_an_exact_mix(fake_openai, tmp_path):
    def responder(request):
        instructions, _ = prompt_parts(request.messages)
        if "first_question" in instructions:  # a conversation, by parts
            parts = {"first_question": "Which river is it?", "assistant_reply": "The Nile.",
                     "follow_up": "How long is it?"}  # fmt: skip
            return json.dumps({**parts, "answer": "About 6,650 km."})
        return json.dumps(
            {"question": "How long is the river that flows north?", "answer": "6,650 km."}
        )

    fake_openai.responder = responder
    seeds = write_jsonl(
        tmp_path / "qa.jsonl",
        [
            {"question": f"How long is river {i}?", "answer": "6,650 km.",
             "contexts": ["The Nile flows north for about 6,650 km."]}
            for i in range(10)
        ],
    )  # fmt: skip
    out = tmp_path / "rewritten.jsonl"
    result = run_cli(
        "evolve", "--seeds", str(seeds), "--out", str(out), "--kind", "qa",
        "--mix", "reasoning=0.5,conditional=0.3,conversational=0.2", "--max-words", "reasoning=12",
        "--quiet", "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    ops = sorted(r["meta"]["rewrite"]["op"] for r in records)
    assert ops == ["conditional"] * 3 + ["conversational"] * 2 + ["reasoning"] * 5
    conversational = [r for r in records if r["meta"]["rewrite"]["op"] == "conversational"]
    assert conversational[0]["question"][-1]["role"] == "user"
    assert run_cli("validate", str(out), "--kind", "qa").returncode == 0


def demo_responder(request):
    """Evolution prompts as above; the RAG prompts through the scripted RAG player."""
    system = request.messages[0]["content"] if request.messages else ""
    if "prompt rewriter" in system or "prompt creator" in system or "compare two prompts" in system:
        return rewrite_responder(request)
    if "helpful, accurate assistant" in system:
        return rewrite_responder(request)
    return rag_responder(request.messages, request.n)


@pytest.mark.requires_local  # the demo's RAG step embeds with MiniLM
def test_demo_runs_end_to_end_against_any_model(fake_openai, tmp_path):
    fake_openai.responder = demo_responder
    result = run_cli(
        "demo", "--out", str(tmp_path / "demo"), "--quiet",
        "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "demo" / "answers.jsonl").exists()
    evolved = read_jsonl(tmp_path / "demo" / "evolved.jsonl")
    rejected = read_jsonl(tmp_path / "demo" / "evolved.rejects.jsonl")
    # 4 seeds, 2 rounds each: every round is either a record or an explained rejection.
    assert len(evolved) == 4 + 4 * 2 - len(rejected)
    # This fake model answers in English, so the Chinese seed's rounds drift.
    assert {r["reason"] for r in rejected} <= {"language_drift"}
    assert "constraints" in result.stdout or "deepen" in result.stdout or "breadth" in result.stdout
    samples = read_jsonl(tmp_path / "demo" / "eval.jsonl")
    assert len(samples) == 4
    assert "samples per document" in result.stdout
    assert read_jsonl(tmp_path / "demo" / "selected.jsonl")
    assert "select (LTD k-center)" in result.stdout
