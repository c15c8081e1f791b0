"""Evol-Instruct (Xu et al., 2023): elimination rules, the rounds loop, op choice, counts."""

from __future__ import annotations

import asyncio
from collections import Counter

import pytest

from evoforge import ConfigError, Record, RequestRejected, builtin_template
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection, Run
from evoforge.evolvers.base import EvolutionRounds
from evoforge.evolvers.evol_instruct import IN_BREADTH_OPS, OPS, EvolInstruct
from evoforge.testing.scripted import ScriptedChatModel
from evoforge.validators.heuristics import word_count
from helpers import read_jsonl

SEED = Record("instruction", {"instruction": "Explain how photosynthesis works."}, id="s1")
ANSWER = "Plants capture light with chlorophyll and turn water and carbon dioxide into sugar."


def role(messages) -> str:
    """Which prompt the model got, told by the system message of each template."""
    system = messages[0]["content"]
    if "prompt rewriter" in system or "prompt creator" in system:
        return "rewrite"
    if "careful judge" in system:
        return "judge"
    if "helpful, accurate assistant" in system:
        return "answer"
    raise AssertionError(f"unexpected prompt: {system[:80]!r}")


def given_prompt(messages) -> str:
    """The instruction a rewrite prompt shows the model."""
    shown = messages[-1]["content"].rsplit("Given Prompt#:\n", 1)[1]
    return shown.split("\n\nInput:\n", 1)[0]


def scripted(*, rewrite, judge="Not Equal", answer=ANSWER) -> ScriptedChatModel:
    """A model whose reply to each kind of prompt is a string or ``fn(messages, n)``."""

    def reply(messages, n):
        value = {"rewrite": rewrite, "judge": judge, "answer": answer}[role(messages)]
        return value(messages, n) if callable(value) else value

    return ScriptedChatModel(reply)


def calls_of(model: ScriptedChatModel, kind: str) -> list[list[dict]]:
    return [c["messages"] for c in model.calls if role(c["messages"]) == kind]


def evolve(evolver, record, model, *, seed=0, round_=1):
    async def go():
        ctx = RecordContext(LLMClient(model), seed, record.id)
        return await evolver.evolve(record, ctx, round_)

    return asyncio.run(go())


def deeper(messages, n):
    return f"{given_prompt(messages)} Compare C3 and C4 plants (rewrite {n})."


# -- the elimination rules --------------------------------------------------------------


def test_a_short_sorry_answer_is_dropped_and_a_100_word_one_kept():
    short = "Sorry, I cannot help with that request."
    rejected = evolve(EvolInstruct(answers=True), SEED, scripted(rewrite=deeper, answer=short))
    assert isinstance(rejected, Rejection)
    assert rejected.reason == "refusal" and rejected.id == "s1/r1"
    assert "(round 1, op " in rejected.detail
    assert rejected.record["output"] == short and rejected.record["parent_id"] == "s1"

    long = "Sorry for the length. " + " ".join(["Chlorophyll absorbs light energy."] * 24)
    assert word_count(long) == 100
    kept = evolve(EvolInstruct(answers=True), SEED, scripted(rewrite=deeper, answer=long))
    assert isinstance(kept, Record) and kept["output"] == long
    assert [step["op"] for step in kept.lineage][1:] == ["answer"]


def test_an_answer_of_stop_words_and_punctuation_is_dropped():
    model = scripted(rewrite=deeper, answer="The, and... is it? It is!")
    rejected = evolve(EvolInstruct(answers=True), SEED, model)
    assert isinstance(rejected, Rejection) and rejected.reason == "empty_answer"


def test_an_empty_rewrite_is_dropped_before_any_other_call():
    model = scripted(rewrite="  \n ")
    rejected = evolve(EvolInstruct(answers=True), SEED, model)
    assert isinstance(rejected, Rejection) and rejected.reason == "empty_instruction"
    assert model.call_count == 1


@pytest.mark.parametrize(
    ("rewrite", "reason"),
    [
        ("#Rewritten Prompt#: Explain how photosynthesis works in C4 plants.", "prompt_leak"),
        ("Rewrite the given prompt: explain photosynthesis in C4 plants.", "prompt_leak"),
        ("Explain how photosynthesis works in C4 plants, step by step.", None),
    ],
)
def test_a_leaked_label_is_dropped(rewrite, reason):
    model = scripted(rewrite=rewrite)
    outcome = evolve(EvolInstruct(), SEED, model)
    if reason is None:
        assert isinstance(outcome, Record) and outcome["instruction"] == rewrite
    else:
        assert isinstance(outcome, Rejection) and outcome.reason == reason
        assert outcome.record["instruction"] == rewrite
        assert calls_of(model, "judge") == []  # dropped before the judge is paid for


@pytest.mark.parametrize(
    ("verdict", "dropped"),
    [("Equal", True), ("Equal.", True), ("Not Equal", False), ("not equal.", False)],
)
def test_the_judge_drops_equal_and_keeps_not_equal(verdict, dropped):
    new = "Explain how photosynthesis works, and compare C3 with C4 plants."
    model = scripted(rewrite=new, judge=verdict)
    outcome = evolve(EvolInstruct(), SEED, model)
    [judged] = calls_of(model, "judge")
    assert SEED["instruction"] in judged[-1]["content"] and new in judged[-1]["content"]
    if dropped:
        assert isinstance(outcome, Rejection) and outcome.reason == "no_information_gain"
    else:
        assert isinstance(outcome, Record) and outcome["instruction"] == new
        assert "judge" not in outcome.meta
        assert outcome.meta["evol"]["judge"] == verdict  # its reply, kept for the report


def test_an_unparseable_verdict_counts_as_not_equal_and_is_noted():
    outcome = evolve(EvolInstruct(), SEED, scripted(rewrite=deeper, judge="Hard to say."))
    assert isinstance(outcome, Record)
    assert outcome.meta["judge"] == "unparsed: Hard to say."
    assert outcome.meta["evol"]["judge"] == "Hard to say."


def test_a_copy_of_the_original_is_no_gain_without_asking_the_judge():
    model = scripted(rewrite='"  explain how PHOTOSYNTHESIS   works. "')
    outcome = evolve(EvolInstruct(), SEED, model)
    assert isinstance(outcome, Rejection) and outcome.reason == "no_information_gain"
    assert model.call_count == 1


# -- the rounds loop --------------------------------------------------------------------


def test_a_failed_round_keeps_the_previous_text_for_the_next_round():
    judged = []

    def judge(messages, n):
        judged.append(n)
        return "Equal" if len(judged) == 1 else "Not Equal"

    model = scripted(rewrite=deeper, judge=judge)

    async def go():
        ctx = RecordContext(LLMClient(model), 0, SEED.id)
        return await EvolutionRounds(EvolInstruct(), rounds=2)(SEED, ctx)

    result = asyncio.run(go())
    [rejection] = result.rejections
    assert rejection.reason == "no_information_gain" and rejection.id == "s1/r1"
    first, second = calls_of(model, "rewrite")
    assert given_prompt(first) == given_prompt(second) == SEED["instruction"]
    assert rejection.record["instruction"] not in second[-1]["content"]
    [final] = result.records
    assert final.id == "s1/r2" and final.parent_id == "s1"
    assert [step["round"] for step in final.lineage] == [2]
    assert final.meta["evol"]["round"] == 2


def test_a_rejected_request_costs_one_round_not_the_seed():
    def rewrite(messages, n):
        if n == 2:
            raise RequestRejected("http_400", "bad request")
        return deeper(messages, n)

    async def go():
        ctx = RecordContext(LLMClient(scripted(rewrite=rewrite)), 0, SEED.id)
        evolver = EvolInstruct(judge=False)
        return await EvolutionRounds(evolver, rounds=3, keep_all_rounds=True)(SEED, ctx)

    result = asyncio.run(go())
    assert [r.id for r in result.records] == ["s1", "s1/r1", "s1/r1/r3"]
    assert [(r.id, r.reason) for r in result.rejections] == [("s1/r1/r2", "http_400")]


def test_an_evolution_drops_the_stale_output_and_breadth_drops_the_input():
    seed = Record(
        "instruction",
        {"instruction": "Sort the list.", "input": "[3, 1, 2]", "output": "[1, 2, 3]"},
        id="s2",
    )
    new = "Sort the list in descending order without using the built-in sort."
    deep = evolve(
        EvolInstruct(weights={"constraints": 1}, judge=False), seed, scripted(rewrite=new)
    )
    assert deep.fields == {"instruction": new, "input": "[3, 1, 2]"}
    assert deep.lineage[-1]["op"] == "evolve_constraints"
    assert deep.lineage[-1]["prompt_id"] == "evol_constraints@v1"
    assert deep.meta["evol"] == {"op": "constraints", "round": 1, "depth": "in-depth"}

    model = scripted(
        rewrite="Merge two sorted linked lists given as JSON arrays [1, 4] and [2, 3]."
    )
    wide = evolve(EvolInstruct(weights={"breadth": 1}, judge=False), seed, model)
    assert set(wide.fields) == {"instruction"}
    assert wide.meta["evol"]["depth"] == "in-breadth"
    assert "[3, 1, 2]" in calls_of(model, "rewrite")[0][-1]["content"]  # shown as inspiration


# -- op choice --------------------------------------------------------------------------


def draw_ops(evolver: EvolInstruct, *, seed: int, records: int, rounds: int) -> list[str]:
    """The op of every (record, round), read back from each evolved record's meta."""
    model = ScriptedChatModel(
        lambda m, n: f"{given_prompt(m)} Give an example ({n}).", record=False
    )

    async def go():
        client = LLMClient(model)
        ops = []
        for i in range(records):
            record = Record("instruction", {"instruction": f"Describe topic {i}."}, id=f"t{i}")
            ctx = RecordContext(client, seed, record.id)
            for round_ in range(1, rounds + 1):
                evolved = await evolver.evolve(record, ctx, round_)
                ops.append(evolved.meta["evol"]["op"])
        return ops

    return asyncio.run(go())


def chi_square(counts: Counter, expected: dict[str, float]) -> float:
    return sum((counts[name] - e) ** 2 / e for name, e in expected.items())


def test_ops_are_drawn_uniformly_and_reproducibly():
    ops = draw_ops(EvolInstruct(judge=False), seed=7, records=750, rounds=4)
    counts = Counter(ops)
    assert set(counts) == set(OPS)
    assert chi_square(counts, {op: len(ops) / len(OPS) for op in OPS}) < 20.52  # 5 dof, p=.001
    again = draw_ops(EvolInstruct(judge=False), seed=7, records=50, rounds=4)
    assert again == ops[:200]
    other = draw_ops(EvolInstruct(judge=False), seed=8, records=50, rounds=4)
    assert other != ops[:200]
    assert sum(a == b for a, b in zip(other, again, strict=True)) < 100  # not a shifted copy


def test_weights_set_the_mix():
    evolver = EvolInstruct(weights={"constraints": 2, "breadth": 1}, judge=False)
    assert evolver.weights == {op: {"constraints": 2.0, "breadth": 1.0}.get(op, 0.0) for op in OPS}
    counts = Counter(draw_ops(evolver, seed=3, records=750, rounds=4))
    assert set(counts) == {"constraints", "breadth"}
    assert chi_square(counts, {"constraints": 2000, "breadth": 1000}) < 10.83  # 1 dof, p=.001


def test_unknown_ops_and_bad_weights_are_config_errors():
    with pytest.raises(ConfigError, match="did you mean 'constraints'"):
        EvolInstruct(weights={"constraint": 1})
    with pytest.raises(ConfigError, match="at least one op"):
        EvolInstruct(weights={"breadth": 0})
    with pytest.raises(ConfigError, match="must be a number"):
        EvolInstruct(weights={"breadth": "lots"})
    with pytest.raises(ConfigError, match="did you mean 'reasoning'"):
        EvolInstruct(templates={"reason": builtin_template("evol_reasoning")})
    with pytest.raises(ConfigError, match="must use the variables"):
        EvolInstruct(templates={"reasoning": builtin_template("evol_equal")})


# -- output counts through the engine ---------------------------------------------------


def run_rounds(tmp_path, *, n, rounds, keep_all_rounds, judge="Not Equal"):
    seeds = [
        Record("instruction", {"instruction": f"Explain idea number {i}."}, id=f"s{i}")
        for i in range(n)
    ]
    run = Run(
        command="evol-instruct",
        task=EvolutionRounds(EvolInstruct(), rounds=rounds, keep_all_rounds=keep_all_rounds),
        kind="instruction",
        client=LLMClient(scripted(rewrite=deeper, judge=judge)),
        out=tmp_path / "out.jsonl",
        config={},
        overwrite=True,
    )
    summary = asyncio.run(run.execute(seeds))
    return summary, read_jsonl(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "out.rejects.jsonl")


def test_keep_all_rounds_gives_n_times_m_plus_one_records_when_nothing_fails(tmp_path):
    summary, records, rejects = run_rounds(tmp_path, n=5, rounds=3, keep_all_rounds=True)
    assert summary.accepted == len(records) == 5 * (3 + 1) and rejects == []
    assert len({r["id"] for r in records}) == len(records)
    ids = {r["id"] for r in records}
    assert all(r["parent_id"] in ids for r in records if r["parent_id"] is not None)
    assert Counter(len(r["lineage"]) for r in records) == {0: 5, 1: 5, 2: 5, 3: 5}


def test_failures_give_fewer_records_and_each_is_a_rejection(tmp_path):
    summary, records, rejects = run_rounds(
        tmp_path,
        n=5,
        rounds=3,
        keep_all_rounds=True,
        judge=lambda m, n: "Equal" if n % 3 == 0 else "Not Equal",
    )
    assert 5 <= len(records) < 5 * (3 + 1)
    assert rejects and {r["reason"] for r in rejects} == {"no_information_gain"}
    assert len(records) + len(rejects) == 5 * (3 + 1)
    assert summary.rejected_by_reason == {"no_information_gain": len(rejects)}


def test_without_keep_all_rounds_each_seed_gives_one_record(tmp_path):
    _, records, _ = run_rounds(tmp_path, n=5, rounds=3, keep_all_rounds=False)
    assert [r["id"] for r in records] == [f"s{i}/r1/r2/r3" for i in range(5)]
    assert all([s["round"] for s in r["lineage"]] == [1, 2, 3] for r in records)


# -- languages --------------------------------------------------------------------------


def test_a_chinese_seed_must_evolve_into_chinese():
    seed = Record("instruction", {"instruction": "请解释光合作用的过程。"}, id="zh")
    english = "Explain the process of photosynthesis, comparing C3 and C4 plants."
    drifted = evolve(EvolInstruct(), seed, scripted(rewrite=english))
    assert isinstance(drifted, Rejection) and drifted.reason == "language_drift"

    chinese = "请解释光合作用的过程，并比较C3植物和C4植物在高温环境下的差异。"
    kept = evolve(EvolInstruct(), seed, scripted(rewrite=chinese))
    assert isinstance(kept, Record) and kept["instruction"] == chinese


def test_an_answer_in_another_language_is_dropped():
    seed = Record("instruction", {"instruction": "请解释光合作用的过程。"}, id="zh")
    chinese = "请解释光合作用的过程，并比较C3植物和C4植物在高温环境下的差异。"
    model = scripted(rewrite=chinese, answer=ANSWER)
    outcome = evolve(EvolInstruct(answers=True), seed, model)
    assert isinstance(outcome, Rejection) and outcome.reason == "language_drift"


def test_in_depth_prompts_rewrite_and_the_in_breadth_prompt_creates():
    for op in OPS:
        system, user = builtin_template(f"evol_{op}").render(instruction="Sort it.", input="")
        expected = "prompt creator" if op in IN_BREADTH_OPS else "prompt rewriter"
        assert expected in system["content"], op
        assert "same language" in user["content"] and "Input:" not in user["content"], op
        assert given_prompt([system, user]) == "Sort it."
