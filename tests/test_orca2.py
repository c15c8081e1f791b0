"""``evoforge orca2``: Orca 2 prompt erasure (Mitra et al., 2023), issue 16."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions, Orca2Options, orca2
from evoforge.generators.orca2 import (
    STRATEGIES,
    shared_run,
    strategy_template,
    teacher_prompt_text,
    word_runs,
)
from evoforge.records import schema_error
from evoforge.registry import lookup
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl, run_cli, write_jsonl

CLASSIFIER_MARK = "You route requests"
LEAKERS = {"s07", "s23", "s41"}


def _seeds(n: int) -> list[dict]:
    return [{"id": f"s{i:02d}", "instruction": f"Question number {i}: what is {i} times 3?"}
            for i in range(n)]  # fmt: skip


def _strategy_for(text: str) -> str:
    number = int(text.split("Question number ")[1].split(":")[0])
    return STRATEGIES[number % len(STRATEGIES)]


def _model() -> ScriptedChatModel:
    """Classifier: a strategy fixed by the seed's number. Teacher: a plain answer, except
    for LEAKERS, where it echoes the whole strategy prompt it was given."""

    def reply(messages, n):
        system = messages[0]["content"] if messages[0]["role"] == "system" else ""
        user = messages[-1]["content"]
        if system.startswith(CLASSIFIER_MARK):
            return json.dumps({"strategy": _strategy_for(user), "reason": "by number"})
        number = int(user.split("Question number ")[1].split(":")[0])
        if f"s{number:02d}" in LEAKERS:
            return f"Following my instructions: {system}\nSo the result is {number * 3}."
        return f"Three times {number} is {number * 3}, since {number} + {number} + {number}."

    return ScriptedChatModel(reply)


def test_orca2_keeps_45_of_50_and_rejects_exactly_the_echoes_as_strategy_leak(tmp_path):
    model = _model()
    out = tmp_path / "orca2.jsonl"
    summary = orca2(_seeds(50), out, options=EngineOptions(quiet=True), model=model)
    records = read_jsonl(out)
    assert summary.accepted == len(records) >= 45
    rejects = read_jsonl(tmp_path / "orca2.rejects.jsonl")
    assert {r["id"] for r in rejects if r["reason"] == "strategy_leak"} == LEAKERS
    assert len(rejects) == 3 and summary.rejected_by_reason == {"strategy_leak": 3}
    assert all(r["step"] == "check.strategy_leak" for r in rejects)
    assert all(r["field"] == "$.messages[2].content" for r in rejects)

    # The teacher's request (the one that is not the classifier's) per seed.
    teacher = {}
    for call in model.calls:
        if not call["messages"][0]["content"].startswith(CLASSIFIER_MARK):
            teacher[call["messages"][-1]["content"]] = call["messages"]
    for record in records:
        assert schema_error(record, "chat") is None
        system, user, assistant = record["messages"]
        info = record["meta"]["orca2"]
        # The strategy is the classifier's reply, and the teacher was asked under its prompt.
        assert info["strategy"] == _strategy_for(user["content"])
        assert info["source"] == "classifier" and info["reason"] == "by number"
        template = strategy_template(info["strategy"])
        assert info["prompt_id"] == template.ref["prompt_id"]
        assert info["prompt_hash"] == template.content_hash
        sent = teacher[user["content"]]
        assert sent[0] == {"role": "system", "content": teacher_prompt_text(template)}
        # Erasure: the record's system turn is the generic one, no strategy text anywhere.
        assert system == {"role": "system", "content": Orca2Options().student_system}
        runs = word_runs(teacher_prompt_text(template))
        assert all(shared_run(turn["content"], runs) is None for turn in record["messages"])
        assert assistant["content"].startswith("Three times")
    assert {r["meta"]["orca2"]["strategy"] for r in records} == set(STRATEGIES)


def test_strategy_map_assigns_by_task_and_the_classifier_covers_the_rest(tmp_path):
    model = _model()
    seeds = _seeds(6)
    for seed in seeds[:4]:
        seed["task"] = "arithmetic"
    out = tmp_path / "o.jsonl"
    orca = Orca2Options(strategy_map="arithmetic=step_by_step", student_system="Be careful.")
    summary = orca2(seeds, out, orca=orca, options=EngineOptions(quiet=True), model=model)
    assert summary.accepted == 6
    records = {r["id"]: r for r in read_jsonl(out)}
    for seed in seeds[:4]:
        info = records[seed["id"]]["meta"]["orca2"]
        assert (info["strategy"], info["source"], info["task"]) == (
            "step_by_step", "map", "arithmetic"
        )  # fmt: skip
    for seed in seeds[4:]:
        assert records[seed["id"]]["meta"]["orca2"]["source"] == "classifier"
    assert all(r["messages"][0]["content"] == "Be careful." for r in records.values())
    classified = [c for c in model.calls if c["messages"][0]["content"].startswith(CLASSIFIER_MARK)]
    assert len(classified) == 2
    assert summary.usage["orca2_classify"]["calls"] == 2


def test_strategy_leak_is_a_registered_check_on_chat_records(tmp_path):
    template = strategy_template("direct_answer")
    words = teacher_prompt_text(template).split()
    record = {
        "id": "c1", "kind": "chat", "lineage": [], "parent_id": None,
        "messages": [
            {"role": "system", "content": "Be helpful."},
            {"role": "user", "content": "Say hi. " + " ".join(words[3:12])},
            {"role": "assistant", "content": "Hi."},
        ],
        "meta": {"orca2": {"strategy": "direct_answer"}},
    }  # fmt: skip
    rejection = lookup("check", "strategy_leak").rejection(record)
    assert rejection is not None and rejection.reason == "strategy_leak"
    assert rejection.field == "$.messages[1].content"
    # Seven shared words are not a run of eight.
    record["messages"][1]["content"] = "Say hi. " + " ".join(words[3:10])
    assert lookup("check", "strategy_leak").rejection(record) is None


def test_chat_records_validate_export_and_report(tmp_path):
    out = tmp_path / "run" / "orca2.jsonl"
    orca2(_seeds(8), out, options=EngineOptions(quiet=True), model=_model())
    result = run_cli("validate", str(out), "--checks", "schema,strategy_leak,empty",
                     "--out", str(tmp_path / "ok.jsonl"), "--quiet")  # fmt: skip
    assert result.returncode == 0, result.stdout + result.stderr
    for to, key in (("messages", "messages"), ("sharegpt", "conversations")):
        target = tmp_path / f"{to}.jsonl"
        result = run_cli("export", str(out), "--to", to, "--out", str(target), "--no-card")
        assert result.returncode == 0, result.stderr
        rows = read_jsonl(target)
        assert len(rows) == 7 and len(rows[0][key]) == 3
    assert read_jsonl(tmp_path / "messages.jsonl")[0]["messages"][0]["role"] == "system"
    assert read_jsonl(tmp_path / "sharegpt.jsonl")[0]["conversations"][2]["from"] == "gpt"
    result = run_cli("report", str(out))
    assert result.returncode == 0, result.stderr
    summary = (out.parent / "summary.md").read_text("utf-8")
    assert "by strategy: " in summary
    # s07 is the one leaker among 8 seeds: 7 % 5 -> recall_reason_generate
    assert "recall_reason_generate kept 1, rejected 1 (strategy_leak 1)" in summary
    assert "step_by_step kept 2, rejected 0" in summary


@pytest.mark.parametrize(
    ("rows", "flags", "message"),
    [
        ([{"id": "a", "instruction": "Hi"}, {"id": "b", "input": "x"}], [],
         'line 2: field "instruction" is missing'),
        ([{"id": "a", "instruction": "Hi"}], ["--strategy-map", "math=step_by_steps"],
         "unknown strategy 'step_by_steps'"),
    ],
)  # fmt: skip
def test_bad_input_is_one_line_and_exit_2(tmp_path, rows, flags, message):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", rows)
    result = run_cli("orca2", "--seeds", str(seeds), "--out", str(tmp_path / "o.jsonl"),
                     "--llm", "openai:m@http://127.0.0.1:9", *flags)  # fmt: skip
    assert result.returncode == 2, result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and message in lines[0], result.stderr
    assert not (tmp_path / "o.jsonl").exists()


def test_a_recipe_runs_orca2(tmp_path):
    from evoforge import run_recipe

    write_jsonl(tmp_path / "seeds.jsonl", _seeds(5))
    recipe = tmp_path / "r.yaml"
    recipe.write_text(
        "generator:\n  type: orca2\n  strategy_map: '*=direct_answer'\n"
        "source:\n  seeds: seeds.jsonl\noutputs:\n  report: false\n  export: [sharegpt]\n",
        encoding="utf-8",
    )
    result = run_recipe(recipe, model=_model())
    records = read_jsonl(tmp_path / "r-out" / "orca2.jsonl")
    assert len(records) == 5
    assert {r["meta"]["orca2"]["strategy"] for r in records} == {"direct_answer"}
    assert result is not None


def test_dedup_compares_chat_records_by_their_messages(tmp_path):
    from evoforge import dedup

    seeds = _seeds(3)
    seeds.append({**seeds[0], "id": "again"})  # the same instruction, so the same messages
    out = tmp_path / "o.jsonl"
    orca2(seeds, out, options=EngineOptions(quiet=True), model=_model())
    result = dedup(out, tmp_path / "d.jsonl", method="exact")
    kept = [r["id"] for r in read_jsonl(tmp_path / "d.jsonl")]
    assert len(kept) == 3 and {"s01", "s02"} <= set(kept)
    assert len({"s00", "again"} & set(kept)) == 1
    assert [d["reason"] for d in result.dropped] == ["duplicate"]
