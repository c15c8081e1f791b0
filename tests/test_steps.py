"""The step contract: one Rejection, Result, the registries, checks as steps."""

from __future__ import annotations

import ast
import asyncio
import json
from pathlib import Path

import pytest

import evoforge.steps
from evoforge.engine import runner
from evoforge.errors import ConfigError
from evoforge.evolvers.base import OpNames, parse_weights
from evoforge.evolvers.evol_instruct import OPS
from evoforge.evolvers.evol_quality import QUALITY_OPS
from evoforge.evolvers.ragas_rewrites import REWRITE_OPS
from evoforge.records import Record
from evoforge.registry import KINDS, Registry, lookup, names, register, registry, resolve
from evoforge.steps import RecordStep, Rejection, Result
from evoforge.validators.base import Check, Verdict
from evoforge.validators.checks import CHECK_STEPS, CheckSettings, ValidatorChain, parse_checks

RECORD = {"id": "r1", "kind": "instruction", "instruction": "Name a colour.", "output": "Blue."}


def test_rejection_json_keeps_todays_keys_and_adds_new_ones_only_when_set():
    plain = Rejection("r1", "refusal", "says sorry", RECORD)
    assert list(plain.to_json()) == ["id", "reason", "detail", "record"]
    assert plain.to_json() == {"id": "r1", "reason": "refusal", "detail": "says sorry",
                               "record": RECORD}  # fmt: skip
    located = Rejection("r1", "duplicate", "same text", None, step="dedup.exact",
                        field="$.output", lost_to="r0")  # fmt: skip
    assert located.to_json() == {"id": "r1", "reason": "duplicate", "detail": "same text",
                                 "record": None, "step": "dedup.exact", "field": "$.output",
                                 "lost_to": "r0"}  # fmt: skip
    assert list(Rejection("a", "b", "c", step="check.x").to_json()) == [
        "id", "reason", "detail", "record", "step"
    ]  # fmt: skip


def test_rejection_of_a_record_and_result_helpers():
    record = Record.from_json(RECORD)
    rejection = Rejection.of(record, "too_short", "2 words", step="check.length")
    assert (rejection.id, rejection.record, rejection.step) == ("r1", record.to_json(),
                                                                "check.length")  # fmt: skip
    assert Result.accept(record).records == [record]
    assert Result.reject(record, "too_short", "2 words").rejections == [
        Rejection("r1", "too_short", "2 words", record.to_json())
    ]


def test_the_engine_uses_the_one_rejection():
    assert runner.Rejection is Rejection and runner.Result is Result


def test_steps_imports_no_engine():
    tree = ast.parse(Path(evoforge.steps.__file__).read_text("utf-8"))
    imported = [
        node.module if isinstance(node, ast.ImportFrom) else alias.name
        for node in ast.walk(tree)
        if isinstance(node, (ast.Import, ast.ImportFrom))
        for alias in node.names
    ]
    assert not [name for name in imported if name and name.startswith("evoforge.engine")]


@pytest.mark.parametrize("kind", KINDS)
def test_every_built_in_step_resolves(kind):
    assert names(kind), kind
    for name in names(kind):
        assert lookup(kind, name) is not None


def test_built_in_names():
    assert names("check")[:7] == ["schema", "length", "refusal", "empty", "leak", "language",
                                  "lima"]  # fmt: skip
    screens = {"self_contained", "well_formed", "grounded_overlap", "has_context",
               "information_gain"}  # fmt: skip
    assert {"evol_instruct", "evol_quality", "rewrite", *screens} <= set(names("check"))
    assert names("selector") == ["deita", "alpagasus", "kcenter", "random", "ifd", "mining",
                                 "memorisation", "lima", "balanced"]  # fmt: skip
    assert names("dedup") == ["exact", "minhash", "semantic"]
    evolvers = names("evolver")
    assert [*OPS, *QUALITY_OPS] == evolvers[:11]
    assert [f"rewrite_{op}" for op in REWRITE_OPS] == evolvers[11:]


def test_evolver_ops_carry_their_family_and_prompt():
    for name in OPS:
        op = lookup("evolver", name)
        assert (op.family, op.name) == ("evol_instruct", name)
        assert op.prompt().id == f"evol_{name}"
    assert lookup("evolver", "breadth").depth == "in-breadth"
    assert lookup("evolver", "details").prompt().id == "evol_quality_details"
    compress = lookup("evolver", "rewrite_compress")
    assert (compress.family, compress.name, compress.max_words) == ("rewrite", "compress", 15)


def test_op_names_are_the_same_tuples_as_before():
    assert OPS == ("constraints", "deepen", "concretize", "reasoning", "complicate_input",
                   "breadth")  # fmt: skip
    assert repr(QUALITY_OPS) == repr(("helpfulness", "relevance", "depth", "creativity",
                                      "details"))  # fmt: skip
    assert json.dumps(REWRITE_OPS) == json.dumps(list(REWRITE_OPS))
    assert isinstance(OPS, OpNames) and OPS.family == "evol_instruct"


def test_unknown_names_say_what_is_known():
    with pytest.raises(ConfigError, match=r"unknown check 'refusl'; did you mean 'refusal'\?"):
        lookup("check", "refusl")
    with pytest.raises(ConfigError, match="unknown selector 'x'; known selectors: deita, "):
        lookup("selector", "x")
    with pytest.raises(ConfigError, match="unknown step kind 'checks'; did you mean 'check'"):
        registry("checks")
    with pytest.raises(ConfigError, match="did you mean 'constraints'"):
        parse_weights("constraint=1", OPS)


def test_register_and_unregister_a_step_and_a_lazy_target():
    register("check", "also_refusal", "evoforge.validators.checks:CHECK_STEPS.refusal")
    try:
        assert lookup("check", "also_refusal") is CHECK_STEPS["refusal"]
        assert names("check")[-1] == "also_refusal"
        assert parse_checks("schema,also_refusal") == ["schema", "also_refusal"]
    finally:
        evoforge.steps.unregister("check", "also_refusal")
    assert "also_refusal" not in names("check")


def test_a_plain_function_is_a_check():
    def short(record, settings):
        return Verdict.failed("short", "too short") if len(record["output"]) < 6 else Verdict(True)

    register("check", "short_answer", short)
    try:
        chain = ValidatorChain(["schema", "short_answer"])
        rejection = chain.rejection(RECORD)
        assert rejection.to_json()["step"] == "check.short_answer"
        assert rejection.field == "$"
        assert chain.counts == {"short": 1}
    finally:
        evoforge.steps.unregister("check", "short_answer")


def test_a_private_registry_keeps_built_ins_first():
    mine = Registry("selector")
    mine.add("first", print)
    assert mine.names()[-1] == "first" and mine.lookup("first") is print
    with pytest.warns(UserWarning, match="the built-in one is used"):
        mine.add("random", print)
    assert mine.lookup("random").__name__ == "select_random"
    assert resolve("evoforge.validators.checks:CHECK_STEPS.lima").name == "lima"


@pytest.mark.parametrize(
    ("name", "record", "reason", "field"),
    [
        ("refusal", {**RECORD, "output": "Sorry, I can't help with that."}, "refusal", "$.output"),
        ("context_reference", {"id": "q", "kind": "qa", "question": "Based on the context, why?",
                               "answer": "Because."}, "context_reference", "$.question"),
        ("schema", {"id": "x", "kind": "instruction"}, "schema_invalid", "$"),
        ("evol_instruct", {**RECORD, "meta": {"instruction_chain": ["name a colour."]}},
         "no_information_gain", "$.instruction"),
        ("evol_instruct", {**RECORD, "output": "   "}, "empty_answer", "$.output"),
        ("evol_quality", {**RECORD, "meta": {"response_chain": ["blue."]}},
         "no_information_gain", "$.output"),
        ("evol_quality", {**RECORD, "output": ""}, "no_answer", "$.output"),
        ("rewrite", {"id": "q", "kind": "qa", "question": "Based on the context, why?",
                     "answer": "It says so."}, "context_reference", "$.question"),
        ("self_contained", {"id": "q", "kind": "rag", "user_input": "What does the passage say?",
                            "reference": "x", "reference_contexts": ["x"]},
         "not_self_contained", "$.user_input"),
        ("has_context", {"id": "q", "kind": "qa", "question": "Why is it so?", "answer": "Yes.",
                         "contexts": []}, "no_context", "$.contexts"),
        ("well_formed", {"id": "q", "kind": "qa", "question": "Tea?", "answer": "Yes.",
                         "contexts": ["tea"]}, "not_a_question", "$.question"),
        ("information_gain", {"id": "q", "kind": "rag", "user_input": "Why is tea green?",
                              "reference": "x", "reference_contexts": ["x"],
                              "meta": {"seed_question": "why is tea green"}},
         "no_information_gain", "$.user_input"),
        ("grounded_overlap", {"id": "q", "kind": "qa", "question": "Why is tea green?",
                              "answer": "Volcanoes erupt magma.", "contexts": ["Tea is green."]},
         "ungrounded_reference", "$.answer"),
    ],
)  # fmt: skip
def test_a_check_rejects_with_its_step_and_the_field_path(name, record, reason, field):
    check = lookup("check", name)
    assert isinstance(check, Check) and isinstance(check, RecordStep)
    rejection = check.rejection(record, CheckSettings())
    assert rejection is not None, name
    assert (rejection.reason, rejection.step, rejection.field) == (reason, f"check.{name}", field)
    # the chain that validate runs gives the same verdict
    verdict = ValidatorChain([name]).check(record)
    assert (verdict.ok, verdict.reason) == (False, reason)


def test_checks_pass_good_records_and_are_record_steps():
    good = {**RECORD, "output": "Blue is the colour of a clear sky at noon."}
    for name in ("schema", "refusal", "empty", "leak", "language", "evol_instruct",
                 "evol_quality"):  # fmt: skip
        assert lookup("check", name).rejection(good, CheckSettings()) is None, name
    record = Record.from_json(good)
    result = asyncio.run(CHECK_STEPS["refusal"](record))
    assert result.records == [record] and not result.rejections
    failed = asyncio.run(CHECK_STEPS["empty"](Record.from_json({**RECORD, "output": "the"})))
    assert [r.reason for r in failed.rejections] == ["empty_answer"]


def test_a_registered_op_joins_only_its_own_family():
    from evoforge.evolvers.evol_quality import EvolQuality, QualityOp
    from evoforge.prompting import builtin_template

    template = builtin_template("evol_quality_details")
    register("evolver", "concise", QualityOp("concise", template=template))
    try:
        weights = parse_weights("details=1,concise=2", QUALITY_OPS)
        assert list(weights)[-1] == "concise" and weights["concise"] == 2.0
        assert EvolQuality(weights={"concise": 1})._ops["concise"] is template
        with pytest.raises(ConfigError, match="unknown op 'concise'"):
            parse_weights("concise=1", OPS)  # an Evol-Quality op is not an Evol-Instruct one
        with pytest.raises(
            ConfigError, match=r"did you mean 'concise'\?\); ops: .*details, concise"
        ):
            parse_weights("concis=1", QUALITY_OPS)
    finally:
        evoforge.steps.unregister("evolver", "concise")
    assert parse_weights("details=1", QUALITY_OPS) == {**dict.fromkeys(QUALITY_OPS, 0.0),
                                                       "details": 1.0}  # fmt: skip
