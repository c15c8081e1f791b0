"""Dry runs by simulation: the real command on a counting model, against real runs."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import jsonschema
import pytest
from test_evolve_cli import rewrite_responder

from evoforge.api import answer, evolve, select
from evoforge.commands.validate import validate
from evoforge.dry_run import DryRunPlan, parse_price, simulate
from evoforge.errors import ConfigError
from evoforge.llm.counting import CountingChatModel, minimal_instance, prompt_tokens
from evoforge.options import EngineOptions, EvolveOptions, SelectOptions
from evoforge.prompting import builtin_template
from helpers import write_jsonl

TOPICS = [
    "Explain why the sky looks blue at noon.",
    "Write a haiku about autumn rain in Kyoto.",
    "List three uses of baking soda in a kitchen.",
    "写一首关于秋雨的短诗。",
]


@pytest.fixture
def seeds(tmp_path: Path) -> Path:
    return write_jsonl(tmp_path / "seeds.jsonl", [{"id": f"s{i}", "instruction": t}
                                                  for i, t in enumerate(TOPICS)])  # fmt: skip


def per_operator(usage: dict[str, dict[str, int]]) -> dict[str, tuple[int, int]]:
    return {op: (stats["calls"], stats["prompt_tokens"]) for op, stats in usage.items()}


def planned(plan: DryRunPlan) -> dict[str, tuple[int, int]]:
    return {op: (one.calls, one.prompt_tokens) for op, one in plan.operators.items()}


def test_answer_plan_is_the_run_per_operator(fake_openai, seeds, tmp_path):
    options = EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True, cache=False)
    out = tmp_path / "out" / "answers.jsonl"
    plan = simulate(answer, seeds, out, options=options, price=(1.0, 2.0))
    assert fake_openai.hits == 0
    assert not out.parent.exists()  # the simulation wrote into a temporary folder
    summary = answer(seeds, out, options=options)
    assert planned(plan) == per_operator(summary.usage) == {"answer": (4, plan.prompt_tokens)}
    assert plan.calls == fake_openai.hits == 4
    assert plan.accepted == summary.accepted == 4
    assert plan.cost == pytest.approx((plan.prompt_tokens + 2 * plan.completion_tokens) / 1e6)
    assert "answer" in plan.render() and "no model was called" in plan.render()


def test_one_evolve_round_without_the_judge_is_the_run_per_operator(fake_openai, seeds, tmp_path):
    fake_openai.responder = rewrite_responder
    options = EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True, cache=False)
    # Without answers (an answer prompt quotes the evolved instruction, which the dry
    # run cannot know) and the final version only: the defaults before issue 14.
    evolution = EvolveOptions(
        rounds=1, judge=False, answers=False, final_only=True,
        ops="constraints=1,deepen=1,breadth=1",
    )  # fmt: skip
    out = tmp_path / "evolved.jsonl"
    plan = simulate(evolve, seeds, out, evolution=evolution, options=options)
    assert fake_openai.hits == 0
    summary = evolve(seeds, out, evolution=evolution, options=options)
    assert planned(plan) == per_operator(summary.usage)
    assert len(plan.operators) > 1  # the ops are drawn per seed, the same in both
    assert plan.calls == summary.accepted == 4


def test_rounds_after_the_first_make_the_same_calls(fake_openai, seeds, tmp_path):
    """Later prompts quote the model's replies, so their tokens differ; the calls do not
    when nothing is rejected (a seed in Chinese included: the counting replies pass the
    script check)."""
    fake_openai.responder = rewrite_responder
    options = EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True, cache=False)
    evolution = EvolveOptions(rounds=3, answers=True)
    plan = simulate(evolve, seeds, tmp_path / "e.jsonl", evolution=evolution, options=options)
    assert (plan.calls, plan.rejected) == (4 * 3 * 3, 0)
    # The scripted rewriter answers in English, which the script check rejects for the
    # Chinese seed: the run is compared on the others.
    latin = write_jsonl(tmp_path / "latin.jsonl", [{"instruction": t} for t in TOPICS[:3]])
    plan = simulate(evolve, latin, tmp_path / "e.jsonl", evolution=evolution, options=options)
    summary = evolve(latin, tmp_path / "e.jsonl", evolution=evolution, options=options)
    assert summary.rejected == 0
    assert {op: c for op, (c, _) in planned(plan).items()} == {
        op: c for op, (c, _) in per_operator(summary.usage).items()
    }
    assert plan.calls == fake_openai.hits == 3 * 3 * 3


def test_select_and_validate_report_their_judges(fake_openai, seeds, tmp_path):
    options = EngineOptions(llm=f"openai:m@{fake_openai.base_url}", quiet=True, cache=False)
    answered = tmp_path / "answered.jsonl"
    answer(seeds, answered, options=options)
    calls = fake_openai.hits
    scored = simulate(
        select, answered, tmp_path / "selected.jsonl", selection=SelectOptions(method="alpagasus"),
        options=options,
    )  # fmt: skip
    assert scored.calls == 4 and scored.command == "select"
    assert scored.accepted == 4  # the highest rating of the schema's enum passes min_score
    judged = simulate(validate, str(answered), checks="schema,rubric", options=options)
    assert judged.calls == 4 and judged.rejected == 4  # an unbounded score is 1: under the bar
    assert fake_openai.hits == calls
    assert not (tmp_path / "selected.jsonl").exists()


def test_a_command_without_a_model_is_refused():
    from evoforge.api import dedup

    with pytest.raises(ConfigError, match="calls no model"):
        simulate(dedup, "x.jsonl")


def test_the_counting_model_answers_every_builtin_schema():
    """Each template's schema gets a valid instance, and counted tokens are the fake
    server's (words over the messages)."""
    model = CountingChatModel()
    schemas = 0
    for path in sorted(Path(builtin_template("answer").source).parent.glob("[!_]*.yaml")):
        template = builtin_template(path.stem)
        messages = template.render(**{name: "some text" for name in template.variables})
        reply = asyncio.run(model.complete(messages, schema=template.output_schema))
        assert reply.usage.prompt_tokens == prompt_tokens(messages)
        assert reply.usage.prompt_tokens == sum(len(m["content"].split()) for m in messages)
        if template.output_schema is not None:
            jsonschema.validate(json.loads(reply.text), template.output_schema)
            schemas += 1
        else:
            assert reply.text.strip()
    assert schemas >= 10
    assert model.identity["backend"] == "counting"


def test_minimal_instances_are_small_distinct_and_valid():
    schema = {
        "type": "object",
        "required": ["question", "answer", "pieces", "verdict", "nested"],
        "properties": {
            "question": {"type": "string", "minLength": 3},
            "answer": {"type": "string"},
            "pieces": {"type": "array", "items": {"type": "integer"}, "minItems": 2},
            "verdict": {"enum": ["yes", "no"]},
            "nested": {"type": "object", "properties": {"n": {"type": "number", "minimum": 5}}},
        },
    }
    reply = asyncio.run(CountingChatModel().complete([{"role": "user", "content": "hi"}],
                                                     schema=schema))  # fmt: skip
    value = json.loads(reply.text)
    jsonschema.validate(value, schema)
    assert value["question"] != value["answer"]
    assert value["pieces"] == [1, 2] and value["verdict"] == "yes" and value["nested"] == {"n": 5}
    assert minimal_instance({"type": "string", "minLength": 3}) == "xxx"  # the fake server's


def test_price_parsing():
    assert parse_price("0.15,0.6") == (0.15, 0.6)
    assert parse_price("2") == (2.0, 2.0)
    with pytest.raises(ConfigError, match="IN_PER_1M"):
        parse_price("-1")
