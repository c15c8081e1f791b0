"""docs/extending.md: every worked example runs through the real API, and plugins load.

The examples live in examples/extending/; the ``no_todo`` check is registered as a
plugin would be, by an entry point of a dist-info folder put on ``sys.path``.
"""

from __future__ import annotations

import importlib.util
import json
import os
import re
from pathlib import Path

import pytest

from evoforge import EngineOptions, EvolveOptions, RagOptions, SelectOptions, evolve, rag, select
from evoforge.errors import ConfigError
from evoforge.evolvers.base import parse_weights
from evoforge.evolvers.evol_instruct import OPS
from evoforge.registry import load_plugins, lookup, names, register, unregister
from evoforge.testing.scripted import ScriptedChatModel
from helpers import prompt_parts, rag_responder, read_jsonl, run_cli

ROOT = Path(__file__).resolve().parents[1]
EXAMPLES = ROOT / "examples" / "extending"
PLUGINS = Path(__file__).resolve().parent / "fixtures" / "plugin_dist"
DOCS = ROOT / "examples" / "docs"


def _example(name: str):
    """The example module ``examples/extending/<name>.py``, loaded from its file."""
    spec = importlib.util.spec_from_file_location(f"extending_{name}", EXAMPLES / f"{name}.py")
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


SHORTEN = _example("shorten_op").SHORTEN
YES_NO = _example("yes_no_rewrite").YES_NO
select_longest = _example("longest_selector").select_longest


@pytest.fixture
def registered():
    """``register`` for one test; what it added is removed afterwards."""
    added: list[tuple[str, str]] = []

    def add(kind: str, name: str, target: object) -> None:
        register(kind, name, target)
        added.append((kind, name))

    yield add
    for kind, name in added:
        unregister(kind, name)


@pytest.fixture
def plugin_path(monkeypatch):
    """Put folders on ``sys.path`` and re-read the entry points; undone afterwards."""

    def add(*folders: Path) -> None:
        for folder in folders:
            monkeypatch.syspath_prepend(str(folder))
        load_plugins()

    yield add
    monkeypatch.undo()
    load_plugins()


def test_an_evolution_op_joins_the_ops_mix(tmp_path, registered):
    registered("evolver", "shorten", SHORTEN)
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(json.dumps({"id": "s1", "instruction": "Please write for me a short "
                                 "poem about the sea, if you would."}) + "\n")  # fmt: skip
    model = ScriptedChatModel(
        lambda messages, n: (
            "Write a short poem about the sea."
            if "shorter version" in messages[0]["content"]
            else "Not Equal"
        )
    )
    summary = evolve(
        seeds,
        tmp_path / "out.jsonl",
        evolution=EvolveOptions(ops="shorten=1", rounds=1, answers=False, final_only=True),
        options=EngineOptions(quiet=True),
        model=model,
    )
    assert summary.accepted == 1
    [record] = read_jsonl(tmp_path / "out.jsonl")
    assert record["instruction"] == "Write a short poem about the sea."
    assert record["meta"]["evol"] == {
        "op": "shorten", "round": 1, "depth": "in-depth", "judge": "Not Equal"
    }  # fmt: skip
    assert record["lineage"][-1]["op"] == "evolve_shorten"
    assert record["lineage"][-1]["prompt_id"] == "evol_shorten@v1"


def test_an_unknown_op_hints_at_a_registered_one(registered):
    registered("evolver", "shorten", SHORTEN)
    with pytest.raises(ConfigError, match="did you mean 'shorten'"):
        parse_weights("shortn=1", OPS)
    with pytest.raises(ConfigError, match="did you mean 'shorten'"):
        lookup("evolver", "shortn")


def test_a_rag_scenario_is_planned_and_rewritten(tmp_path, registered):
    registered("evolver", "yes_no", YES_NO)
    model = ScriptedChatModel(rag_responder)
    summary = rag(
        [DOCS],
        tmp_path / "eval.jsonl",
        rag=RagOptions(
            n=4, mix="simple=0.5,yes_no=0.5", embedder="hashing", chunk_size=400, chunk_overlap=40
        ),  # fmt: skip
        options=EngineOptions(quiet=True),
        model=model,
    )
    records = read_jsonl(tmp_path / "eval.jsonl")
    kinds = sorted(r["synthesizer_name"] for r in records)
    assert summary.accepted == 4 and kinds == ["simple", "simple", "yes_no", "yes_no"]
    rewritten = [r for r in records if r["synthesizer_name"] == "yes_no"]
    assert all(r["meta"]["rewrite"] == {"op": "yes_no", "max_words": 20} for r in rewritten)
    # The example template uses the RAG layout: its instructions follow the contexts.
    assert any("closed question" in prompt_parts(c["messages"])[0] for c in model.calls)


def test_a_check_plugin_is_used_by_name_from_the_cli(tmp_path):
    data = tmp_path / "answers.jsonl"
    rows = [
        {"id": "a", "kind": "instruction", "instruction": "Name a colour.", "output": "Blue."},
        {"id": "b", "kind": "instruction", "instruction": "Name a fruit.", "output": "TODO"},
    ]
    data.write_text("".join(json.dumps(row) + "\n" for row in rows))
    out = tmp_path / "ok.jsonl"
    path = os.pathsep.join([str(PLUGINS), str(EXAMPLES), os.environ.get("PYTHONPATH", "")])
    result = run_cli(
        "validate", str(data), "--checks", "schema,no_todo", "--out", str(out),
        env={"PYTHONPATH": path},
    )  # fmt: skip
    assert result.returncode == 1, result.stderr
    assert "line 2: placeholder: the answer holds the placeholder 'TODO'" in result.stdout
    assert [r["id"] for r in read_jsonl(out)] == ["a"]
    [reject] = read_jsonl(tmp_path / "ok.rejects.jsonl")
    assert (reject["id"], reject["reason"]) == ("b", "placeholder")


def test_an_op_plugin_is_used_by_name_from_the_cli(tmp_path, fake_openai, seeds_file):
    def reply(request):
        system = request.messages[0]["content"]
        return "Name a prime number." if "shorter version" in system else "Not Equal"

    fake_openai.responder = reply
    out = tmp_path / "evolved.jsonl"
    path = os.pathsep.join([str(PLUGINS), str(EXAMPLES), os.environ.get("PYTHONPATH", "")])
    result = run_cli(
        "evolve", "--seeds", str(seeds_file(2)), "--out", str(out), "--rounds", "1",
        "--ops", "shorten=1", "--final-only", "--quiet",
        "--llm", f"openai:fake-model@{fake_openai.base_url}", env={"PYTHONPATH": path},
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    assert [r["meta"]["evol"]["op"] for r in records] == ["shorten", "shorten"]
    assert {r["instruction"] for r in records} == {"Name a prime number."}


def test_a_check_plugin_is_a_step_with_a_field_path(plugin_path):
    plugin_path(PLUGINS, EXAMPLES)
    assert "no_todo" in names("check")
    check = lookup("check", "no_todo")
    rejection = check.rejection({"id": "q", "kind": "qa", "question": "Why?", "answer": "TBD"})
    assert rejection.to_json() == {
        "id": "q",
        "reason": "placeholder",
        "detail": "the answer holds the placeholder 'TBD'",
        "record": {"id": "q", "kind": "qa", "question": "Why?", "answer": "TBD"},
        "step": "check.no_todo",
        "field": "$.answer",
    }


def test_a_plugin_that_fails_to_import_warns_once_naming_its_distribution(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS / "broken"))
    try:
        with pytest.warns(UserWarning) as caught:
            load_plugins()
        messages = [str(w.message) for w in caught]
        assert len(messages) == 1
        assert re.search(r"plugin evoforge-broken failed to import .*ModuleNotFoundError",
                         messages[0])  # fmt: skip
        assert "broken_check" not in names("check") and "broken_op" not in names("evolver")
    finally:
        monkeypatch.undo()
        load_plugins()


def test_built_ins_win_a_name_clash(monkeypatch):
    monkeypatch.syspath_prepend(str(PLUGINS / "clash"))
    monkeypatch.syspath_prepend(str(EXAMPLES))
    try:
        with pytest.warns(UserWarning, match="evoforge-clash registers check 'refusal'"):
            load_plugins()
        from evoforge.validators.checks import CHECK_STEPS

        assert lookup("check", "refusal") is CHECK_STEPS["refusal"]
    finally:
        monkeypatch.undo()
        load_plugins()
    with pytest.warns(UserWarning, match="built-in one is used"):
        register("selector", "random", select_longest)
    assert lookup("selector", "random").__name__ == "select_random"


def test_a_selector_is_used_by_method_name(tmp_path, registered):
    registered("selector", "longest", select_longest)
    data = tmp_path / "set.jsonl"
    answers = {"a": "Short.", "b": "A much longer answer than the others.", "c": "Medium one."}
    data.write_text("".join(
        json.dumps({"id": i, "kind": "instruction", "instruction": "Q?", "output": text}) + "\n"
        for i, text in answers.items()
    ))  # fmt: skip
    report = select(
        data,
        tmp_path / "best.jsonl",
        selection=SelectOptions(method="longest", budget=2),
        options=EngineOptions(quiet=True),
    )
    assert [r["id"] for r in read_jsonl(tmp_path / "best.jsonl")] == ["b", "c"]
    assert report["dropped_by_reason"] == {"not_selected": 1}
    [dropped] = read_jsonl(tmp_path / "best.rejects.jsonl")
    assert (dropped["id"], dropped["step"]) == ("a", "selector.longest")


def test_an_unknown_selector_hints_at_a_registered_one(registered):
    registered("selector", "longest", select_longest)
    from evoforge.validators.select import select as run_selector

    with pytest.raises(ConfigError, match="Did you mean 'longest'"):
        run_selector([], "longst", budget=1)


def test_a_recipe_names_plugin_steps_like_built_in_ones(tmp_path, registered):
    registered("evolver", "shorten", SHORTEN)
    registered("check", "no_todo", _example("no_todo_check").NO_TODO)
    registered("selector", "longest", select_longest)
    (tmp_path / "seeds.jsonl").write_text("".join(
        json.dumps({"id": f"s{i}", "instruction": text}) + "\n"
        for i, text in enumerate(["Please kindly describe, in detail, how rain forms.",
                                  "Please kindly explain, if you can, what a prime number is.",
                                  "Please kindly list, for me, three uses of copper."])
    ))  # fmt: skip
    (tmp_path / "recipe.yaml").write_text(
        "seed: 1\nsource: {seeds: seeds.jsonl}\n"
        "generator: {type: evolve, rounds: 1, ops: {shorten: 1}, answers: true}\n"
        "validators: {checks: [schema, no_todo]}\n"
        "selection: {method: longest, budget: 1}\n"
        "engine: {quiet: true}\noutputs: {dir: run}\n"
    )

    def reply(messages, n):
        system, user = messages[0]["content"], messages[-1]["content"]
        if "shorter version" in system:
            return re.sub(r"Please kindly |, (in detail|if you can|for me),", "",
                          user.rsplit("#The Given Prompt#:", 1)[1]).strip()  # fmt: skip
        if "helpful, accurate assistant" in system:
            return "TODO" if "prime" in user else f"A full answer about {user[-30:]}"
        return "Not Equal"

    from evoforge import run_recipe

    result = run_recipe(tmp_path / "recipe.yaml", model=ScriptedChatModel(reply))
    assert result.status == "complete"
    final = read_jsonl(result.dataset)
    assert len(final) == 1 and final[0]["meta"]["evol"]["op"] == "shorten"
    rejected = [row for path in result.run_dir.glob("*.rejects.jsonl") for row in read_jsonl(path)]
    assert {"placeholder", "not_selected"} <= {row["reason"] for row in rejected}
    assert {row.get("step") for row in rejected if row["reason"] == "not_selected"} == {
        "selector.longest"
    }
