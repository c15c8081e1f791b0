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


# Issue 19: the shared RAG preamble and the contexts-first layout.

RAG_TEMPLATES = (
    "rag_context_score", "rag_keyphrases", "rag_seed_question", "rewrite_compress",
    "rewrite_conditional", "rewrite_conversational", "rewrite_reasoning",
    "rewrite_multi_context", "critic_grounded", "critic_answerable", "critic_rag_judge",
    "critic_rag_judge_evolved", "rag_fix",
)  # fmt: skip

PREAMBLE_TEMPLATE = """
id: p
version: 1
variables: [context, question]
preamble: rag
examples:
  - variables: {context: "Bees dance.", question: "Do bees dance?"}
    output: {answer: "yes"}
messages:
  - role: user
    content: |-
      Contexts:
      [1] {{ context | trim }}

      Task:
      Answer.

      {{ examples }}

      Question: {{ question }}
"""


def test_a_preamble_template_starts_with_the_shared_message_and_writes_its_examples_inline():
    from evoforge.prompting import examples_text, preambles

    template = parse_template(PREAMBLE_TEMPLATE, source="p.yaml")
    messages = template.render(context="  The hive is warm.\n", question="Is it warm?")
    assert [m["role"] for m in messages] == ["system", "user"]  # no example turns
    assert messages[0]["content"] == preambles()["rag"]
    user = messages[1]["content"]
    assert user.startswith("Contexts:\n[1] The hive is warm.\n\nTask:\nAnswer.")
    assert examples_text(template.examples) in user
    assert 'Input: {"context": "Bees dance.", "question": "Do bees dance?"}' in user
    assert 'Reply: {"answer": "yes"}' in user
    assert user.index("Reply: ") < user.index("Question: Is it warm?")
    assert template.preamble == "rag" and template.inline_examples


def test_a_preamble_changes_the_content_hash_and_its_misuse_is_named():
    plain = PREAMBLE_TEMPLATE.replace("preamble: rag\n", "")
    with_turns = parse_template(plain.replace("      {{ examples }}\n", ""), source="x.yaml")
    assert with_turns.preamble is None and not with_turns.inline_examples
    assert (
        parse_template(PREAMBLE_TEMPLATE, source="p.yaml").content_hash
        != parse_template(plain, source="p.yaml").content_hash
    )
    with pytest.raises(ConfigError, match=r'p.yaml: field "preamble": no preamble \'nope\''):
        parse_template(
            PREAMBLE_TEMPLATE.replace("preamble: rag", "preamble: nope"), source="p.yaml"
        )
    own_system = PREAMBLE_TEMPLATE.replace(
        "messages:\n", "messages:\n  - role: system\n    content: Mine.\n"
    )
    with pytest.raises(ConfigError, match="a template with a preamble has no system message"):
        parse_template(own_system, source="p.yaml")
    with pytest.raises(ConfigError, match=r"writes its examples in a message with \{\{ examples"):
        parse_template(PREAMBLE_TEMPLATE.replace("      {{ examples }}\n", ""), source="p.yaml")
    no_examples = (
        PREAMBLE_TEMPLATE.split("examples:\n")[0]
        + PREAMBLE_TEMPLATE.split('output: {answer: "yes"}\n')[1]
    )
    with pytest.raises(ConfigError, match=r"uses \{\{ examples \}\} but there are no examples"):
        parse_template(no_examples, source="p.yaml")


def test_a_declared_examples_variable_is_still_a_variable():
    """backtranslate_instruction.yaml passes curated pairs as a variable named examples."""
    template = builtin_template("backtranslate_instruction")
    assert "examples" in template.variables and not template.inline_examples


def test_every_rag_template_opens_with_the_same_tokens_up_to_the_end_of_the_chunk():
    """The property issue 19 asks of the layout: every call over one chunk, whatever
    its task, starts with the same tokens (preamble, then the chunk), so a provider's
    prefix cache serves them; the judges' numbered contexts give the same start."""
    from evoforge.prompting import preambles, rag_prompt
    from evoforge.testing.fake_prefix_cache import prompt_words
    from evoforge.validators.critics.sample import numbered_contexts

    chunk = "The Lena river freezes in October. " * 40
    second = "The Ob river is longer than the Lena. " * 10
    values = {
        "context": chunk, "second_context": second, "contexts": numbered_contexts([chunk]),
        "question": "When does the Lena freeze?", "answer": "In October.",
        "reference": "In October.", "seed_question": "What of the Lena?", "max_words": 12,
        "keyphrase": "Lena", "persona": "", "style": "", "feedback": "unclear",
    }  # fmt: skip
    expected = prompt_words(
        [{"role": "system", "content": preambles()["rag"]},
         {"role": "user", "content": f"Contexts:\n[1] {chunk.strip()}"}]
    )  # fmt: skip
    for template_id in RAG_TEMPLATES:
        template = builtin_template(template_id)
        assert template.preamble == "rag", template_id
        messages = template.render(**{name: values[name] for name in template.variables})
        assert prompt_words(messages)[: len(expected)] == expected, template_id
        task, contexts = rag_prompt(messages)
        assert contexts[0] == chunk.strip(), template_id
        assert task.strip() and "Contexts:" not in task, template_id
        assert template.ref["prompt_id"] == f"{template_id}@v2"
