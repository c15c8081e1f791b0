"""The rule-based checks behind Evol-Instruct's elimination and the question critics."""

from __future__ import annotations

import pytest

from evoforge.validators.heuristics import (
    context_reference,
    empty_answer,
    language_drift,
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
