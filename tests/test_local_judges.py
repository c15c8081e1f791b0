"""The DEITA and AlpaGasus judges on the embedded model: their schemas are guided
shapes (a score is chosen among the enum's numbers, never written freely), so even a
135M model always gives a parseable score."""

from __future__ import annotations

import asyncio
import json

import pytest
from jsonschema import Draft202012Validator

from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext
from evoforge.llm import local
from evoforge.llm.local.guided_json import _ChoiceSlot, _JsonScaffold, _TextSlot
from evoforge.records import Record
from evoforge.validators.select import (
    ALPAGASUS_SCHEMA,
    DEITA_SCHEMA,
    AlpagasusRater,
    DeitaScorer,
    deita_chain_schema,
)

DIGITS = _ChoiceSlot(("1", "2", "3", "4", "5", "6"), bare=True)


def filled(scaffold: _JsonScaffold) -> str:
    """The scaffold's JSON with every enum set to its last option, every text to "ok"."""
    parts = [scaffold.prefix]
    for piece in scaffold.pieces:
        if isinstance(piece, str):
            parts.append(piece)
        elif isinstance(piece, _TextSlot):
            parts.append('ok"')
        else:
            parts.append(piece.options[-1] if piece.bare else f'{piece.options[-1]}"')
    return "".join(parts)


# -- the scaffolds, no model needed --------------------------------------------------------


def test_the_deita_score_is_a_bare_choice_among_one_to_six():
    scaffold = _JsonScaffold.for_schema(DEITA_SCHEMA, max_tokens=32)
    assert scaffold is not None
    assert scaffold.prefix == '{"score": '
    assert scaffold.pieces == (DIGITS, "}")
    assert json.loads(filled(scaffold)) == {"score": 6}


def test_a_chain_gets_exactly_one_score_per_variant():
    scaffold = _JsonScaffold.for_schema(deita_chain_schema(3), max_tokens=40)
    assert scaffold is not None
    assert scaffold.prefix == '{"scores": ['
    assert scaffold.pieces == (DIGITS, ", ", DIGITS, ", ", DIGITS, "]}")
    value = json.loads(filled(scaffold))
    assert value == {"scores": [6, 6, 6]}
    assert Draft202012Validator(deita_chain_schema(3)).is_valid(value)


def test_the_alpagasus_score_comes_first_in_half_points():
    scaffold = _JsonScaffold.for_schema(ALPAGASUS_SCHEMA, max_tokens=256)
    assert scaffold is not None
    score, middle, text, end = scaffold.pieces
    assert scaffold.prefix == '{"score": ' and middle == ', "explanation": "'
    assert score.bare and score.options == tuple(str(k / 2) for k in range(11))
    assert isinstance(text, _TextSlot) and end == "}"
    assert Draft202012Validator(ALPAGASUS_SCHEMA).is_valid(json.loads(filled(scaffold)))


@pytest.mark.parametrize(
    "score",
    [
        {"type": "integer", "enum": [1, 10]},  # "1" would end the choice before "10"
        {"type": "integer", "enum": [True, 2]},
        {"type": "integer"},
        {"type": "integer", "enum": [1, 2], "multipleOf": 1},
    ],
)
def test_number_shapes_the_scaffold_cannot_choose_are_not_guided(score):
    schema = {"type": "object", "properties": {"score": score}}
    assert _JsonScaffold.for_schema(schema, max_tokens=32) is None


# -- the real model ----------------------------------------------------------------------

RECORDS = [
    Record(
        "instruction",
        {"instruction": "What is the capital of France?", "output": "Paris."},
        id="easy",
    ),
    Record(
        "instruction",
        {
            "instruction": "Prove that there are infinitely many primes, then give a bound "
            "on the n-th prime, step by step.",
            "output": "Suppose there are finitely many primes p1..pk. Then p1*...*pk + 1 "
            "has a prime factor that is none of them, a contradiction.",
        },
        id="hard",
    ),
    Record(
        "instruction",
        {"instruction": "Sort a list of numbers, stably, in O(n log n).", "output": "sorted()"},
        id="chain",
        meta={"instruction_chain": ["Sort a list.", "Sort a list of numbers quickly."]},
    ),
]


@pytest.fixture(scope="module")
def model():
    pytest.importorskip("torch")
    pytest.importorskip("transformers")
    chat = local.LocalChatModel()
    yield chat
    asyncio.run(chat.aclose())


def score_all(model, task, records):
    async def go():
        client = LLMClient(model)
        return await asyncio.gather(
            *(task(record, RecordContext(client, 0, record.id)) for record in records)
        )

    return asyncio.run(go())


@pytest.mark.requires_local
@pytest.mark.slow
def test_deita_on_the_local_model_always_gives_scores_in_one_to_six(model):
    results = score_all(model, DeitaScorer(mode="chain"), RECORDS)
    for result in results:
        assert not result.rejections, result.rejections
        (record,) = result.records
        deita = record.meta["deita"]
        assert 1.0 <= deita["complexity"] <= 6.0 and 1.0 <= deita["quality"] <= 6.0
        assert deita["score"] == pytest.approx(deita["complexity"] * deita["quality"])
    chain = results[2].records[0].meta["deita"]["chain"]["complexity"]
    assert len(chain) == 3 and all(1.0 <= c <= 6.0 for c in chain)
    # The guided replies carry the odds of each score token: the scores are DEITA's
    # expected values, not the chosen integers.
    scores = [r.records[0].meta["deita"]["quality"] for r in results] + chain
    assert any(score != round(score) for score in scores), scores


@pytest.mark.requires_local
@pytest.mark.slow
def test_a_guided_reply_carries_the_odds_of_its_choices():
    model = local.LocalChatModel()
    messages = [{"role": "user", "content": "Rate the complexity of: 2 + 2?"}]

    async def ask():
        try:
            return await model.complete(
                messages, schema=DEITA_SCHEMA, logprobs=True, top_logprobs=5
            )
        finally:
            await model.aclose()

    reply = asyncio.run(ask())
    assert "".join(entry.token for entry in reply.logprobs) == reply.text
    (choice,) = [entry for entry in reply.logprobs if len(entry.top) > 1]
    assert set(choice.top) == {"1", "2", "3", "4", "5", "6"}
    assert choice.token == str(json.loads(reply.text)["score"])
    assert choice.logprob == max(choice.top.values()) < 0.0


@pytest.mark.requires_local
@pytest.mark.slow
def test_alpagasus_on_the_local_model_gives_a_score_in_zero_to_five(model):
    rater = AlpagasusRater(params={"max_tokens": 48, "temperature": 0.0})
    (result,) = score_all(model, rater, RECORDS[:1])
    assert not result.rejections, result.rejections
    score = result.records[0].meta["alpagasus"]["score"]
    assert 0.0 <= score <= 5.0 and score * 2 == int(score * 2)
