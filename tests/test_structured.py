from __future__ import annotations

import asyncio

import pytest

from evoforge.engine.client import LLMClient
from evoforge.engine.structured import ReplyError, check_reply, extract_json
from evoforge.errors import RequestRejected
from evoforge.testing.scripted import ScriptedChatModel

SCHEMA = {
    "type": "object",
    "required": ["question", "answer"],
    "properties": {"question": {"type": "string"}, "answer": {"type": "string"}},
}


@pytest.mark.parametrize(
    "text",
    [
        '{"question": "q", "answer": "a"}',
        'Sure! Here it is:\n```json\n{"question": "q", "answer": "a"}\n```\nHope it helps.',
        'The JSON: {"question": "q", "answer": "a",} and that is all',
        "{'question': 'q', 'answer': 'a'}",
    ],
)
def test_tolerant_extraction(text):
    assert check_reply(text, SCHEMA) == {"question": "q", "answer": "a"}


def test_braces_inside_strings_do_not_confuse_the_scanner():
    text = 'noise {"question": "q {with} braces", "answer": "a"} trailing }'
    assert check_reply(text, SCHEMA) == {"question": "q {with} braces", "answer": "a"}


def test_no_json_is_invalid_json():
    with pytest.raises(ReplyError) as info:
        extract_json("I cannot help with that.")
    assert info.value.reason == "invalid_json"


def test_wrong_shape_is_schema_mismatch_with_path():
    with pytest.raises(ReplyError) as info:
        check_reply('{"question": "q", "answer": 3}', SCHEMA)
    assert info.value.reason == "schema_mismatch"
    assert info.value.detail == "at $.answer: 3 is not of type 'string'"


def test_reask_once_quoting_the_error_then_succeed():
    model = ScriptedChatModel(['{"question": "q"}', '{"question": "q", "answer": "a"}'])
    client = LLMClient(model)
    completion = asyncio.run(
        client.complete([{"role": "user", "content": "make one"}], op="t", schema=SCHEMA)
    )
    assert completion.parsed == {"question": "q", "answer": "a"}
    assert len(model.calls) == 2
    reask = model.calls[1]["messages"]
    assert reask[-2] == {"role": "assistant", "content": '{"question": "q"}'}
    assert "'answer' is a required property" in reask[-1]["content"]
    assert client.stats["t"].reasks == 1


def test_still_invalid_after_one_reask_is_a_rejection_not_a_crash():
    model = ScriptedChatModel("no json here, sorry")
    client = LLMClient(model)
    with pytest.raises(RequestRejected) as info:
        asyncio.run(client.complete([{"role": "user", "content": "x"}], op="t", schema=SCHEMA))
    assert info.value.reason == "invalid_json"
    assert len(model.calls) == 2
