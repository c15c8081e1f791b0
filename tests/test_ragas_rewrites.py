"""Ragas-style question rewrites: exact mixes, turn shapes, and every rejection reason."""

from __future__ import annotations

import asyncio
import dataclasses
import json
from collections import Counter

import pytest

from evoforge import ConfigError, Record
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection, Run
from evoforge.errors import RequestRejected
from evoforge.evolvers.base import MixPlan
from evoforge.evolvers.ragas_rewrites import (
    COMPRESSED_OPS,
    DEFAULT_MAX_WORDS,
    REWRITE_OPS,
    QuestionRewrite,
    RewriteMix,
    mix_from_spec,
)
from evoforge.prompting import builtin_template, examples_text, preambles
from evoforge.records import schema_error
from evoforge.testing.scripted import ScriptedChatModel, rag_prompt
from helpers import prompt_parts, read_jsonl

CONTEXT_1 = (
    "The Amazon rainforest covers about 5.5 million square kilometres, most of it in Brazil. "
    "It produces a large share of the world's river discharge through the Amazon River."
)
CONTEXT_2 = (
    "The Congo rainforest is the second largest tropical forest, about 3 million square "
    "kilometres, spread over six countries in Central Africa."
)
QUESTION = "How large is the Amazon rainforest?"
ANSWER = "About 5.5 million square kilometres."

FOUR_WAY = "reasoning=0.25,multi_context=0.25,conditional=0.25,conversational=0.25"

TURNS = [
    {"role": "user", "content": "Which country holds most of the Amazon rainforest?"},
    {"role": "assistant", "content": "Brazil."},
    {"role": "user", "content": "And how much area does the whole forest cover?"},
]


def qa(id_: str = "s0", contexts: list[str] | None = None, **fields) -> Record:
    base = {"question": QUESTION, "answer": ANSWER, "contexts": contexts or [CONTEXT_1]}
    return Record("qa", {**base, **fields}, id=id_)


def reply(question: str = "Which country holds most of the largest rainforest on Earth?", **kw):
    return json.dumps({"question": question, "answer": kw.get("answer", "Brazil.")})


def evolve(rewrite: QuestionRewrite, record: Record, text: str):
    model = ScriptedChatModel(text)
    ctx = RecordContext(LLMClient(model), 0, record.id)
    return asyncio.run(rewrite.evolve(record, ctx, 1)), model


def run_task(task, records, kind, model, tmp_path):
    run = Run(
        command="rewrite", task=task, kind=kind, config={},
        client=LLMClient(model), out=tmp_path / "out.jsonl",
    )  # fmt: skip
    summary = asyncio.run(run.execute(records))
    return summary, read_jsonl(tmp_path / "out.jsonl"), read_jsonl(tmp_path / "out.rejects.jsonl")


FOUR_WAY_OPS = ("reasoning", "multi_context", "conditional", "conversational")


# --- mixes ---------------------------------------------------------------------------


@pytest.mark.parametrize("n", [10, 37, 1000])
def test_mix_counts_are_exact_largest_remainder(n):
    plan = mix_from_spec(FOUR_WAY, n, seed=3)
    assigned = Counter(plan.op_for(i) for i in range(n))
    assert sum(assigned.values()) == n
    # Each op gets its quarter rounded down, and the leftovers go one each to
    # ops picked by the seeded tie-break: never more than n in total.
    assert all(n // 4 <= assigned[op] <= n // 4 + 1 for op in FOUR_WAY_OPS)
    assert sorted(assigned.values(), reverse=True) == sorted(
        (n // 4 + (i < n % 4) for i in range(4)), reverse=True
    )
    assert plan.counts["compress"] == 0
    assert plan.op_for(n) is None and plan.op_for(n + 5) is None
    # The tie-break is seeded: reproducible, and another seed may pick other ops.
    assert mix_from_spec(FOUR_WAY, n, seed=3).counts == plan.counts


def test_mix_spec_errors_name_the_flag_and_suggest():
    with pytest.raises(
        ConfigError, match=r"--mix: unknown op 'reasonin' \(did you mean 'reasoning'"
    ):
        mix_from_spec("reasonin=1", 10)


# The conversational reply names its parts; the schema allows no other key.
NAMED = {
    "first_question": TURNS[0]["content"],
    "assistant_reply": TURNS[1]["content"],
    "follow_up": TURNS[2]["content"],
}
# The schema the conversational prompt had before issue 14: a list of role-tagged turns
# (a plugin's template may still answer so; the turn order is then checked after the call).
TURNS_SCHEMA = {
    "type": "object",
    "required": ["turns", "answer"],
    "properties": {
        "turns": {
            "type": "array",
            "minItems": 3,
            "items": {
                "type": "object",
                "required": ["role", "content"],
                "properties": {
                    "role": {"enum": ["user", "assistant"]},
                    "content": {"type": "string", "minLength": 1},
                },
            },
        },
        "answer": {"type": "string"},
    },
}


def success_reply(messages, _n):
    # The reply each op's schema asks for: named parts for a conversation, else a question.
    system = prompt_parts(messages)[0]
    if "first_question" in system:
        return json.dumps({**NAMED, "answer": "Brazil holds most of it."})
    return json.dumps(
        {
            "question": "Which country holds most of the largest rainforest on Earth?",
            "answer": "Brazil holds most of it.",
        }
    )


def test_rewrite_mix_yields_exactly_the_planned_count_per_op(tmp_path):
    n = 37
    plan = mix_from_spec(FOUR_WAY, n, seed=11)
    records = [qa(f"s{i:03d}", [CONTEXT_1, CONTEXT_2]) for i in range(n)]
    model = ScriptedChatModel(success_reply)
    summary, out, rejects = run_task(RewriteMix(plan), records, "qa", model, tmp_path)
    assert rejects == [] and summary.accepted == n
    assert Counter(r["meta"]["rewrite"]["op"] for r in out) == Counter(
        {op: c for op, c in plan.counts.items() if c}
    )
    # Each seed got the op its position was planned for, and the lineage says which;
    # reasoning, multi_context and conditional are then compressed (Ragas v0.1, issue 14).
    for position, record in enumerate(out):
        op = plan.op_for(position)
        tail = ["compress"] if op in COMPRESSED_OPS else []
        assert record["id"] == "/".join([f"s{position:03d}", op, *tail])
        steps = [f"rewrite_{name}" for name in (op, *tail)]
        assert [step["op"] for step in record["lineage"]][-len(steps) :] == steps


def test_seeds_past_the_plan_are_rejected_over_plan(tmp_path):
    plan = mix_from_spec("compress=1", 3)
    records = [qa(f"s{i}") for i in range(5)]
    model = ScriptedChatModel(success_reply)
    summary, out, rejects = run_task(RewriteMix(plan), records, "qa", model, tmp_path)
    assert len(out) == 3 and model.call_count == 3
    assert [(r["id"], r["reason"]) for r in rejects] == [("s3", "over_plan"), ("s4", "over_plan")]
    assert rejects[0]["record"]["question"] == QUESTION


def test_rewrite_mix_rejects_unknown_ops_in_max_words():
    with pytest.raises(ConfigError, match="did you mean 'compress'"):
        RewriteMix(MixPlan(4, {"compress": 1.0}), max_words={"compres": 9})


def test_rewrite_mix_applies_per_op_word_limits():
    mix = RewriteMix(mix_from_spec("compress=1,reasoning=1", 4), max_words={"compress": 8})
    assert mix.config()["max_words"] == {"reasoning": 15, "compress": 8}
    assert set(mix.config()["prompts"]) == {"rewrite_reasoning", "rewrite_compress"}


# --- conversational -----------------------------------------------------------------


def conversational_reply(answer="It covers about 5.5 million square kilometres."):
    return json.dumps({**NAMED, "answer": answer})


def turns_rewrite() -> QuestionRewrite:
    """The conversational op with a template that answers with role-tagged turns."""
    template = dataclasses.replace(
        builtin_template("rewrite_conversational"), output_schema=TURNS_SCHEMA
    )
    return QuestionRewrite("conversational", template=template)


def test_conversational_output_is_a_valid_qa_record():
    out, _ = evolve(QuestionRewrite("conversational"), qa(), conversational_reply())
    assert isinstance(out, Record)
    data = out.to_json()
    assert schema_error(data, "qa") is None
    assert [t["role"] for t in data["question"]] == ["user", "assistant", "user"]
    assert data["answer"] == "It covers about 5.5 million square kilometres."
    assert data["parent_id"] == "s0" and data["id"] == "s0/conversational"
    assert data["meta"]["rewrite"] == {"op": "conversational", "max_words": 25}


def test_conversational_output_is_a_valid_rag_record():
    seed = Record(
        "rag",
        {
            "user_input": QUESTION,
            "reference": ANSWER,
            "reference_contexts": [CONTEXT_1],
            "synthesizer_name": "single_hop",
        },
        id="r0",
    )
    out, _ = evolve(QuestionRewrite("conversational"), seed, conversational_reply())
    assert isinstance(out, Record)
    data = out.to_json()
    assert schema_error(data, "rag") is None
    assert data["user_input"] == TURNS and data["user_input"][-1]["role"] == "user"
    assert data["reference"].startswith("It covers")
    assert data["reference_contexts"] == [CONTEXT_1]
    assert data["synthesizer_name"] == "conversational"


def test_turns_from_a_template_that_asks_for_them_that_do_not_end_with_the_user_are_rejected():
    turns = [*TURNS, {"role": "assistant", "content": "About 5.5 million km²."}]
    text = json.dumps({"turns": turns, "answer": "About 5.5 million square kilometres."})
    out, _ = evolve(turns_rewrite(), qa(), text)
    assert isinstance(out, Rejection) and out.reason == "bad_turns"
    assert out.record["question"] == turns  # the candidate is kept for inspection


def test_the_built_in_conversational_schema_rejects_a_list_of_turns():
    # Before issue 14 the schema asked for role-tagged turns and any order passed it.
    text = json.dumps({"turns": TURNS, "answer": "About 5.5 million square kilometres."})
    with pytest.raises(RequestRejected) as error:
        evolve(QuestionRewrite("conversational"), qa(), text)
    assert error.value.reason == "schema_mismatch"


def test_conversational_limit_applies_to_each_user_turn():
    long_follow_up = "and " + " ".join(["then"] * 10) + "?"
    text = json.dumps(
        {**NAMED, "follow_up": long_follow_up, "answer": "About 5.5 million square kilometres."}
    )
    out, _ = evolve(QuestionRewrite("conversational", max_words=10), qa(), text)
    assert isinstance(out, Rejection) and out.reason == "too_long"
    assert out.detail.startswith("user turn 2: 11 words")


# --- rejections -----------------------------------------------------------------------


def test_context_reference_is_rejected():
    text = reply("According to the passage, which country holds most of the forest?")
    out, _ = evolve(QuestionRewrite("reasoning"), qa(), text)
    assert isinstance(out, Rejection)
    assert (out.reason, out.id) == ("context_reference", "s0/reasoning")
    assert "according to the passage" in out.detail
    assert out.record["question"].startswith("According to the passage")


@pytest.mark.parametrize(("words", "kept"), [(5, True), (6, False)])
def test_too_long_fires_above_the_limit_and_not_at_it(words, kept):
    question = " ".join(["Which", "country", "holds", "most", "forest", "area"][:words]) + "?"
    out, _ = evolve(QuestionRewrite("reasoning", max_words=5), qa(), reply(question))
    if kept:
        assert isinstance(out, Record) and out["question"] == question
    else:
        assert isinstance(out, Rejection) and out.reason == "too_long"
        assert out.detail == "6 words, the limit is 5"


def test_multi_context_without_a_second_context_is_rejected_before_any_call():
    out, model = evolve(QuestionRewrite("multi_context"), qa(), reply())
    assert isinstance(out, Rejection) and out.reason == "no_second_context"
    assert model.call_count == 0
    assert out.record["id"] == "s0"


def test_record_without_contexts_is_rejected_no_context():
    out, model = evolve(QuestionRewrite("compress"), qa(contexts=[""]), reply())
    assert isinstance(out, Rejection) and out.reason == "no_context"
    assert model.call_count == 0


def test_caller_supplied_second_context_is_used():
    rewrite = QuestionRewrite("multi_context", second_context=lambda record: CONTEXT_2)
    text = reply("Which is larger, the Amazon or the Congo rainforest, and by how much?")
    out, model = evolve(rewrite, qa(), text)
    assert isinstance(out, Record)
    assert out["contexts"] == [CONTEXT_1, CONTEXT_2]
    prompt = model.calls[0]["messages"][-1]["content"]
    assert CONTEXT_1 in prompt and CONTEXT_2 in prompt


def test_multi_context_defaults_to_the_records_second_context():
    third = "A third passage about deserts."
    out, model = evolve(
        QuestionRewrite("multi_context"),
        qa(contexts=[CONTEXT_1, CONTEXT_2, third]),
        reply("Which is larger, the Amazon or the Congo rainforest?"),
    )
    assert isinstance(out, Record) and out["contexts"] == [CONTEXT_1, CONTEXT_2]
    assert third not in model.calls[0]["messages"][-1]["content"]


def test_multi_context_keeps_rag_context_ids_parallel_to_the_contexts():
    ids = [{"doc_id": f"d{i}", "start": 0, "end": 10} for i in range(3)]
    fields = {"user_input": QUESTION, "reference": ANSWER, "reference_context_ids": ids}
    seed = Record("rag", {**fields, "reference_contexts": [CONTEXT_1, CONTEXT_2, "x"]}, id="r0")
    text = reply("Which is larger, the Amazon or the Congo rainforest?")
    own, _ = evolve(QuestionRewrite("multi_context"), seed, text)
    assert isinstance(own, Record) and own["reference_context_ids"] == ids[:2]
    supplied, _ = evolve(QuestionRewrite("multi_context", second_context=lambda r: "y"), seed, text)
    assert isinstance(supplied, Record) and "reference_context_ids" not in supplied.fields
    assert supplied["reference_contexts"] == [CONTEXT_1, "y"]
    assert schema_error(supplied.to_json(), "rag") is None


def test_unchanged_question_is_no_information_gain():
    out, _ = evolve(
        QuestionRewrite("compress"), qa(), reply("  how LARGE is the  Amazon rainforest?")
    )
    assert isinstance(out, Rejection) and out.reason == "no_information_gain"


def test_empty_answer_is_rejected():
    out, _ = evolve(QuestionRewrite("compress"), qa(), reply("Amazon forest size?", answer=" . "))
    assert isinstance(out, Rejection) and out.reason == "empty_answer"


def test_prompt_leak_is_rejected():
    out, _ = evolve(QuestionRewrite("compress"), qa(), reply("Rewritten prompt: Amazon size?"))
    assert isinstance(out, Rejection) and out.reason == "prompt_leak"


# --- language -------------------------------------------------------------------------

ZH_CONTEXT = "光合作用主要在植物叶片的叶绿体中进行，需要光、水和二氧化碳，产生葡萄糖和氧气。"
ZH_SEED = Record(
    "qa",
    {"question": "光合作用在哪里进行？", "answer": "在叶片的叶绿体中。", "contexts": [ZH_CONTEXT]},
    id="zh0",
)


def test_chinese_seed_with_a_chinese_rewrite_is_kept():
    question = "没有光时，叶绿体还能产生氧气吗？"
    text = json.dumps(
        {"question": question, "answer": "不能，光合作用需要光。"}, ensure_ascii=False
    )
    out, model = evolve(QuestionRewrite("conditional"), ZH_SEED, text)
    assert isinstance(out, Record)
    assert out["question"] == question and out["answer"] == "不能，光合作用需要光。"
    assert ZH_CONTEXT in model.calls[0]["messages"][-1]["content"]


def test_chinese_seed_with_an_english_rewrite_is_language_drift():
    text = reply("Without light, can chloroplasts still produce oxygen?", answer="No.")
    out, _ = evolve(QuestionRewrite("conditional"), ZH_SEED, text)
    assert isinstance(out, Rejection) and out.reason == "language_drift"
    assert "Han" in out.detail


# --- prompts and the engine --------------------------------------------------------------


def test_defaults_keep_the_ragas_limits():
    assert DEFAULT_MAX_WORDS["reasoning"] == 15 and DEFAULT_MAX_WORDS["conditional"] == 25
    assert set(DEFAULT_MAX_WORDS) == set(REWRITE_OPS)
    with pytest.raises(ConfigError, match="did you mean 'reasoning'"):
        QuestionRewrite("reasonng")


VALUES = {"question": "q", "answer": "a", "context": "c", "second_context": "d", "max_words": 9}


def prompt_of(op: str) -> list[dict]:
    template = builtin_template(f"rewrite_{op}")
    return template.render(**{k: v for k, v in VALUES.items() if k in template.variables})


@pytest.mark.parametrize("op", REWRITE_OPS)
def test_each_op_asks_with_its_json_schema_and_records_its_prompt(op):
    out, model = evolve(
        QuestionRewrite(op),
        qa(contexts=[CONTEXT_1, CONTEXT_2]),
        success_reply(prompt_of(op), 1),
    )
    template = builtin_template(f"rewrite_{op}")
    schema = model.calls[0]["schema"]
    assert schema == template.output_schema
    assert "answer" in schema["required"]
    assert ("first_question" if op == "conversational" else "question") in schema["required"]
    assert isinstance(out, Record)
    assert out.lineage[-1]["prompt_id"] == f"rewrite_{op}@v{template.version}"
    assert out.lineage[-1]["prompt_hash"] == template.content_hash
    # One short few-shot example sits between the instructions and the request: written
    # into the task, after the shared RAG preamble and the contexts (issue 19).
    messages = model.calls[0]["messages"]
    assert [m["role"] for m in messages] == ["system", "user"]
    assert messages[0]["content"] == preambles()["rag"]
    task, contexts = rag_prompt(messages)
    # multi_context has the record's two contexts as [1] and [2]; the other ops one
    # context [1], the record's contexts joined
    joined = [f"{CONTEXT_1}\n\n{CONTEXT_2}"]
    assert contexts == ([CONTEXT_1, CONTEXT_2] if op == "multi_context" else joined)
    assert len(template.examples) == 1
    assert task.count("\nInput: ") == 1 and task.count("\nReply: ") == 1
    examples = examples_text(template.examples)
    assert task.index("Reply with JSON") < task.index(examples)
    assert task.index(examples) + len(examples) < task.index(f"Original question: {QUESTION}")


def test_unparseable_reply_becomes_invalid_json_through_the_engine(tmp_path):
    model = ScriptedChatModel("I would rather not answer in JSON today.")
    task = RewriteMix(mix_from_spec("reasoning=1", 1))
    summary, out, rejects = run_task(task, [qa()], "qa", model, tmp_path)
    assert out == [] and summary.rejected_by_reason == {"invalid_json": 1}
    assert rejects[0]["id"] == "s0" and rejects[0]["record"]["question"] == QUESTION
    assert model.call_count == 2  # the engine re-asks once, quoting the error
