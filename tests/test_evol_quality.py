"""Evol-Quality (DEITA, Liu et al., 2024): answer rewrites, their rules, and the chain
Evol-Instruct -> Evol-Quality."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from evoforge import Record
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection
from evoforge.evolvers.base import Chain, EvolutionRounds
from evoforge.evolvers.evol_instruct import EvolInstruct
from evoforge.evolvers.evol_quality import QUALITY_OPS, EvolQuality
from evoforge.testing.scripted import ScriptedChatModel

OLD = "Plants turn light, water and carbon dioxide into sugar and oxygen."
ANSWERED = Record(
    "instruction", {"instruction": "Explain how photosynthesis works.", "output": OLD}, id="a1"
)
BETTER = (
    "Plants turn light, water and carbon dioxide into sugar and oxygen: chlorophyll captures "
    "light in the thylakoids, and the Calvin cycle fixes carbon in the stroma."
)


def role(messages) -> str:
    system = messages[0]["content"]
    for marker, kind in (
        ("response rewriter", "quality"),
        ("prompt rewriter", "rewrite"),
        ("prompt creator", "rewrite"),
        ("careful judge", "judge"),
        ("helpful, accurate assistant", "answer"),
    ):
        if marker in system:
            return kind
    raise AssertionError(f"unexpected prompt: {system[:80]!r}")


def given_response(messages) -> str:
    return messages[-1]["content"].rsplit("#Given Response#:\n", 1)[1]


def evolve(evolver, record, model, *, seed=0, round_=1):
    async def go():
        ctx = RecordContext(LLMClient(model), seed, record.id)
        return await evolver.evolve(record, ctx, round_)

    return asyncio.run(go())


def test_a_rewrite_changes_the_output_and_keeps_the_instruction():
    model = ScriptedChatModel(BETTER)
    evolved = evolve(EvolQuality(), ANSWERED, model)
    assert isinstance(evolved, Record)
    assert evolved.id == "a1/q1" and evolved.parent_id == "a1"
    assert evolved["instruction"] == ANSWERED["instruction"] and evolved["output"] == BETTER
    op = evolved.meta["evol_quality"]["op"]
    assert op in QUALITY_OPS and evolved.meta["evol_quality"]["round"] == 1
    assert evolved.lineage[-1]["op"] == f"quality_{op}"
    assert evolved.lineage[-1]["prompt_id"] == f"evol_quality_{op}@v1"
    [call] = model.calls
    assert role(call["messages"]) == "quality" and given_response(call["messages"]) == OLD
    assert ANSWERED["instruction"] in call["messages"][-1]["content"]


@pytest.mark.parametrize("output", [None, "", "  \n"])
def test_a_record_without_an_answer_is_rejected_without_a_call(output):
    fields = {"instruction": "Explain how photosynthesis works."}
    if output is not None:
        fields["output"] = output
    model = ScriptedChatModel(BETTER)
    outcome = evolve(EvolQuality(), Record("instruction", fields, id="a2"), model)
    assert isinstance(outcome, Rejection) and outcome.reason == "no_answer"
    assert outcome.record["id"] == "a2" and model.call_count == 0


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (f"#Rewritten Response#: {BETTER}", "prompt_leak"),
        (f"Here is the rewritten response: {BETTER}", "prompt_leak"),
        ("Sorry, I cannot improve this answer.", "refusal"),
        ("The, and... it is!", "empty_answer"),
        (f"  {OLD.upper()}  ", "no_information_gain"),
        ("植物利用光能把水和二氧化碳转化为糖和氧气，这个过程发生在叶绿体中。", "language_drift"),
        (BETTER, None),
    ],
)
def test_the_elimination_rules_apply_to_the_new_response(reply, reason):
    outcome = evolve(EvolQuality(), ANSWERED, ScriptedChatModel(reply))
    if reason is None:
        assert isinstance(outcome, Record) and outcome["output"] == BETTER
    else:
        assert isinstance(outcome, Rejection) and outcome.reason == reason
        assert outcome.id == "a1/q1" and "(round 1, op " in outcome.detail
        assert outcome.record["instruction"] == ANSWERED["instruction"]


def test_the_optional_judge_keeps_a_not_equal_response_with_its_reply():
    def reply(messages, n):
        return "Not Equal" if role(messages) == "judge" else BETTER

    outcome = evolve(EvolQuality(judge=True), ANSWERED, ScriptedChatModel(reply))
    assert isinstance(outcome, Record) and outcome["output"] == BETTER
    assert outcome.meta["evol_quality"]["judge"] == "Not Equal"  # kept for the report
    assert "judge" not in outcome.meta


def test_the_optional_judge_drops_an_equal_response():
    def reply(messages, n):
        return "Equal" if role(messages) == "judge" else BETTER

    model = ScriptedChatModel(reply)
    outcome = evolve(EvolQuality(judge=True), ANSWERED, model)
    assert isinstance(outcome, Rejection) and outcome.reason == "no_information_gain"
    assert [role(c["messages"]) for c in model.calls] == ["quality", "judge"]


def test_quality_ops_are_uniform_and_independent_of_the_instruct_ops():
    """Both evolvers see the same record and round; their op draws must not be tied."""

    def reply(messages, n):
        if role(messages) == "quality":
            return f"{given_response(messages)} More ({n})."
        return f"{messages[-1]['content'].rsplit('Prompt#:', 1)[1].strip()} More ({n})."

    async def go():
        client = LLMClient(ScriptedChatModel(reply, record=False))
        pairs = []
        for i in range(1000):
            record = Record(
                "instruction", {"instruction": f"Describe topic {i}.", "output": OLD}, id=f"t{i}"
            )
            ctx = RecordContext(client, 5, record.id)
            instruct = await EvolInstruct(judge=False).evolve(record, ctx, 1)
            quality = await EvolQuality().evolve(record, ctx, 1)
            pairs.append((instruct.meta["evol"]["op"], quality.meta["evol_quality"]["op"]))
        return pairs

    pairs = asyncio.run(go())
    counts = Counter(q for _, q in pairs)
    expected = len(pairs) / len(QUALITY_OPS)
    assert sum((counts[op] - expected) ** 2 / expected for op in QUALITY_OPS) < 18.47  # 4 dof
    # One shared stream would tie each instruct op to one or two quality ops (~10 pairs).
    assert len(set(pairs)) == 6 * 5


def test_a_chain_of_evol_instruct_then_evol_quality_shows_both_stages():
    def reply(messages, n):
        kind = role(messages)
        if kind == "rewrite":
            shown = messages[-1]["content"].rsplit("Prompt#:\n", 1)[1]
            return f"{shown} Use one worked example ({n})."
        if kind == "judge":
            return "Not Equal"
        if kind == "answer":
            return f"Answer {n}: chlorophyll absorbs light and the Calvin cycle fixes carbon."
        return f"{given_response(messages)} Both stages need light indirectly ({n})."

    chain = Chain(
        [
            EvolutionRounds(EvolInstruct(answers=True), 2),
            EvolutionRounds(EvolQuality(), 1),
        ]
    )
    seed = Record("instruction", {"instruction": "Explain how photosynthesis works."}, id="s1")

    async def go():
        return await chain(seed, RecordContext(LLMClient(ScriptedChatModel(reply)), 0, seed.id))

    result = asyncio.run(go())
    assert result.rejections == []
    [record] = result.records
    assert record.id == "s1/r1/r2/q1" and record.parent_id == "s1/r1/r2"
    ops = [step["op"] for step in record.lineage]
    assert [op.split("_")[0] for op in ops] == ["evolve", "answer", "evolve", "answer", "quality"]
    assert [step["round"] for step in record.lineage] == [1, 1, 2, 2, 1]
    assert record.meta["evol"]["round"] == 2 and "evol_quality" in record.meta
    assert record["instruction"].startswith("Explain how photosynthesis works.")
    assert record["output"].endswith("Both stages need light indirectly (7).")
