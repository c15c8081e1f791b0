"""``--executor local|ray[:ADDRESS]`` without a cluster: the option on the CLI, the API and
recipes, and the one line that says how to install Ray when it is missing (issue 20).
The runs on a Ray cluster are in tests/test_ray_executor.py."""

from __future__ import annotations

import json

import pytest

from evoforge import EngineOptions
from evoforge.engine.ray_executor import INSTALL_HINT, on_network_fs, parse_executor
from evoforge.errors import ConfigError
from evoforge.recipe import load_recipe
from helpers import run_cli, write_jsonl


def test_executor_specs():
    assert parse_executor("local") == ("local", None)
    assert parse_executor("ray") == ("ray", None)
    assert parse_executor("ray:10.0.0.1:6379") == ("ray", "10.0.0.1:6379")
    assert EngineOptions(executor="ray:auto").executor == "ray:auto"
    for bad in ("spark", "local:x", "rays"):
        with pytest.raises(ConfigError, match="use local, ray or ray:ADDRESS"):
            EngineOptions(executor=bad)


def test_the_recipe_engine_key(tmp_path):
    path = tmp_path / "r.yaml"
    path.write_text(
        "source: {seeds: s.jsonl}\ngenerator: {type: answer}\nengine: {executor: 'ray:h:6379'}\n"
    )
    assert load_recipe(path).engine_options(max_calls=None, max_tokens=None).executor == (
        "ray:h:6379"
    )
    path.write_text("source: {seeds: s.jsonl}\ngenerator: {type: answer}\nengine: {executor: x}\n")
    with pytest.raises(ConfigError, match="line 3: engine: --executor 'x'"):
        load_recipe(path)


def test_a_local_folder_is_not_a_network_filesystem(tmp_path):
    assert on_network_fs(tmp_path) is False


def test_without_ray_the_cli_says_how_to_install_it_and_exits_2(tmp_path, fake_openai):
    """A ``ray`` that cannot be imported (a shadowing package on PYTHONPATH here)."""
    shadow = tmp_path / "shadow" / "ray"
    shadow.mkdir(parents=True)
    (shadow / "__init__.py").write_text("raise ModuleNotFoundError('No module named ray')\n")
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": "a", "instruction": "Hi?"}])
    out = tmp_path / "out.jsonl"
    result = run_cli(
        "answer", "--seeds", str(seeds), "--out", str(out), "--executor", "ray", "--quiet",
        "--llm", f"openai:fake-model@{fake_openai.base_url}",
        env={"PYTHONPATH": str(tmp_path / "shadow")},
    )  # fmt: skip
    assert result.returncode == 2, result.stderr
    assert INSTALL_HINT in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1
    assert fake_openai.hits == 0 and not out.exists()


def test_every_command_with_engine_options_and_dedup_has_the_flag():
    import typer.main

    from evoforge.cli import app

    group = typer.main.get_command(app)
    for name in ("answer", "evolve", "rag", "in2", "select", "dedup"):
        flags = {opt for p in group.commands[name].params for opt in p.opts}
        assert "--executor" in flags, name


def test_validate_says_its_judge_runs_in_this_process(tmp_path, fake_openai):
    """validate's judge calls are not sharded: with --executor ray it says so, and
    judges as it always does (no Ray needed)."""
    fake_openai.responder = lambda request: json.dumps({"score": 3, "reason": "Fine."})
    rubric = tmp_path / "rubric.yaml"
    rubric.write_text("rubric: The answer is kind.\nscale: [0, 3]\nthreshold: 2\n")
    row = {"id": "r1", "kind": "instruction", "instruction": "Hi?", "input": ""}
    rows = [{**row, "output": "Hello there.", "parent_id": None, "lineage": [], "meta": {}}]
    path = write_jsonl(tmp_path / "r.jsonl", rows)
    result = run_cli(
        "validate", str(path), "--kind", "instruction", "--checks", "schema,rubric",
        "--rubric", str(rubric), "--executor", "ray", "--llm",
        f"openai:judge@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "validate's judge calls run in this process" in result.stderr
    assert fake_openai.hits == 1
