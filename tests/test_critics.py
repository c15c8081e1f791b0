"""RAG critics: each reason code, what each judge sees, and the panel's one bounded repair."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable

import pytest

from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection, Run
from evoforge.prompting import builtin_template, preambles
from evoforge.records import Record, schema_error
from evoforge.testing.scripted import ScriptedChatModel, rag_prompt
from evoforge.validators.base import Verdict
from evoforge.validators.critics import (
    Answerable,
    CriticPanel,
    Grounded,
    InformationGain,
    SelfContained,
    numbered_contexts,
)
from evoforge.validators.critics.verdicts import REASON_CHARS, Verdicts
from helpers import prompt_parts, read_jsonl

CONTEXT_1 = (
    "The Amazon rainforest covers about 5.5 million square kilometres, most of it in Brazil. "
    "It produces a large share of the world's river discharge through the Amazon River."
)
CONTEXT_2 = (
    "The Congo rainforest is the second largest tropical forest, about 3 million square "
    "kilometres, spread over six countries in Central Africa."
)
QUESTION = "How large is the Amazon rainforest, and which country holds most of it?"
REFERENCE = "About 5.5 million square kilometres, most of it in Brazil."
SEED_QUESTION = "How large is the Amazon rainforest?"

TURNS = [
    {"role": "user", "content": "Which country holds most of the Amazon rainforest?"},
    {"role": "assistant", "content": "Brazil."},
    {"role": "user", "content": "What does the text say about its size?"},
]


def rag(question=QUESTION, reference=REFERENCE, contexts=None, meta=None, **fields) -> Record:
    payload = {
        "user_input": question,
        "reference": reference,
        "reference_contexts": contexts if contexts is not None else [CONTEXT_1, CONTEXT_2],
        **fields,
    }
    return Record("rag", payload, id="r0", meta=dict(meta or {}))


# --- a scripted model that answers each prompt by what it is ---------------------------

PROMPT_MARKS = {
    "answerable": "strict reviewer of questions",
    "grounded": "strict fact checker",
    "fix": "You repair samples",
    "equal": "careful judge",
}


def prompt_kind(messages) -> str:
    system = prompt_parts(messages)[0]
    return next(kind for kind, mark in PROMPT_MARKS.items() if mark in system)


def verdict(word: str, reason: str = "checked") -> str:
    return json.dumps({"verdict": word, "reason": reason})


def scripted(**replies: str | Callable[[int], str]) -> ScriptedChatModel:
    """Replies per prompt kind; a callable gets how many times that kind was asked."""
    defaults = {"answerable": verdict("yes"), "grounded": verdict("yes"), "equal": "Not Equal"}
    table = {**defaults, **replies}
    asked: dict[str, int] = {}

    def reply(messages, _n):
        kind = prompt_kind(messages)
        asked[kind] = asked.get(kind, 0) + 1
        answer = table[kind]
        return answer(asked[kind]) if callable(answer) else answer

    return ScriptedChatModel(reply)


def kinds(model: ScriptedChatModel) -> list[str]:
    return [prompt_kind(call["messages"]) for call in model.calls]


def ctx_for(model: ScriptedChatModel, record: Record) -> RecordContext:
    return RecordContext(LLMClient(model), 0, record.id)


def review(critic, record: Record, model: ScriptedChatModel):
    return asyncio.run(critic.review(record, ctx_for(model, record)))


# --- SelfContained ---------------------------------------------------------------------


@pytest.mark.parametrize(
    "question",
    [
        "What does the context say about the rainy season?",
        "What is described in this passage?",
        "What does the passage claim about rivers?",
        "Why does the text mention Rome?",
        "What is this document about?",
        "What is the main point of the document?",
        "What does the article argue?",
        "What does the author believe about forests?",
        "Which of the above is true?",
        "Which river is mentioned above?",
        "Which of the following is correct?",
        "What does this section cover?",
        "What does the table show for 2020?",
        "What does the figure illustrate?",
        "What does the speaker want?",
        "How do context 1 and context 2 differ?",
        "What links Context 2 to the Amazon?",
        "According to THE PASSAGE, how large is it?",
    ],
)
def test_self_contained_fails_on_references_to_unseen_material(question):
    verdict_ = SelfContained().screen(rag(question))
    assert not verdict_.ok and verdict_.reason == "not_self_contained"
    assert "reader cannot see" in verdict_.detail


@pytest.mark.parametrize(
    "question",
    [
        "上文提到的河流有多长？",
        "文中的主人公是谁？",
        "本文讨论了什么问题？",
        "该文的主要观点是什么？",
        "这段话是什么意思？",
        "作者为什么这样认为？",
    ],
)
def test_self_contained_fails_on_chinese_references(question):
    assert SelfContained().screen(rag(question)).reason == "not_self_contained"


@pytest.mark.parametrize(
    "question",
    [
        "How do contextual embeddings improve retrieval?",
        "Why did wages rise in the textile industry?",
        "What did Tolkien write about the author's own childhood?",
        "Who is the author of Dune?",
        "In the context of the Cold War, why was Berlin divided?",
        "What happened to the river the following year?",
        "Who was the Speaker of the House in 1990?",
        "日本文化有什么特点？",
        "在中文中，猫字怎么写？",
        "《红楼梦》的作者是谁？",
        QUESTION,
    ],
)
def test_self_contained_passes_whole_words_and_named_referents(question):
    assert SelfContained().screen(rag(question)).ok


def test_self_contained_checks_every_user_turn_and_says_which():
    verdict_ = SelfContained().screen(rag(TURNS))
    assert verdict_.reason == "not_self_contained"
    assert verdict_.detail.startswith("user turn 2: the question says 'the text'")
    named = [
        {"role": "user", "content": "Which book did Tolkien publish in 1937?"},
        {"role": "assistant", "content": "The Hobbit."},
        {"role": "user", "content": "What did the author say inspired it?"},
    ]
    assert SelfContained().screen(rag(named)).ok  # the earlier turn names the author


def test_self_contained_makes_no_model_call():
    model = scripted()
    assert review(SelfContained(), rag("What does the passage say?"), model).reason
    assert model.call_count == 0


# --- Answerable ------------------------------------------------------------------------


def test_answerable_no_is_unanswerable_with_the_judges_reason():
    model = scripted(answerable=verdict("no", "The contexts do not give the forest's age."))
    out = review(Answerable(), rag("How old is the Amazon rainforest?"), model)
    assert (out.ok, out.reason) == (False, "unanswerable")
    assert "The contexts do not give the forest's age." in out.detail


@pytest.mark.parametrize("word", ["yes", "Yes", "YES"])
def test_answerable_yes_passes_in_any_case(word):
    model = scripted(answerable=verdict(word))
    assert review(Answerable(), rag(), model).ok
    assert model.call_count == 1


def test_answerable_judge_sees_every_context_numbered_and_asks_for_json():
    model = scripted()
    review(Answerable(), rag(), model)
    call = model.calls[0]
    prompt = call["messages"][-1]["content"]
    assert numbered_contexts([CONTEXT_1, CONTEXT_2]) in prompt
    assert f"[1] {CONTEXT_1}\n\n[2] {CONTEXT_2}" in prompt and QUESTION in prompt
    assert call["schema"] == builtin_template("critic_answerable").output_schema
    assert call["params"]["temperature"] == 0.0 and call["params"]["max_tokens"] == 120
    # issue 19: the shared RAG preamble is the system message, the instructions the task
    assert call["messages"][0] == {"role": "system", "content": preambles()["rag"]}
    task, contexts = rag_prompt(call["messages"])
    assert contexts == [CONTEXT_1, CONTEXT_2]
    task = " ".join(task.split())  # the instructions are wrapped as a block of the user message
    assert "JSON only" in task and "any language" in task and "strictly" in task


def test_answerable_renders_turns_with_their_roles():
    model = scripted()
    review(Answerable(), rag(TURNS), model)
    prompt = model.calls[0]["messages"][-1]["content"]
    assert "user: Which country holds most of the Amazon rainforest?\nassistant: Brazil." in prompt


def test_answerable_without_context_text_fails_before_any_call():
    model = scripted()
    out = review(Answerable(), rag(contexts=["  "]), model)
    assert out.reason == "no_context" and model.call_count == 0


# --- Grounded --------------------------------------------------------------------------


def test_grounded_fails_lexically_without_a_model_call():
    invented = "It holds 390 billion trees of 16,000 species, says a 2013 survey."
    model = scripted()
    out = review(Grounded(), rag(reference=invented), model)
    assert (out.ok, out.reason) == (False, "ungrounded_reference")
    assert "% of the reference's content words" in out.detail and "'billion'" in out.detail
    assert out.score is not None and out.score < 0.5
    assert model.call_count == 0


def test_grounded_supported_reference_goes_to_the_judge():
    model = scripted()
    assert review(Grounded(), rag(), model).ok
    assert kinds(model) == ["grounded"]
    prompt = model.calls[0]["messages"][-1]["content"]
    assert REFERENCE in prompt and f"[2] {CONTEXT_2}" in prompt


def test_grounded_judge_no_fails():
    model = scripted(grounded=verdict("NO", "Brazil is not said to hold most of it."))
    out = review(Grounded(), rag(), model)
    assert out.reason == "ungrounded_reference"
    assert "Brazil is not said to hold most of it." in out.detail


def test_grounded_counts_cjk_characters_one_by_one():
    context = "光合作用主要在植物叶片的叶绿体中进行，需要光、水和二氧化碳。"
    grounded = rag("光合作用在哪里进行？", "在叶片的叶绿体中。", [context])
    invented = rag("光合作用在哪里进行？", "在火星表面的岩石里。", [context])
    assert Grounded().screen(grounded).ok
    assert Grounded().screen(invented).reason == "ungrounded_reference"


def test_grounded_threshold_is_configurable():
    fifth = rag(reference="Brazil holds 390 billion trees.")  # 1 of 5 content words found
    assert Grounded().screen(fifth).reason == "ungrounded_reference"
    assert Grounded(min_overlap=0.2).screen(fifth).ok


# --- InformationGain -------------------------------------------------------------------


def test_information_gain_equal_fails():
    model = scripted(equal="Equal")
    record = rag(meta={"seed_question": SEED_QUESTION})
    out = review(InformationGain(), record, model)
    assert out.reason == "no_information_gain"
    prompt = model.calls[0]["messages"][-1]["content"]
    assert prompt.index(SEED_QUESTION) < prompt.index(QUESTION)  # first = seed, second = rewrite


def test_information_gain_not_equal_passes():
    model = scripted(equal="Not Equal")
    assert review(InformationGain(), rag(meta={"seed_question": SEED_QUESTION}), model).ok


def test_information_gain_without_a_seed_question_passes_with_no_call():
    model = scripted()
    assert review(InformationGain(), rag(), model).ok
    assert model.call_count == 0


def test_information_gain_skips_the_simple_seed_itself():
    model = scripted(equal="Equal")
    record = rag(meta={"seed_question": SEED_QUESTION}, synthesizer_name="simple")
    assert review(InformationGain(), record, model).ok and model.call_count == 0


def test_information_gain_same_words_fail_without_a_call():
    model = scripted()
    record = rag("how LARGE is the  Amazon rainforest", meta={"seed_question": SEED_QUESTION})
    out = review(InformationGain(), record, model)
    assert out.reason == "no_information_gain" and model.call_count == 0


# --- CriticPanel -----------------------------------------------------------------------

FIXED_QUESTION = "How large is the Amazon rainforest, and in which country does most of it lie?"


def fix_reply(question: str = FIXED_QUESTION, reference: str = REFERENCE) -> str:
    return json.dumps({"question": question, "reference": reference})


def panel_review(record: Record, model: ScriptedChatModel, **kw):
    return asyncio.run(CriticPanel(**kw).review(record, ctx_for(model, record)))


def test_passing_sample_is_kept_with_the_names_of_its_critics_and_their_verdicts():
    model = scripted()
    record = rag(meta={"seed_question": SEED_QUESTION})
    out = panel_review(record, model)
    assert isinstance(out, Record) and out.id == "r0"
    share = Grounded().overlap(record)[0]
    assert out.meta["critics"] == {
        "passed": ["well_formed", "self_contained", "grounded", "answerable", "information_gain"],
        "verdicts": {  # the screens' scores and the judges' own words
            "well_formed": {"ok": True},
            "self_contained": {"ok": True},
            "grounded": {"ok": True, "score": round(share, 4), "reason": "checked"},
            "answerable": {"ok": True, "reason": "checked"},
            "information_gain": {"ok": True, "reason": "the judge: 'Not Equal'"},
        },
    }
    assert kinds(model) == ["grounded", "answerable", "equal"]
    assert "critics" not in record.meta  # the input is not changed


def test_kept_verdicts_are_compact_one_entry_per_critic():
    long_reason = "Every   claim\nis " + "supported by context one. " * 20
    model = scripted(grounded=verdict("yes", long_reason), equal="Hard to say, really")
    out = panel_review(rag(meta={"seed_question": SEED_QUESTION}), model)
    assert isinstance(out, Record)
    said = out.meta["critics"]["verdicts"]
    grounded = said["grounded"]["reason"]  # whitespace collapsed, cut with an ellipsis
    assert grounded.startswith("Every claim is supported by context one. supported")
    assert len(grounded) == REASON_CHARS and grounded.endswith("…")
    # a reply that is neither "Equal" nor "Not Equal" counts as not equal, and says so
    assert said["information_gain"] == {
        "ok": True,
        "reason": "the judge said neither Equal nor Not Equal: 'Hard to say, really'",
    }
    seen = Verdicts()  # a failing judge after a passing screen stays a failure
    seen.add("grounded", Verdict(True, score=0.75))
    seen.add("grounded", Verdict.failed("ungrounded_reference", "no support"))
    assert seen.compact() == {"grounded": {"ok": False, "score": 0.75, "reason": "no support"}}


def test_failing_sample_is_rewritten_once_with_the_feedback_then_passes():
    model = scripted(fix=fix_reply())
    record = rag("What does the passage say about the size of the Amazon rainforest?")
    out = panel_review(record, model)
    assert isinstance(out, Record)
    assert out["user_input"] == FIXED_QUESTION and out["reference"] == REFERENCE
    assert (out.id, out.parent_id) == ("r0/fix", "r0")
    assert out.lineage[-1]["op"] == "critic_fix"
    assert out.lineage[-1]["prompt_id"] == "rag_fix@v2"
    assert out.meta["critic_fix"]["reason"] == "not_self_contained"
    assert "critics" in out.meta and schema_error(out.to_json(), "rag") is None
    # the verdicts kept are the rewrite's: its screens passed this time
    assert out.meta["critics"]["verdicts"]["self_contained"] == {"ok": True}
    # The cheap check failed first: the fix was the first call, quoting the critic.
    assert kinds(model) == ["fix", "grounded", "answerable"]
    fix_prompt = model.calls[0]["messages"][-1]["content"]
    assert out.meta["critic_fix"]["feedback"] in fix_prompt
    assert "the question says 'the passage'" in fix_prompt
    assert f"[1] {CONTEXT_1}\n\n[2] {CONTEXT_2}" in fix_prompt


def test_sample_still_failing_after_the_rewrite_is_rejected_after_one_fix():
    model = scripted(
        answerable=verdict("no", "The age of the forest is not given."),
        fix=fix_reply("How old is the Amazon rainforest, in millions of years?"),
    )
    record = rag("How old is the Amazon rainforest?")
    out = panel_review(record, model)
    assert isinstance(out, Rejection)
    assert out.reason == "unanswerable" and out.detail.endswith("(after one rewrite)")
    assert kinds(model).count("fix") == 1
    assert kinds(model) == ["grounded", "answerable", "fix", "grounded", "answerable"]
    assert out.record is not None and out.record["lineage"][-1]["op"] == "critic_fix"


def test_conversational_fix_replaces_only_the_last_user_turn():
    new_turn = "How many square kilometres does the Amazon rainforest cover?"
    model = scripted(fix=fix_reply(f"user: {new_turn}"))
    out = panel_review(rag(TURNS), model)
    assert isinstance(out, Record)
    assert out["user_input"][:2] == TURNS[:2]
    assert out["user_input"][2] == {"role": "user", "content": new_turn}
    fix_prompt = model.calls[0]["messages"][-1]["content"]
    assert "user: Which country holds most of the Amazon rainforest?\nassistant: Brazil." in (
        fix_prompt
    )


def test_judge_returning_invalid_json_twice_is_a_rejection_not_a_crash():
    model = scripted(grounded="I think it is fine.")
    out = panel_review(rag(), model)
    assert isinstance(out, Rejection) and out.reason == "invalid_json"
    assert kinds(model) == ["grounded", "grounded"]  # the engine's one re-ask, no fix


def test_without_rewrite_once_the_first_failure_is_the_rejection():
    model = scripted(fix=fix_reply())
    out = panel_review(rag("What does the passage say?"), model, rewrite_once=False)
    assert isinstance(out, Rejection) and out.reason == "not_self_contained"
    assert model.call_count == 0 and not out.detail.endswith("(after one rewrite)")


def test_fix_that_leaves_the_questions_language_is_rejected():
    context = "光合作用主要在植物叶片的叶绿体中进行，需要光、水和二氧化碳。"
    model = scripted(fix=fix_reply("Where does photosynthesis happen?", "In chloroplasts."))
    out = panel_review(rag("文中说光合作用在哪里进行？", "在叶绿体中。", [context]), model)
    assert isinstance(out, Rejection) and out.reason == "language_drift"
    assert out.detail.endswith("(after one rewrite)") and model.call_count == 1


def test_panel_as_a_task_writes_every_rejection_with_its_reason(tmp_path):
    records = [
        Record("rag", rag().fields, id="ok"),
        Record("rag", rag(contexts=[""]).fields, id="empty"),
    ]
    model = scripted()
    run = Run(
        command="critics", task=CriticPanel(), kind="rag", config={},
        client=LLMClient(model), out=tmp_path / "out.jsonl",
    )  # fmt: skip
    summary = asyncio.run(run.execute(records))
    out = read_jsonl(tmp_path / "out.jsonl")
    rejects = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert [r["id"] for r in out] == ["ok"] and out[0]["meta"]["critics"]["passed"]
    # No context cannot be fixed by a rewrite: rejected at once.
    assert summary.rejected_by_reason == {"no_context": 1}
    assert rejects[0]["id"] == "empty" and rejects[0]["record"]["reference"] == REFERENCE


def test_well_formed_rejects_titles_and_echoes():
    from evoforge.validators.critics import WellFormed

    def sample(question, reference="The press spread printing across Europe."):
        return Record(
            "rag",
            {"user_input": question, "reference": reference, "reference_contexts": ["c"]},
            id="w",
        )

    assert WellFormed().check(sample("The Printing Press")).reason == "not_a_question"
    echo = sample(
        "The press spread printing across Europe", "The press spread printing across Europe."
    )
    assert WellFormed().check(echo).reason == "not_a_question"
    assert WellFormed().check(sample("Who built the first printing press in Mainz?")).ok


# --- the rubric critic --------------------------------------------------------------------

ANSWER = Record(
    "instruction",
    {"instruction": "Name the largest rainforest.", "output": "The Amazon rainforest."},
    id="i0",
)


def rubric_reply(score, reason: str = "It answers the question.") -> ScriptedChatModel:
    return ScriptedChatModel(json.dumps({"score": score, "reason": reason}))


def test_rubric_critic_passes_at_the_threshold_and_shows_the_judge_the_rubric():
    from evoforge.validators.critics import RubricCritic

    model = rubric_reply(4)
    critic = RubricCritic(rubric="The answer names one rainforest.", scale=(1, 5), threshold=4)
    verdict_ = review(critic, ANSWER, model)
    assert verdict_.ok and verdict_.score == 4.0 and verdict_.detail == "It answers the question."
    (call,) = model.calls
    prompt = call["messages"][-1]["content"]
    assert "The answer names one rainforest." in prompt and "from 1 (fails" in prompt
    assert "Instruction:\nName the largest rainforest." in prompt
    assert "Response:\nThe Amazon rainforest." in prompt
    assert call["schema"]["required"] == ["score", "reason"]


def test_rubric_critic_below_the_threshold_fails_with_the_judges_reason():
    from evoforge.validators.critics import RubricCritic

    model = rubric_reply(2.5, "It names a river, not a rainforest.")
    verdict_ = review(RubricCritic(scale=(0, 10), threshold=6, reason="weak_answer"), rag(), model)
    assert not verdict_.ok and verdict_.reason == "weak_answer" and verdict_.score == 2.5
    assert verdict_.detail == "score 2.5 < 6 (scale 0-10): It names a river, not a rainforest."
    prompt = model.calls[0]["messages"][-1]["content"]
    assert f"Contexts:\n[1] {CONTEXT_1}" in prompt and f"Answer:\n{REFERENCE}" in prompt


def test_rubric_critic_unparseable_rating_is_a_failure_that_quotes_the_reply():
    from evoforge.validators.critics import RubricCritic

    # Valid JSON, but the score is off the 1-5 scale.
    verdict_ = review(RubricCritic(), ANSWER, rubric_reply(9, "Brilliant."))
    assert not verdict_.ok and verdict_.reason == "unparseable_rating"
    assert "no score from 1 to 5" in verdict_.detail and "Brilliant." in verdict_.detail


def test_rubric_critic_rejects_a_threshold_off_its_scale():
    from evoforge.errors import ConfigError
    from evoforge.validators.critics import RubricCritic

    with pytest.raises(ConfigError, match="off the scale"):
        RubricCritic(scale=(1, 5), threshold=7)


def test_load_rubric_reads_text_or_yaml(tmp_path):
    from evoforge.errors import ConfigError
    from evoforge.validators.critics import load_rubric

    text = tmp_path / "rubric.txt"
    text.write_text("The answer is polite.\n", encoding="utf-8")
    assert load_rubric(text).rubric == "The answer is polite."
    spec = tmp_path / "rubric.yaml"
    spec.write_text("rubric: Cites a source.\nscale: [0, 3]\nthreshold: 2\n", encoding="utf-8")
    critic = load_rubric(spec)
    assert (critic.rubric, critic.scale, critic.threshold) == ("Cites a source.", (0, 3), 2)
    spec.write_text("rubric: x\nthreshhold: 2\n", encoding="utf-8")
    with pytest.raises(ConfigError, match="unknown: threshhold"):
        load_rubric(spec)


def test_the_yes_no_and_equality_checks_read_replies_through_the_rubric_path():
    from evoforge.llm.base import Completion
    from evoforge.validators.critics import EQUAL_VERDICTS, YES_NO, read_rating

    scale = (0.0, 1.0)
    yes = Completion("", parsed={"verdict": "Yes", "reason": "all there"})
    assert read_rating(yes, scale, YES_NO) == (1.0, "all there")
    assert read_rating(Completion("Not Equal."), scale, EQUAL_VERDICTS) == (1.0, "Not Equal.")
    assert read_rating(Completion("Equal"), scale, EQUAL_VERDICTS)[0] == 0.0
    assert read_rating(Completion("两者相等"), scale, EQUAL_VERDICTS)[0] == 0.0
    assert read_rating(Completion("Hard to say."), scale, EQUAL_VERDICTS)[0] is None
