from __future__ import annotations

import pytest

from evoforge import ConfigError, builtin_template
from evoforge.prompting import parse_template

TEMPLATE = """
id: t
version: 2
variables: [text]
messages:
  - role: system
    content: Be brief.
  - role: user
    content: "Rewrite: {{ text }}"
"""


def test_seed_text_is_data_never_a_template():
    template = parse_template(TEMPLATE, source="t.yaml")
    nasty = "{{ 7*7 }} {% for x in range(3) %}loop{% endfor %} {{ ''.__class__ }}"
    messages = template.render(text=nasty)
    assert messages[-1]["content"] == f"Rewrite: {nasty}"


def test_variables_are_checked_when_the_template_loads():
    bad = TEMPLATE.replace("variables: [text]", "variables: [text, other]")
    with pytest.raises(ConfigError, match=r"declared variables \['other', 'text'\]"):
        parse_template(bad, source="bad.yaml")


def test_render_requires_exactly_the_declared_variables():
    template = parse_template(TEMPLATE, source="t.yaml")
    with pytest.raises(ConfigError, match="missing text"):
        template.render()
    with pytest.raises(ConfigError, match="unexpected extra"):
        template.render(text="a", extra="b")


def test_unknown_keys_are_errors():
    with pytest.raises(ConfigError, match="unknown key"):
        parse_template(TEMPLATE + "\ntemperature: 0.3\n", source="t.yaml")


def test_sandbox_blocks_attribute_escape_in_templates():
    evil = TEMPLATE.replace("Rewrite: {{ text }}", "{{ text.__class__.__mro__ }}")
    template = parse_template(evil, source="evil.yaml")
    with pytest.raises(Exception, match="unsafe|access"):
        template.render(text="x")


def test_content_hash_tracks_edits_and_goes_in_the_ref():
    a = parse_template(TEMPLATE, source="t.yaml")
    b = parse_template(TEMPLATE.replace("Be brief.", "Be very brief."), source="t.yaml")
    assert a.content_hash != b.content_hash
    assert a.ref == {"prompt_id": "t@v2", "prompt_hash": a.content_hash}


def test_few_shot_examples_sit_between_system_and_user():
    with_examples = TEMPLATE + ("examples:\n  - variables: {text: 'a b'}\n    output: 'b a'\n")
    messages = parse_template(with_examples, source="t.yaml").render(text="x y")
    assert [m["role"] for m in messages] == ["system", "user", "assistant", "user"]
    assert messages[1]["content"] == "Rewrite: a b" and messages[2]["content"] == "b a"


def test_builtin_answer_template_renders_input_only_when_given():
    template = builtin_template("answer")
    without = template.render(instruction="Say hi", input="")[-1]["content"]
    with_input = template.render(instruction="Translate", input="Bonjour")[-1]["content"]
    assert without == "Say hi"
    assert "Input:\nBonjour" in with_input


def test_unknown_builtin_lists_known_ones():
    with pytest.raises(ConfigError, match="answer"):
        builtin_template("does-not-exist")
