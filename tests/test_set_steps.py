"""Set steps (issue 12): every dedup method, selector and exact-N selector is a
``SetStep`` whose drops are ``Rejection``s; a plugin's dedup method is found by name."""

from __future__ import annotations

import json

import pytest
from typer.testing import CliRunner

from evoforge.api import dedup
from evoforge.cli import app
from evoforge.embeddings import load_embedder
from evoforge.engine.final_write import RecordSelector
from evoforge.errors import ConfigError
from evoforge.generators.in2 import In2Selector
from evoforge.generators.rag import RagSelector
from evoforge.registry import lookup, names, register, registry, unregister
from evoforge.steps import Rejection, SetResult, SetStep
from evoforge.validators.dedup import EXACT, MINHASH, SEMANTIC, DedupStep
from evoforge.validators.dedup import dedup as graph_dedup
from evoforge.validators.select import DEITA, KCENTER, RANDOM, SelectorStep, selector_step
from helpers import read_jsonl, write_jsonl

LONG = "the quick brown fox jumps over the lazy dog near the river bank at dawn today"
RECORDS = [
    {"id": "a", "instruction": LONG, "output": "yes"},
    {"id": "b", "instruction": LONG.upper(), "output": "YES"},  # exact after normalising
    {"id": "c", "instruction": LONG.replace("dawn", "dusk"), "output": "yes"},  # near
    {"id": "d", "instruction": "something else entirely, about taxes", "output": "no"},
]
LINE_KEYS = ["id", "reason", "detail", "lost_to", "similarity", "method"]


def test_every_registered_dedup_method_and_selector_is_a_set_step():
    assert {"exact", "minhash", "semantic"} <= set(names("dedup"))
    assert {"deita", "alpagasus", "kcenter", "random"} <= set(names("selector"))
    for kind in ("dedup", "selector"):
        for name in names(kind):
            if registry(kind).origins[name] == "evoforge":  # a plugin's selector is a function
                assert isinstance(lookup(kind, name), SetStep), (kind, name)
    assert lookup("dedup", "minhash") is MINHASH and lookup("selector", "deita") is DEITA
    assert isinstance(RagSelector({}), SetStep) and isinstance(In2Selector({}), SetStep)


def test_a_dedup_step_rejects_with_lost_to_and_writes_todays_line():
    result = EXACT.run(RECORDS)
    assert isinstance(result, SetResult)
    assert [r["id"] for r in result.kept] == ["a", "c", "d"]
    [rejection] = result.rejected
    assert isinstance(rejection, Rejection)
    assert (rejection.id, rejection.reason, rejection.step, rejection.lost_to) == (
        "b", "duplicate", "dedup.exact", "a"
    )  # fmt: skip
    assert rejection.record == RECORDS[1] and rejection.extra == {"similarity": 1.0,
                                                                   "method": "exact"}  # fmt: skip
    line = rejection.to_json(record=False, step=False)
    assert list(line) == LINE_KEYS
    near = MINHASH.configure(threshold=0.5).run(RECORDS).rejected
    assert {(r.id, r.step, r.lost_to) for r in near} >= {("c", "dedup.minhash", "a")}


def test_built_in_methods_named_together_share_one_graph():
    step = DedupStep.combine([EXACT, MINHASH]).configure(threshold=0.5)
    assert step.methods == ("exact", "minhash")
    result = step.run(RECORDS)
    kept, dropped = graph_dedup(RECORDS, methods=("exact", "minhash"), threshold=0.5)
    assert result.kept == kept
    assert [r.to_json(record=False, step=False) for r in result.rejected] == dropped


def test_semantic_dedup_is_a_set_step_with_an_embedder():
    step = SEMANTIC.configure(embedder=load_embedder("hashing"), semantic_threshold=0.95)
    result = step.run(RECORDS)
    assert all(r.step == "dedup.semantic" and r.lost_to for r in result.rejected)
    assert len(result.kept) + len(result.rejected) == len(RECORDS)


def _scored(i: int, text: str, score: float | None) -> dict:
    meta = {} if score is None else {"deita": {"score": score}, "alpagasus": {"score": score}}
    return {"id": f"r{i}", "kind": "instruction", "instruction": text, "input": "",
            "output": "ok", "meta": meta}  # fmt: skip


POOL = [
    _scored(0, "describe the market of city one", 5.0),
    _scored(1, "describe the market of city one", 4.0),  # same text: too similar to r0
    _scored(2, "name a prime number greater than ten", 3.0),
    _scored(3, "what colour is the sky at noon", None),
]


def test_selectors_are_set_steps_whose_drops_name_the_step():
    hashing = load_embedder("hashing")
    result = DEITA.configure(budget=2, tau=0.9, embedder=hashing).run(POOL)
    assert [r.id for r in result.kept] == ["r0", "r2"]
    reasons = {r.id: (r.reason, r.step, r.lost_to) for r in result.rejected}
    assert reasons == {
        "r1": ("too_similar", "selector.deita", "r0"),
        "r3": ("unscored", "selector.deita", None),
    }
    assert all(isinstance(r, Rejection) and r.record for r in result.rejected)
    alpagasus = selector_step("alpagasus", min_score=4.5).run(POOL)
    assert {r.reason for r in alpagasus.rejected} == {"low_score", "unscored"}
    assert {r.step for r in alpagasus.rejected} == {"selector.alpagasus"}
    for step in (RANDOM.configure(budget=1, seed=3),
                 KCENTER.configure(budget=1, embedder=hashing, seed=0)):  # fmt: skip
        chosen = step.run(POOL)
        assert len(chosen.kept) == 1 and {r.reason for r in chosen.rejected} == {"not_selected"}
        assert {r.step for r in chosen.rejected} == {f"selector.{step.name}"}


def test_selector_step_checks_names_budget_and_options():
    with pytest.raises(ConfigError, match="Did you mean 'kcenter'"):
        selector_step("kcentre", 3)
    with pytest.raises(ConfigError, match="needs a budget"):
        selector_step("random")
    with pytest.raises(ConfigError, match="unknown option"):
        selector_step("random", 3, tau=0.5)
    # still the selector function when called
    assert [r.id for r in DEITA(POOL, 1, tau=1.0)[0]] == ["r0"]


def test_a_plugin_selector_function_becomes_a_set_step():
    def first(records, budget, *, seed=0):
        kept = list(records)[:budget]
        return kept, [Rejection(r["id"], "not_selected", "not first", r) for r in records[budget:]]

    register("selector", "first", first)
    try:
        step = selector_step("first", 1, seed=0)
        assert isinstance(step, SelectorStep) and isinstance(step, SetStep)
        result = step.run(POOL)
        assert [r["id"] for r in result.kept] == ["r0"]
        assert {r.step for r in result.rejected} == {"selector.first"}
    finally:
        unregister("selector", "first")


def test_exact_n_selectors_are_set_steps_with_todays_rejects():
    samples = [
        {"id": "s1", "sample_type": "general"},
        {"id": "s2", "sample_type": "general"},
        {"id": "s3", "sample_type": "needle"},
    ]
    result = In2Selector({"general": 1, "needle": 1}).run(samples)
    assert [r["id"] for r in result.kept] == ["s1", "s3"]
    [surplus] = result.rejected
    assert surplus.to_json() == {"id": "s2", "reason": "surplus",
                                 "detail": "general already has its 1 samples",
                                 "record": samples[1]}  # fmt: skip
    questions = [
        {"id": "q1", "synthesizer_name": "single", "user_input": "What is the capital?"},
        {"id": "q2", "synthesizer_name": "single", "user_input": "what is the CAPITAL?"},
    ]
    [duplicate] = RagSelector({"single": 2}).run(questions).rejected
    assert (duplicate.id, duplicate.reason) == ("q2", "duplicate")
    assert issubclass(RagSelector, RecordSelector) and issubclass(In2Selector, RecordSelector)


class FirstWordDedup:
    """A plugin's dedup method: records whose first instruction word was seen before."""

    def __init__(self, fields=("instruction",)):
        self.fields = fields

    def configure(self, *, fields=("instruction",)):
        return FirstWordDedup(fields)

    def run(self, records):
        seen: dict[str, str] = {}
        result = SetResult()
        for record in records:
            word = str(record.get(self.fields[0], "")).split()[0].lower()
            if word in seen:
                result.rejected.append(
                    Rejection(
                        record["id"],
                        "duplicate",
                        f"first word {word!r}",
                        step="dedup.first_word",
                        lost_to=seen[word],
                    )  # fmt: skip
                )
            else:
                seen[word] = record["id"]
                result.kept.append(record)
        return result


@pytest.fixture
def first_word():
    register("dedup", "first_word", FirstWordDedup())
    yield
    unregister("dedup", "first_word")


FIRST_WORDS = [
    {"id": "a", "instruction": "Describe rivers", "output": "x"},
    {"id": "b", "instruction": "Describe rivers", "output": "x"},  # exact duplicate of a
    {"id": "c", "instruction": "describe mountains please", "output": "y"},  # first word
    {"id": "d", "instruction": "Name lakes", "output": "z"},
]


def test_a_plugin_dedup_method_is_used_by_name(tmp_path, first_word):
    assert isinstance(lookup("dedup", "first_word"), SetStep)
    out = tmp_path / "unique.jsonl"
    result = dedup(FIRST_WORDS, out, method="exact,first_word")
    assert [r["id"] for r in result.kept] == ["a", "d"]
    lines = read_jsonl(tmp_path / "unique.rejects.jsonl")
    assert [(r["id"], r["lost_to"], r["method"]) for r in lines] == [
        ("b", "a", "exact"), ("c", "a", "first_word")
    ]  # fmt: skip
    assert list(lines[0]) == LINE_KEYS and "record" not in lines[1]
    assert result.summary["dropped_by_method"] == {"exact": 1, "first_word": 1}
    with pytest.raises(ConfigError, match="did you mean 'first_word'"):
        dedup(FIRST_WORDS, method="exact,first_wrd")


def test_a_plugin_dedup_method_is_used_by_name_from_the_cli(tmp_path, first_word):
    source = write_jsonl(tmp_path / "in.jsonl", FIRST_WORDS)
    out = tmp_path / "unique.jsonl"
    args = ["dedup", str(source), "--out", str(out), "--method", "first_word", "--json"]
    result = CliRunner().invoke(app, args)
    assert result.exit_code == 0, result.output
    assert [r["id"] for r in read_jsonl(out)] == ["a", "d"]
    assert json.loads(result.stdout)["dropped_by_method"] == {"first_word": 2}
    wrong = CliRunner().invoke(app, [*args[:-3], "--method", "minhsh"])
    assert wrong.exit_code != 0 and "did you mean 'minhash'" in wrong.output


def test_rejection_to_json_is_unchanged_by_default_and_extra_comes_last():
    record = {"id": "r1", "kind": "qa"}
    plain = Rejection("r1", "refusal", "says sorry", record)
    assert plain.to_json() == {"id": "r1", "reason": "refusal", "detail": "says sorry",
                               "record": record}  # fmt: skip
    assert list(Rejection("r1", "x", "y").to_json()) == ["id", "reason", "detail", "record"]
    full = Rejection("r2", "duplicate", "same", None, step="dedup.exact", field="$.output",
                     lost_to="r1", extra={"similarity": 1.0})  # fmt: skip
    assert list(full.to_json()) == ["id", "reason", "detail", "record", "step", "field",
                                    "lost_to", "similarity"]  # fmt: skip
    assert list(full.to_json(record=False, step=False)) == ["id", "reason", "detail", "field",
                                                            "lost_to", "similarity"]  # fmt: skip
