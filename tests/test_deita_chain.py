"""DEITA scoring beyond one item: rank-scoring an evolution chain in one call, the
expected score from token logprobs (through the OpenAI backend, the fake server and
the response cache), and the parsed-integer fallback without logprobs."""

from __future__ import annotations

import asyncio
import math

import pytest

from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext
from evoforge.engine.store import ResponseCache, cache_key
from evoforge.evolvers.evol_instruct import EvolInstruct
from evoforge.evolvers.evol_quality import EvolQuality
from evoforge.llm.base import Completion, TokenLogprob
from evoforge.llm.openai_backend import OpenAIChatModel
from evoforge.records import Record
from evoforge.testing.fake_openai import Reply
from evoforge.testing.scripted import ScriptedChatModel
from evoforge.validators.select import (
    DEITA_SCHEMA,
    DeitaScorer,
    deita_chain_schema,
    expected_score,
    parse_deita_chain,
)


def chained(instruction: str, earlier: list[str], output: str = "An answer.", **meta) -> Record:
    return Record(
        "instruction",
        {"instruction": instruction, "output": output},
        id="s/r1/r2",
        meta={"instruction_chain": earlier, **meta},
    )


def run(scorer: DeitaScorer, model, record: Record):
    return asyncio.run(scorer(record, RecordContext(LLMClient(model), 0, record.id)))


# --- the chain ------------------------------------------------------------------------


def test_parse_deita_chain_needs_one_score_per_variant():
    assert parse_deita_chain("[Score 1]: 2\n[Score 2]: 4\n[Score 3]: 6", 3) == [2.0, 4.0, 6.0]
    assert parse_deita_chain("[Instruction 1] Score: 3\n[Instruction 2] Score: 5", 2) == [3, 5]
    assert parse_deita_chain("[Score 1]: 2\n[Score 2]: 4", 3) is None
    assert parse_deita_chain("[Score 1]: 2\n[Score 2]: 9", 2) is None


def test_parse_deita_chain_reads_the_json_form_with_exactly_n_scores():
    assert parse_deita_chain('{"scores": [2, 4, 6]}', 3) == [2.0, 4.0, 6.0]
    assert parse_deita_chain('{"scores": ["3", 5]}', 2) == [3.0, 5.0]
    assert parse_deita_chain('{"scores": [2, 4]}', 3) is None
    assert parse_deita_chain('{"scores": [2, 4, 6, 1]}', 3) is None
    assert parse_deita_chain('{"scores": [2, 9]}', 2) is None
    assert parse_deita_chain('{"scores": [2, "high"]}', 2) is None


def test_the_chain_request_carries_a_schema_with_one_score_per_variant():
    def reply(messages, _n):
        return '{"scores": [2, 3, 5]}' if "[Instruction 1]" in messages[-1]["content"] else "4"

    model = ScriptedChatModel(reply)
    deita = run(DeitaScorer(mode="chain"), model, chained("C", ["A", "B"])).records[0].meta["deita"]
    assert deita["chain"] == {"complexity": [2.0, 3.0, 5.0]} and deita["score"] == 20.0
    chain_call = next(c for c in model.calls if "[Instruction 1]" in c["messages"][-1]["content"])
    scores = chain_call["schema"]["properties"]["scores"]
    assert scores["minItems"] == scores["maxItems"] == 3
    assert scores["items"]["enum"] == [1, 2, 3, 4, 5, 6]
    assert chain_call["schema"] == deita_chain_schema(3)
    assert '{"scores": [score 1, score 2, score 3]}' in chain_call["messages"][-1]["content"]


def test_a_three_step_chain_is_scored_in_one_call_and_the_record_gets_its_position():
    def reply(messages, _n):
        user = messages[-1]["content"]
        if "[Instruction 1]" in user:
            return "[Score 1]: 2\n[Score 2]: 3\n[Score 3]: 5"
        return "##Quality: 4"

    model = ScriptedChatModel(reply)
    record = chained("Sort a list in O(n log n), stably.", ["Sort a list.", "Sort a list fast."])
    result = run(DeitaScorer(mode="chain"), model, record)
    deita = result.records[0].meta["deita"]
    assert deita["complexity"] == 5.0 and deita["score"] == 20.0
    assert deita["chain"] == {"complexity": [2.0, 3.0, 5.0]}
    chain_calls = [c for c in model.calls if "[Instruction 1]" in c["messages"][-1]["content"]]
    assert len(chain_calls) == 1 and len(model.calls) == 2
    prompt = chain_calls[0]["messages"][-1]["content"]
    assert prompt.index("[Instruction 1] Sort a list.") < prompt.index(
        "[Instruction 3] Sort a list in O(n log n), stably."
    )


def test_a_quality_chain_is_rank_scored_too():
    def reply(messages, _n):
        user = messages[-1]["content"]
        if "[Response 1]" in user:
            return "[Score 1]: 1\n[Score 2]: 6"
        return "##Complexity: 3"

    record = Record(
        "instruction",
        {"instruction": "Explain tides.", "output": "The Moon pulls the sea, twice a day."},
        id="t/q1",
        meta={"response_chain": ["The Moon."]},
    )
    deita = (
        run(DeitaScorer(mode="chain"), ScriptedChatModel(reply), record).records[0].meta["deita"]
    )
    assert deita == {
        "complexity": 3.0,
        "quality": 6.0,
        "score": 18.0,
        "chain": {"quality": [1.0, 6.0]},
    }


def test_a_chain_reply_missing_a_variant_is_unparseable():
    model = ScriptedChatModel(
        lambda m, _n: "[Score 1]: 2\n[Score 3]: 5" if "[Instruction" in m[-1]["content"] else "4"
    )
    result = run(DeitaScorer(mode="chain"), model, chained("C", ["A", "B"]))
    (rejection,) = result.rejections
    assert rejection.reason == "unparseable_score" and "chain of 3" in rejection.detail


def test_evolvers_keep_the_chain_deita_reads():
    def reply(messages, n):
        user = messages[-1]["content"]
        if "Equal" in user and "#First Prompt#" in user:
            return "Not Equal"
        return f"A harder version number {n} of the task, with one more constraint"

    record = Record("instruction", {"instruction": "Write a poem.", "output": "Roses."}, id="p")
    ctx = RecordContext(LLMClient(ScriptedChatModel(reply)), 0, "p")
    evolver = EvolInstruct(weights={"constraints": 1})
    first = asyncio.run(evolver.evolve(record, ctx, 1))
    second = asyncio.run(evolver.evolve(first, ctx, 2))
    assert second.meta["instruction_chain"] == ["Write a poem.", first["instruction"]]
    breadth = asyncio.run(EvolInstruct(weights={"breadth": 1}).evolve(second, ctx, 3))
    assert "instruction_chain" not in breadth.meta

    answered = Record("instruction", {"instruction": "Q?", "output": "Old answer here."}, id="a")
    better = asyncio.run(EvolQuality().evolve(answered, ctx, 1))
    assert better.meta["response_chain"] == ["Old answer here."]


# --- logprobs ---------------------------------------------------------------------------


def test_expected_score_is_the_renormalised_mean_over_score_tokens():
    tokens = (
        TokenLogprob("##Complexity:", 0.0, {"##Complexity:": 0.0}),
        TokenLogprob(" 4", math.log(0.5), {" 4": math.log(0.5), "5": math.log(0.25),
                                          " 5": math.log(0.15), "x": math.log(0.1)}),
    )  # fmt: skip
    # p(4) = 0.5, p(5) = 0.4 once " 5" and "5" are one token; renormalised over 0.9.
    value = expected_score(tokens, "##Complexity: 4", 14, 4.0)
    assert value == pytest.approx((4 * 0.5 + 5 * 0.4) / 0.9)
    assert expected_score(None, "##Complexity: 4", 14, 4.0) == 4.0
    # Tokens that do not spell the reply: the parsed number.
    assert expected_score(tokens, "##Complexity: 3", 14, 3.0) == 3.0


async def closing(model: OpenAIChatModel, call):
    try:
        return await call
    finally:
        await model.aclose()


def lp(p: float) -> float:
    return math.log(p)


def scripted_logprob_reply(request):
    if request.json.get("logprobs") is not True:
        return None
    user = request.last_user
    if "##Query" in user:
        return Reply(
            content="##Complexity: 4",
            logprobs=[
                ("##Complexity:", {"##Complexity:": 0.0}),
                (" 4", {" 4": lp(0.6), " 3": lp(0.2), " 6": lp(0.2)}),
            ],
        )
    return Reply(
        content="##Quality: 5",
        logprobs=[("##Quality:", {"##Quality:": 0.0}), (" 5", {" 5": lp(0.5), " 1": lp(0.5)})],
    )


def test_the_score_is_the_expectation_when_the_server_returns_logprobs(fake_openai, tmp_path):
    fake_openai.responder = scripted_logprob_reply
    model = OpenAIChatModel("judge", base_url=fake_openai.base_url)
    cache = ResponseCache(tmp_path / "cache.sqlite")
    record = Record("instruction", {"instruction": "Why?", "output": "Because."}, id="x")

    async def score():
        client = LLMClient(model, cache=cache)
        try:
            return await DeitaScorer()(record, RecordContext(client, 0, record.id))
        finally:
            cache.flush()
            await client.aclose()

    deita = asyncio.run(score()).records[0].meta["deita"]
    c, q = 4 * 0.6 + 3 * 0.2 + 6 * 0.2, 5 * 0.5 + 1 * 0.5
    assert deita["complexity"] == pytest.approx(c) and deita["quality"] == pytest.approx(q)
    assert deita["score"] == pytest.approx(c * q)
    sent = fake_openai.requests[0].json
    assert sent["logprobs"] is True and sent["top_logprobs"] == 10

    # The cached completions keep their logprobs: a second run makes no call and
    # gets the same expectation.
    hits = len(fake_openai.requests)
    again = asyncio.run(score()).records[0].meta["deita"]
    cache.close()  # Python 3.13 warns (an error here) on a connection left unclosed
    assert len(fake_openai.requests) == hits and again == deita


def test_without_logprobs_the_parsed_integer_is_the_score(fake_openai):
    fake_openai.responder = scripted_logprob_reply  # falls through without logprobs
    fake_openai.enqueue("##Complexity: 4", "##Quality: 5")
    model = OpenAIChatModel("judge", base_url=fake_openai.base_url)
    record = Record("instruction", {"instruction": "Why?", "output": "Because."}, id="x")
    scorer = DeitaScorer(params={"max_tokens": 32, "temperature": 0.0})
    result = asyncio.run(closing(model, scorer(record, RecordContext(LLMClient(model), 0, "x"))))
    assert result.records[0].meta["deita"] == {"complexity": 4.0, "quality": 5.0, "score": 20.0}
    assert "logprobs" not in fake_openai.requests[0].json


def test_a_server_that_refuses_logprobs_is_asked_without_them(fake_openai):
    fake_openai.enqueue(
        Reply.fail(400, "logprobs is not supported by this model"), "##Complexity: 2"
    )
    model = OpenAIChatModel("judge", base_url=fake_openai.base_url)
    messages = [{"role": "user", "content": "hi"}]
    completion = asyncio.run(
        closing(model, model.complete(messages, logprobs=True, top_logprobs=5))
    )
    assert completion.text == "##Complexity: 2" and completion.logprobs is None
    assert "logprobs" not in fake_openai.requests[1].json


def test_the_cache_key_and_value_carry_logprobs():
    identity = {"backend": "openai", "model": "m", "base_url": "http://x"}
    messages = [{"role": "user", "content": "hi"}]
    plain = cache_key(identity, messages, {"temperature": 0.0}, None)
    with_lp = cache_key(identity, messages, {"temperature": 0.0, "logprobs": True}, None)
    assert plain != with_lp
    completion = Completion("4", logprobs=(TokenLogprob("4", -0.1, {"4": -0.1, "5": -2.3}),))
    assert Completion.from_json(completion.to_json()) == completion
    assert "logprobs" not in Completion("4").to_json()


def scripted_json_logprob_reply(request):
    """A server that honours the schema: the score digit is one token of the JSON."""
    if request.json.get("logprobs") is not True or request.response_format is None:
        return None
    user = request.last_user
    if "[Instruction 1]" in user:
        return Reply(
            content='{"scores": [2, 5]}',
            logprobs=[
                ('{"', {'{"': 0.0}),
                ("scores", {"scores": 0.0}),
                ('":', {'":': 0.0}),
                (" [", {" [": 0.0}),
                ("2", {"2": lp(0.5), "1": lp(0.5)}),
                (",", {",": 0.0}),
                (" ", {" ": 0.0}),
                ("5", {"5": lp(0.8), "6": lp(0.1), "x": lp(0.1)}),
                ("]}", {"]}": 0.0}),
            ],
        )
    return Reply(
        content='{"score": 4}',
        logprobs=[
            ('{"', {'{"': 0.0}),
            ("score", {"score": 0.0}),
            ('":', {'":': 0.0}),
            (" ", {" ": 0.0}),
            ("4", {"4": lp(0.6), "3": lp(0.2), " 6": lp(0.2)}),
            ("}", {"}": 0.0}),
        ],
    )


def test_json_replies_give_the_expectation_at_each_score_digit(fake_openai):
    fake_openai.responder = scripted_json_logprob_reply
    model = OpenAIChatModel("judge", base_url=fake_openai.base_url)
    record = chained("Harder.", ["Easy."])
    result = asyncio.run(
        closing(model, DeitaScorer(mode="chain")(record, RecordContext(LLMClient(model), 0, "x")))
    )
    deita = result.records[0].meta["deita"]
    assert deita["chain"]["complexity"] == pytest.approx([1.5, (5 * 0.8 + 6 * 0.1) / 0.9])
    q = 4 * 0.6 + 3 * 0.2 + 6 * 0.2
    assert deita["quality"] == pytest.approx(q)
    assert deita["score"] == pytest.approx(deita["chain"]["complexity"][-1] * q)
    formats = [r.response_format for r in fake_openai.requests]
    assert [f["type"] for f in formats] == ["json_schema", "json_schema"]
    assert formats[0]["json_schema"]["schema"] == deita_chain_schema(2)
    assert formats[1]["json_schema"]["schema"] == DEITA_SCHEMA


def test_a_server_that_ignores_the_schema_is_read_as_text_without_a_reask(fake_openai):
    fake_openai.enqueue("##Complexity: 3", "The quality is 5 out of 6.")
    model = OpenAIChatModel("judge", base_url=fake_openai.base_url)
    record = Record("instruction", {"instruction": "Why?", "output": "Because."}, id="x")
    scorer = DeitaScorer(params={"max_tokens": 32, "temperature": 0.0})
    result = asyncio.run(closing(model, scorer(record, RecordContext(LLMClient(model), 0, "x"))))
    (rejection,) = result.rejections
    assert rejection.reason == "unparseable_score" and "5 out of 6" in rejection.detail
    assert len(fake_openai.requests) == 2  # one call per aspect: text is not re-asked
    assert all(r.response_format is not None for r in fake_openai.requests)
