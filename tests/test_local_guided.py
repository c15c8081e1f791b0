"""Schema-guided JSON from the embedded model: the structure is forced, the words are its own.

The scaffold tests need no model. The ``slow`` ones load the real model once per module,
from the user's converted cache when it is complete (well under a second), else into a
temporary directory (a ~30 s conversion).
"""

from __future__ import annotations

import asyncio
import json

import pytest
from jsonschema import Draft202012Validator

from evoforge.llm.base import Completion
from evoforge.llm.local import CACHE_SUBDIR, LocalChatModel, default_cache_dir
from evoforge.llm.local.guided_decoding import _ScaffoldCursor, _TokenClasses
from evoforge.llm.local.guided_json import _ChoiceSlot, _json_string_tail, _JsonScaffold, _TextSlot
from evoforge.llm.local.weights import _is_complete

pytestmark = pytest.mark.requires_local
torch = pytest.importorskip("torch")  # used throughout: without it, the module skips whole

QUESTION_ANSWER = {
    "type": "object",
    "required": ["question", "answer"],
    "properties": {
        "question": {"type": "string", "minLength": 1},
        "answer": {"type": "string", "minLength": 1},
    },
}
VERDICT = {
    "type": "object",
    "required": ["verdict", "reason"],
    "properties": {"verdict": {"enum": ["yes", "no"]}, "reason": {"type": "string"}},
}
TURNS = {
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
KEYWORDS = {  # no required list: every property, in order
    "type": "object",
    "properties": {
        "keywords": {"type": "array", "items": {"type": "string"}, "minItems": 2},
        "none": {"type": "array", "items": {"type": "string"}, "maxItems": 0},
        "label": {"type": "string", "enum": ['say "hi"', "ünï"]},
    },
}
UNGUIDED = {
    "type": "object",
    "required": ["answer", "meta"],
    "properties": {
        "answer": {"type": "string"},
        "meta": {"type": "object", "properties": {"score": {"type": "integer"}}},
    },
}

PASSAGES = [
    "The Nile flows north through eleven countries into the Mediterranean Sea. Its two "
    "main branches, the White Nile and the Blue Nile, join at Khartoum.",
    "Honeybees communicate the location of flowers with a waggle dance. The angle of the "
    "dance shows the direction relative to the sun.",
    "Water boils at 100 degrees Celsius at sea level. Higher up, the air pressure is "
    "lower, so water boils at a lower temperature.",
]


def question_prompt(passage: str) -> list[dict[str, str]]:
    return [
        {
            "role": "system",
            "content": "Given a passage, write one question a reader could ask and its "
            'answer. Reply with JSON only: {"question": "...", "answer": "..."}.',
        },
        {"role": "user", "content": f"Passage:\n{passage}"},
    ]


def filled(scaffold: _JsonScaffold, text: str) -> str:
    """The scaffold's JSON with every text slot set to ``text`` and every enum to its first."""
    parts = [scaffold.prefix]
    for piece in scaffold.pieces:
        if isinstance(piece, str):
            parts.append(piece)
        elif isinstance(piece, _TextSlot):
            parts.append(_json_string_tail(text))
        else:
            parts.append(_json_string_tail(piece.options[0]))
    return "".join(parts)


# -- the scaffold, no model needed -----------------------------------------------------


def test_question_answer_scaffold():
    scaffold = _JsonScaffold.for_schema(QUESTION_ANSWER, max_tokens=160)
    assert scaffold is not None
    assert scaffold.prefix == '{"question": "'
    assert scaffold.pieces == (_TextSlot(), ', "answer": "', _TextSlot(), "}")
    assert scaffold.field_tokens == 80
    assert _JsonScaffold.for_schema(QUESTION_ANSWER, max_tokens=10).field_tokens == 24


@pytest.mark.parametrize("schema", [QUESTION_ANSWER, VERDICT, TURNS, KEYWORDS])
def test_every_guided_shape_fills_to_valid_json(schema):
    scaffold = _JsonScaffold.for_schema(schema, max_tokens=100)
    assert scaffold is not None
    value = json.loads(filled(scaffold, 'a "quoted"\\ line\nand a tab\t'))
    assert Draft202012Validator(schema).is_valid(value), value
    if schema is TURNS:
        assert len(value["turns"]) == 3
    if schema is KEYWORDS:
        assert list(value) == ["keywords", "none", "label"]
        assert (len(value["keywords"]), value["none"]) == (2, [])


def test_optional_properties_are_left_out_when_some_are_required():
    critic = {
        "type": "object",
        "required": ["verdict"],
        "properties": {"verdict": {"enum": ["yes", "no"]}, "reason": {"type": "string"}},
    }
    scaffold = _JsonScaffold.for_schema(critic, max_tokens=120)
    assert scaffold is not None
    assert (scaffold.prefix, scaffold.pieces) == (
        '{"verdict": "',
        (_ChoiceSlot(("yes", "no")), "}"),
    )


@pytest.mark.parametrize(
    "schema",
    [
        UNGUIDED,
        {"type": "object"},
        {"type": "array", "items": {"type": "string"}},
        {"type": "object", "properties": {"n": {"type": "integer"}}},
        {"type": "object", "properties": {"d": {"type": "string", "format": "date"}}},
        {"type": "object", "properties": {"e": {"enum": ["a", 1]}}},
        {"type": "object", "required": ["x"], "properties": {"y": {"type": "string"}}},
        {"type": "object", "properties": {"a": {"type": "array", "items": {"type": "array"}}}},
        {"type": "object", "properties": {"s": {"type": "string"}}, "$defs": {}},
        {"type": "object", "required": [["s"]], "properties": {"s": {"type": "string"}}},
    ],
)
def test_other_shapes_are_not_guided(schema):
    assert _JsonScaffold.for_schema(schema, max_tokens=100) is None


def filled_any(scaffold: _JsonScaffold, text: str) -> str:
    """As ``filled``, with a number enum's first option written bare."""
    parts = [scaffold.prefix]
    for piece in scaffold.pieces:
        if isinstance(piece, str):
            parts.append(piece)
        elif isinstance(piece, _TextSlot):
            parts.append(_json_string_tail(text))
        elif piece.bare:
            parts.append(piece.options[0])
        else:
            parts.append(_json_string_tail(piece.options[0]))
    return "".join(parts)


# Issue 14: the prompts whose reply shape the schema fixes (named, required, closed), and
# every other built-in rewrite and RAG prompt: each one is guided on the embedded model.
GUIDED_PROMPTS = (
    "rewrite_conversational", "rag_context_score", "rag_keyphrases", "rewrite_reasoning",
    "rewrite_multi_context", "rewrite_conditional", "rewrite_compress", "rag_seed_question",
    "rag_fix", "critic_answerable", "critic_grounded", "in2_fine_grained",
)  # fmt: skip


@pytest.mark.parametrize("prompt", GUIDED_PROMPTS)
def test_built_in_reply_schemas_are_guided_and_fill_to_valid_json(prompt):
    from evoforge.prompting import builtin_template

    schema = builtin_template(prompt).output_schema
    scaffold = _JsonScaffold.for_schema(schema, max_tokens=200)
    assert scaffold is not None, f"{prompt}: a keyword of its schema is not guided"
    value = json.loads(filled_any(scaffold, "some words"))
    assert Draft202012Validator(schema).is_valid(value), value
    if schema.get("additionalProperties") is False:
        assert list(value) == schema["required"]  # every property, in the order named


def test_a_closed_object_is_guided_and_writes_every_required_key_in_order():
    closed = {
        "type": "object",
        "required": ["first_question", "assistant_reply", "follow_up"],
        "additionalProperties": False,
        "properties": {
            "follow_up": {"type": "string", "minLength": 1},
            "first_question": {"type": "string", "minLength": 1},
            "assistant_reply": {"type": "string", "minLength": 1},
        },
    }
    scaffold = _JsonScaffold.for_schema(closed, max_tokens=120)
    assert scaffold is not None
    assert scaffold.prefix == '{"first_question": "'
    # A string slot ends with its closing quote; the literals hold the rest.
    assert scaffold.pieces == (
        _TextSlot(),
        ', "assistant_reply": "',
        _TextSlot(),
        ', "follow_up": "',
        _TextSlot(),
        "}",
    )
    # Closed items of an array, and integer scores, are guided too.
    scores = {
        "type": "object",
        "required": ["clarity", "items"],
        "additionalProperties": False,
        "properties": {
            "clarity": {"type": "integer", "enum": [1, 2, 3]},
            "items": {
                "type": "array", "minItems": 2, "maxItems": 2,
                "items": {"type": "object", "required": ["k"], "additionalProperties": False,
                          "properties": {"k": {"type": "string"}}},
            },
        },
    }  # fmt: skip
    scaffold = _JsonScaffold.for_schema(scores, max_tokens=120)
    assert scaffold is not None
    value = json.loads(filled_any(scaffold, "x"))
    assert value == {"clarity": 1, "items": [{"k": "x"}, {"k": "x"}]}
    assert Draft202012Validator(scores).is_valid(value)


# -- the real model --------------------------------------------------------------------


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    cached = default_cache_dir()
    root = cached if _is_complete(cached / CACHE_SUBDIR) else tmp_path_factory.mktemp("m")
    chat_model = LocalChatModel(root)
    yield chat_model
    asyncio.run(chat_model.aclose())


@pytest.fixture(scope="module")
def question_replies(model):
    """Three guided {question, answer} replies asked at once, and the generate calls made."""

    async def ask_all() -> list[Completion]:
        return await asyncio.gather(
            *(
                model.complete(question_prompt(p), schema=QUESTION_ANSWER, max_tokens=80)
                for p in PASSAGES
            )
        )

    before = model.generate_calls
    replies = asyncio.run(ask_all())
    return replies, model.generate_calls - before


@pytest.mark.slow
def test_guided_replies_are_valid_json(question_replies):
    replies, _ = question_replies
    validator = Draft202012Validator(QUESTION_ANSWER)
    for reply in replies:
        value = json.loads(reply.text)
        assert validator.is_valid(value), reply.text
        assert reply.finish_reason == "stop"
        assert reply.text == json.dumps(value, ensure_ascii=False)
    assert len({reply.text for reply in replies}) == len(replies)


@pytest.mark.slow
def test_concurrent_guided_replies_share_one_generate_call(question_replies):
    replies, generate_calls = question_replies
    assert generate_calls == 1, "each reply is one pass: every field, one batch"


@pytest.mark.slow
def test_usage_counts_the_prompt_the_scaffold_and_every_value(question_replies, model):
    replies, _ = question_replies
    tokenizer = model._tokenizer
    for passage, reply in zip(PASSAGES, replies, strict=True):
        prompt = tokenizer.apply_chat_template(
            question_prompt(passage), tokenize=False, add_generation_prompt=True
        )
        opening = '{"question": "'
        assert reply.usage.prompt_tokens == len(tokenizer(prompt + opening)["input_ids"])
        written = tokenizer(reply.text[len(opening) :])["input_ids"]  # values and scaffold
        assert 0.7 * len(written) <= reply.usage.completion_tokens <= 1.3 * len(written) + 1
        assert reply.usage.completion_tokens <= 2 * 40 + len('", "answer": "}') + 1


@pytest.mark.slow
@pytest.mark.parametrize("schema", [TURNS, KEYWORDS], ids=["turns", "keywords"])
def test_any_scores_give_json_at_every_step(model, schema):
    """Random scores stand in for the model: whatever it prefers, the text stays JSON."""
    if model._tokenizer is None:
        model._load()
    classes = _TokenClasses.build(model._tokenizer, model._model.config.vocab_size)
    scaffold = _JsonScaffold.for_schema(schema, max_tokens=0)
    cursor = _ScaffoldCursor(scaffold, model._tokenizer, classes)
    random = torch.Generator().manual_seed(7)
    for _ in range(scaffold.max_new_tokens):
        json.loads(cursor.json_text())
        scores = torch.randn(len(classes.inside), generator=random)
        cursor.constrain(scores)
        cursor.advance(int(scores.argmax()))
        if cursor.done:
            break
    assert cursor.done
    value = json.loads(cursor.json_text())
    assert Draft202012Validator(schema).is_valid(value), value


@pytest.mark.slow
def test_enum_value_is_one_of_its_options(model):
    messages = [
        {"role": "system", "content": 'Reply with JSON: {"verdict": "yes" or "no", "reason": ...}'},
        {"role": "user", "content": "Is Paris the capital of France?"},
    ]
    reply = asyncio.run(model.complete(messages, schema=VERDICT, max_tokens=48, temperature=0.7))
    value = json.loads(reply.text)
    assert list(value) == ["verdict", "reason"]
    assert value["verdict"] in {"yes", "no"}
    assert isinstance(value["reason"], str) and value["reason"].strip()


@pytest.mark.slow
def test_unguided_schema_falls_back_to_a_hint(model):
    messages = [{"role": "user", "content": "Rate the film Casablanca."}]

    async def both() -> list[Completion]:
        return await asyncio.gather(
            model.complete(messages, schema=UNGUIDED, max_tokens=16),
            model.complete(messages, max_tokens=16),
        )

    hinted, plain = asyncio.run(both())
    assert isinstance(hinted.text, str) and hinted.text
    assert hinted.finish_reason in {"stop", "length"}
    assert hinted.usage.prompt_tokens > plain.usage.prompt_tokens + 20, "the schema was stated"
