from __future__ import annotations

import pytest

from evoforge import ConfigError, Record, schema_error, schema_for


def test_every_kind_has_a_schema_with_its_payload_fields():
    assert {"instruction", "input", "output"} <= set(schema_for("instruction")["properties"])
    assert {"question", "answer", "contexts"} <= set(schema_for("qa")["properties"])
    assert {"user_input", "reference", "reference_contexts"} <= set(schema_for("rag")["properties"])
    assert {"messages", "context_tokens", "needles"} <= set(schema_for("in2")["properties"])


def test_unknown_kind_lists_the_known_ones():
    with pytest.raises(ConfigError, match="instruction, qa, rag, in2"):
        schema_for("nope")


def test_valid_record_round_trips():
    record = Record("instruction", {"instruction": "Hi", "output": "Hello"}, id="a")
    data = record.to_json()
    assert schema_error(data, "instruction") is None
    assert Record.from_json(data) == record


def test_error_names_the_json_path():
    data = Record("instruction", {"instruction": "Hi"}, id="a").to_json()
    data["lineage"] = [{"op": 3}]
    assert schema_error(data, "instruction") == "at $.lineage[0].op: 3 is not of type 'string'"


def test_missing_required_field_is_reported():
    problem = schema_error({"id": "x", "kind": "qa", "question": "q", "answer": "a"}, "qa")
    assert problem is not None and "contexts" in problem


def test_rag_user_input_may_be_turns_but_not_empty():
    base = {"id": "r", "kind": "rag", "reference": "ref", "reference_contexts": ["c"]}
    turns = [{"role": "user", "content": "a"}, {"role": "assistant", "content": "b"}]
    assert schema_error({**base, "user_input": turns}, "rag") is None
    assert schema_error({**base, "user_input": ""}, "rag") is not None


def test_derive_keeps_lineage_and_parent():
    seed = Record("instruction", {"instruction": "Hi"}, id="s1")
    child = seed.derive({"op": "deepen", "round": 1}, suffix="r1", instruction="Hi there")
    assert child.id == "s1/r1" and child.parent_id == "s1"
    assert child.lineage == [{"op": "deepen", "round": 1}]
    assert seed.lineage == []
