"""The rule-based checks behind Evol-Instruct's elimination and the question critics."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from evoforge.validators.heuristics import (
    answer_not_instruction,
    context_reference,
    empty_answer,
    language_drift,
    meta_comment,
    prompt_leak,
    refusal,
    too_long,
    word_count,
)


def test_refusal_under_80_words_fails_at_or_over_80_passes():
    short = "Sorry, I cannot help with that request."
    assert refusal(short).reason == "refusal"
    assert refusal("Sorry for the wait. " + "word " * 76).ok  # 80 words
    assert refusal("I apologise " + "word " * 10).reason == "refusal"
    assert refusal("抱歉，我无法回答这个问题。").reason == "refusal"
    assert refusal("A plain answer without apologies.").ok


def test_empty_answer_is_only_punctuation_and_stop_words():
    assert empty_answer(" ... !? ").reason == "empty_answer"
    assert empty_answer("It is the, and a.").reason == "empty_answer"
    assert empty_answer("的了。").reason == "empty_answer"
    assert empty_answer("Tokyo.").ok
    assert empty_answer("东京。").ok


@pytest.mark.parametrize(
    "text", ["#Rewritten Prompt#: Explain X", "The given prompt asks for...", "Created Prompt: x"]
)
def test_prompt_leak(text):
    assert prompt_leak(text).reason == "prompt_leak"


def test_no_leak_in_plain_text():
    assert prompt_leak("Explain the water cycle in three steps.").ok


def test_context_reference():
    assert context_reference("Based on the context, who won?").reason == "context_reference"
    assert context_reference("根据上下文，谁赢了？").reason == "context_reference"
    assert context_reference("Who won the 1998 final?").ok


def test_words_count_cjk_characters_about_1_7_to_a_word():
    assert word_count("我爱北京 hello world") == 2 + 3  # four characters, ceil(4 / 1.7)
    assert word_count("这是一个大约十九个汉字组成的中文问题吗") == 12  # ceil(19 / 1.7)
    assert too_long("one two three", max_words=3).ok
    assert too_long("one two three four", max_words=3).reason == "too_long"


def test_language_drift_compares_scripts():
    chinese = "请写一首关于秋天的诗。"
    assert language_drift(chinese, "Write a poem about autumn.").reason == "language_drift"
    assert language_drift(chinese, "请写一首关于秋天落叶的五言诗，并解释其意象。").ok
    # Code a rewrite adds does not count as drift while Chinese still carries the text.
    assert language_drift(chinese, "请用 Python 写一个函数 autumn_poem() 生成关于秋天的诗。").ok
    assert language_drift("Name a planet.", "Назовите планету.").reason == "language_drift"
    assert language_drift("2 + 2?", "4").ok  # too few letters to judge


# Issue 14, item 9: evolution sanity on weak models.

FIXTURES = Path(__file__).resolve().parent / "fixtures"


def _fixture(name):
    lines = (FIXTURES / name).read_text("utf-8").splitlines()
    return [json.loads(line) for line in lines if line.strip()]


def _rejected(text):
    for rule in (answer_not_instruction, meta_comment):
        verdict = rule(text)
        if not verdict.ok:
            return verdict.reason
    return None


def test_answer_and_meta_comment_rules_are_precise_on_legitimate_instructions():
    legit, bad = _fixture("instructions_legit.jsonl"), _fixture("instructions_bad.jsonl")
    assert len(legit) >= 30
    assert sum(row["instruction"].startswith("Here's a table") for row in legit) >= 3
    false_positives = [row["id"] for row in legit if _rejected(row["instruction"])]
    true_positives = [row for row in bad if _rejected(row["instruction"]) == row["expected"]]
    flagged = len(false_positives) + len(true_positives)
    precision = len(true_positives) / flagged
    recall = len(true_positives) / len(bad)
    assert precision >= 0.95, false_positives
    assert recall >= 0.9, [row["id"] for row in bad if row not in true_positives]


def test_an_evolution_that_is_an_answer_or_a_comment_is_eliminated():
    from evoforge.evolvers.evol_instruct import ELIMINATION

    answer = "Here's a solution:\n```python\nprint(sum(range(10)))\n```\nIt adds the numbers."
    record = {"instruction": answer, "meta": {"instruction_chain": ["Add 0 to 9 in Python."]}}
    assert ELIMINATION.verdict(record).reason == "answer_not_instruction"
    record["instruction"] = "This task requires knowledge of loops and of Python's sum."
    assert ELIMINATION.verdict(record).reason == "meta_comment"
    record["instruction"] = "Here's a table of sales. Which month sold the most units?"
    assert ELIMINATION.verdict(record).ok


def test_the_two_rules_are_registered_checks():
    from evoforge.validators.checks import check_step, parse_checks

    assert parse_checks("schema,answer_not_instruction,meta_comment")
    verdict = check_step("meta_comment").verdict({"instruction": "I have added a constraint."})
    assert verdict.reason == "meta_comment"
