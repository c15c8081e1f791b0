"""`evoforge select` end to end: LLM scores through the engine, then selection."""

from __future__ import annotations

import json

from helpers import read_jsonl, run_cli, write_jsonl

TOPICS = ["tides", "volcanoes", "bees", "printing", "glaciers", "comets"]


def records(n=24):
    return [
        {"id": f"r{i:02d}", "kind": "instruction",
         "instruction": f"Explain {TOPICS[i % 6]} in detail, case {i}.",
         "output": f"A long answer about {TOPICS[i % 6]} with reasons and examples {i}."}
        for i in range(n)
    ]  # fmt: skip


def judge(request):
    user = request.last_user
    number = int(user.split("case ")[1].split(".")[0]) if "case " in user else 0
    system = request.messages[0]["content"] if request.messages else ""
    if "##Complexity" in system or "##Complexity" in user:
        return f"##Complexity: {1 + number % 6}"
    if "##Quality" in system or "##Quality" in user:
        return "##Quality: 5"
    return f"{4.0 + (number % 3) * 0.5}\n\nAccurate enough."


def test_deita_selects_the_budget_by_score_with_reasons(fake_openai, tmp_path):
    fake_openai.responder = judge
    source = write_jsonl(tmp_path / "in.jsonl", records())
    out = tmp_path / "best.jsonl"
    result = run_cli("select", str(source), "--out", str(out), "--method", "deita", "--budget", "6",
                     "--embedder", "hashing", "--quiet", "--json",
                     "--llm", f"openai:fake-model@{fake_openai.base_url}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    selected = read_jsonl(out)
    assert report["selected"] == len(selected) == 6
    rejects = read_jsonl(tmp_path / "best.rejects.jsonl")
    assert len(rejects) == 24 - 6
    assert {r["reason"] for r in rejects} <= {"too_similar", "over_budget"}
    # Score-first walk: whatever was left over the budget scores no higher than the selection.
    floor = min(r["meta"]["deita"]["score"] for r in selected)
    over = [r["record"]["meta"]["deita"]["score"] for r in rejects if r["reason"] == "over_budget"]
    assert all(score <= floor for score in over)
    hits = fake_openai.hits
    llm = f"openai:fake-model@{fake_openai.base_url}"
    run_cli("select", str(source), "--out", str(out), "--method", "deita", "--budget", "6",
            "--embedder", "hashing", "--quiet", "--llm", llm)  # fmt: skip
    assert fake_openai.hits == hits  # scores come from the journal and the cache


def test_alpagasus_keeps_ratings_at_or_above_the_threshold(fake_openai, tmp_path):
    fake_openai.responder = judge
    source = write_jsonl(tmp_path / "in.jsonl", records(12))
    out = tmp_path / "kept.jsonl"
    result = run_cli("select", str(source), "--out", str(out), "--method", "alpagasus",
                     "--quiet", "--llm", f"openai:fake-model@{fake_openai.base_url}")  # fmt: skip
    assert result.returncode == 0, result.stderr
    kept = read_jsonl(out)
    assert kept and all(r["meta"]["alpagasus"]["score"] >= 4.5 for r in kept)
    assert {r["reason"] for r in read_jsonl(tmp_path / "kept.rejects.jsonl")} == {"low_score"}


def test_kcenter_and_random_need_no_model(tmp_path):
    source = write_jsonl(tmp_path / "in.jsonl", records())
    for method in ("kcenter", "random"):
        out = tmp_path / f"{method}.jsonl"
        result = run_cli("select", str(source), "--out", str(out), "--method", method,
                         "--budget", "5", "--embedder", "hashing")  # fmt: skip
        assert result.returncode == 0, result.stderr
        assert len(read_jsonl(out)) == 5
