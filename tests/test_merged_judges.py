"""Merged RAG judges (issue 19): one call judges grounded, answerable and information gain,
and a judge that answers each criterion the same way gives the same verdicts merged and
separate (same reason codes, details, fixed records, rejections)."""

from __future__ import annotations

import asyncio
import itertools
import json
from pathlib import Path

import pytest

from evoforge import EngineOptions, RagOptions, rag
from evoforge.engine.client import LLMClient
from evoforge.engine.runner import RecordContext, Rejection
from evoforge.errors import ConfigError
from evoforge.prompting import builtin_template
from evoforge.records import Record
from evoforge.testing.scripted import ScriptedChatModel
from evoforge.validators.critics import CriticPanel
from evoforge.validators.critics.merged import critics_for, merged_critics, resolve_critic_calls
from helpers import prompt_parts, rag_responder

CONTEXT_1 = (
    "The Amazon rainforest covers about 5.5 million square kilometres, most of it in Brazil. "
    "It produces a large share of the world's river discharge through the Amazon River."
)
CONTEXT_2 = "The Congo rainforest is the second largest tropical forest, in Central Africa."
QUESTION = "How large is the Amazon rainforest, and which country holds most of it?"
REFERENCE = "About 5.5 million square kilometres, most of it in Brazil."
SEED_QUESTION = "How large is the Amazon rainforest?"
FIXED_QUESTION = "How large is the Amazon rainforest in square kilometres?"


class PerCriterionJudge:
    """A judge that decides each criterion from the sample alone, and answers the separate
    prompts and the merged one with the same verdicts and reasons."""

    def __init__(self, grounded: bool, answerable: bool, not_equal: bool | None) -> None:
        self.grounded = grounded
        self.answerable = answerable
        self.not_equal = not_equal  # None: a reply that is neither Equal nor Not Equal

    def verdicts(self, question: str) -> dict[str, tuple[str, str]]:
        fixed = FIXED_QUESTION in question  # the rewrite fixes every criterion
        grounded = self.grounded or fixed
        answerable = self.answerable or fixed
        equal = {True: "Not Equal", False: "Equal", None: "Maybe"}[self.not_equal or fixed]
        return {
            "grounded": ("yes" if grounded else "no", f"grounded={grounded}"),
            "answerable": ("yes" if answerable else "no", f"answerable={answerable}"),
            "information_gain": (equal, f"equal={equal}"),
        }

    def reply(self, messages, _n) -> str:
        system, user = prompt_parts(messages)
        said = self.verdicts(user)
        if "several criteria" in system:
            keys = ["grounded", "answerable"]
            keys += ["information_gain"] if "Seed question:" in user else []
            reply = {}
            for key in keys:
                reply.update({key: said[key][0], f"{key}_reason": said[key][1]})
            return json.dumps(reply)
        if "fact checker" in system:
            return json.dumps({"verdict": said["grounded"][0], "reason": said["grounded"][1]})
        if "reviewer of questions" in system:
            return json.dumps({"verdict": said["answerable"][0], "reason": said["answerable"][1]})
        if "compare two prompts" in system:
            return said["information_gain"][0]
        if "You repair samples" in system:
            return json.dumps({"question": FIXED_QUESTION, "reference": REFERENCE})
        raise AssertionError(f"unexpected prompt: {system[:60]}")


def sample(kind: str) -> Record:
    fields = {
        "user_input": QUESTION,
        "reference": REFERENCE,
        "reference_contexts": [CONTEXT_1, CONTEXT_2],
        "synthesizer_name": kind,
    }
    meta = {"seed_question": SEED_QUESTION if kind != "simple" else QUESTION}
    return Record("rag", fields, id="r0", meta=meta)


def outcome(critics, judge: PerCriterionJudge, record: Record, rewrite_once: bool):
    model = ScriptedChatModel(judge.reply)
    panel = CriticPanel(critics, rewrite_once=rewrite_once)
    got = asyncio.run(panel.review(record, RecordContext(LLMClient(model), 0, record.id)))
    if isinstance(got, Rejection):
        return ("rejected", got.id, got.reason, got.detail), model.call_count
    return ("kept", got.id, got.fields, got.meta), model.call_count


CASES = list(itertools.product([True, False], [True, False], [True, False, None]))


@pytest.mark.parametrize("kind", ["reasoning", "simple"])
@pytest.mark.parametrize("rewrite_once", [False, True])
@pytest.mark.parametrize(("grounded", "answerable", "not_equal"), CASES)
def test_a_per_criterion_judge_gives_identical_verdicts_merged_and_separate(
    kind, rewrite_once, grounded, answerable, not_equal
):
    judge = PerCriterionJudge(grounded, answerable, not_equal)
    separate, separate_calls = outcome(critics_for("separate"), judge, sample(kind), rewrite_once)
    merged, merged_calls = outcome(merged_critics(), judge, sample(kind), rewrite_once)
    assert merged == separate
    # one judge call per review instead of up to three (two for a simple question)
    assert merged_calls <= separate_calls


def test_an_all_passing_rewrite_costs_one_judge_call_instead_of_three():
    judge = PerCriterionJudge(True, True, True)
    _, separate_calls = outcome(critics_for("separate"), judge, sample("reasoning"), True)
    _, merged_calls = outcome(merged_critics(), judge, sample("reasoning"), True)
    assert (separate_calls, merged_calls) == (3, 1)


def test_a_merged_reply_missing_a_criterion_is_a_schema_mismatch_like_its_own_judge():
    reply = json.dumps({"grounded": "yes", "grounded_reason": "ok", "answerable_reason": "?"})
    model = ScriptedChatModel(lambda _m, _n: reply)
    record = sample("simple")
    panel = CriticPanel(merged_critics(), rewrite_once=False)
    got = asyncio.run(panel.review(record, RecordContext(LLMClient(model), 0, record.id)))
    assert isinstance(got, Rejection)
    assert got.reason == "schema_mismatch" and "answerable" in got.detail


@pytest.mark.parametrize("prompt", ["critic_rag_judge", "critic_rag_judge_evolved"])
def test_the_merged_reply_schemas_are_flat_so_the_embedded_model_is_guided(prompt):
    from evoforge.llm.local.guided_json import _JsonScaffold

    schema = builtin_template(prompt).output_schema
    assert _JsonScaffold.for_schema(schema, max_tokens=360) is not None
    assert schema["required"][:4] == ["grounded", "grounded_reason", "answerable",
                                      "answerable_reason"]  # fmt: skip


def test_a_screen_failure_makes_no_judge_call_merged():
    model = ScriptedChatModel(lambda _m, _n: pytest.fail("no call expected"))
    record = sample("reasoning")
    record.fields["reference_contexts"] = []
    panel = CriticPanel(merged_critics(), rewrite_once=False)
    got = asyncio.run(panel.review(record, RecordContext(LLMClient(model), 0, record.id)))
    assert isinstance(got, Rejection) and got.reason == "no_context"
    assert model.call_count == 0


def test_rag_merges_by_default_and_separate_gives_the_same_set(tmp_path):
    docs = Path(__file__).resolve().parent.parent / "examples" / "docs"
    runs = {}
    for calls in ("merged", "separate"):
        model = ScriptedChatModel(rag_responder)
        out = tmp_path / calls / "eval.jsonl"
        options = RagOptions(n=6, embedder="hashing", chunk_size=400, critic_calls=calls)
        engine = EngineOptions(cache=False, quiet=True)
        summary = rag([docs], out, rag=options, options=engine, model=model)
        manifest = json.loads(out.with_name("eval.manifest.json").read_text())
        runs[calls] = (out.read_text(), summary.accepted, manifest)
    assert runs["merged"][0] == runs["separate"][0]  # the same records, byte for byte
    merged, separate = runs["merged"][2], runs["separate"][2]
    assert set(merged["usage"]) & {"critic_grounded", "critic_answerable"} == set()
    assert (
        merged["usage"]["critic_merged"]["calls"] == separate["usage"]["critic_grounded"]["calls"]
    )
    assert merged["config"]["rag"]["critic_calls"] == "merged"
    assert "critic_rag_judge_evolved" in merged["config"]["prompts"]
    assert merged["efficiency"]["calls"] < separate["efficiency"]["calls"]
    assert merged["efficiency"]["calls_per_accepted"] < separate["efficiency"]["calls_per_accepted"]


def test_an_unknown_critic_calls_value_is_a_config_error(tmp_path):
    with pytest.raises(ConfigError, match="--critic-calls"):
        rag([tmp_path], tmp_path / "o.jsonl", rag=RagOptions(n=1, critic_calls="together"),
            model=ScriptedChatModel("x"))  # fmt: skip


class _Identified:
    def __init__(self, backend: str) -> None:
        self.identity = {"backend": backend, "model": "m"}


@pytest.mark.parametrize(
    ("value", "llm", "model", "expected"),
    [
        ("auto", "local", None, "separate"),  # the embedded model: each judge its own call
        ("auto", "openai:gpt-4o-mini", None, "merged"),
        ("auto", "openai:m@http://127.0.0.1:8000/v1", None, "merged"),
        ("auto", "local", _Identified("local"), "separate"),
        ("auto", "local", _Identified("scripted"), "merged"),
        ("auto", "local", _Identified("counting"), "separate"),  # a dry run plans --llm's
        ("auto", "openai:m", _Identified("counting"), "merged"),
        ("merged", "local", None, "merged"),
        ("separate", "openai:m", None, "separate"),
    ],
)
def test_auto_merges_except_on_the_embedded_model(value, llm, model, expected):
    assert resolve_critic_calls(value, llm, model) == expected
