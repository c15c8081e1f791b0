"""Every command takes the shared flags the same way, and every flag's default is the
one written in ``evoforge.options`` (issue 12, item 3)."""

from __future__ import annotations

import json

import pytest
import typer.main
from typer.testing import CliRunner

from evoforge.cli import app
from evoforge.cli.flags import cli_default, flag_name
from evoforge.options import (
    DEMO_ENGINE,
    DEMO_OUT,
    ENGINE_API_ONLY,
    AnswerOptions,
    DedupOptions,
    EngineOptions,
    EvolveOptions,
    ExportOptions,
    In2Options,
    ProbeOptions,
    RagOptions,
    SelectOptions,
    ValidateOptions,
    option_fields,
)
from evoforge.options_grow import GrowOptions
from evoforge.options_training import Orca2Options, PamOptions
from helpers import write_jsonl

ENGINE = (EngineOptions,)
# command -> the options dataclasses its flags come from
OPTIONS = {
    "answer": (AnswerOptions, *ENGINE), "evolve": (EvolveOptions, *ENGINE),
    "rag": (RagOptions, *ENGINE), "in2": (In2Options, *ENGINE),
    "validate": (ValidateOptions, *ENGINE), "select": (SelectOptions, *ENGINE),
    "dedup": (DedupOptions,), "probe build": (ProbeOptions,), "probe score": (),
    "export": (ExportOptions,), "report": (), "demo": ENGINE, "run": (),
    "orca2": (Orca2Options, *ENGINE), "pam": (PamOptions, *ENGINE),
}  # fmt: skip
OPTIONS["grow"] = (GrowOptions, *ENGINE)  # issue 18
# Commands without --no-report: report is the report itself; probe and export write
# files that no report reads; a recipe's own outputs.report decides for run.
NO_REPORT_FLAG = {"report", "probe build", "probe score", "export", "run"}
# Commands without --out: report writes into the folder it reads; probe score's only
# output is its --plot.
NO_OUT = {"report", "probe score"}
# Commands that call a model take --dry-run (demo is itself a run on the embedded model);
# run's dry run plans the whole recipe (evoforge.recipe.plan).
DRY_RUN = {"answer", "evolve", "rag", "in2", "validate", "select", "run", "orca2", "pam"}
DRY_RUN.add("grow")  # issue 18
SHARED = {"json_output", "quiet", "no_report", "dry_run"}


def commands() -> dict[str, object]:
    group = typer.main.get_command(app)
    found = {}
    for name, command in group.commands.items():
        if hasattr(command, "commands"):
            for sub, subcommand in command.commands.items():
                found[f"{name} {sub}"] = subcommand
        else:
            found[name] = command
    return found


def test_every_command_is_covered():
    assert set(commands()) == set(OPTIONS)


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_command_has_the_shared_flags(name):
    params = {p.name: p for p in commands()[name].params}
    flags = {opt for p in params.values() for opt in p.opts}
    assert {"--json", "--quiet", "-q"} <= flags
    assert ("--out" in flags) == (name not in NO_OUT)
    assert ("--no-report" in flags) == (name not in NO_REPORT_FLAG)
    assert ("--dry-run" in flags) == (name in DRY_RUN)
    for shared in SHARED & set(params):
        assert params[shared].default is False


def _expected(name: str) -> dict[str, object]:
    """Flag name -> default, as evoforge.options writes it."""
    expected: dict[str, object] = {}
    for cls in OPTIONS[name]:
        for item in option_fields(cls):
            if cls is EngineOptions and item.name in ENGINE_API_ONLY:
                continue
            if name == "demo" and item.name in DEMO_ENGINE:
                if item.name == "overwrite":
                    continue  # the demo always starts over: no flag
                expected[flag_name(item)] = DEMO_ENGINE[item.name]
                continue
            key = flag_name(item)
            if cls is EngineOptions and item.name == "max_tokens" and name == "in2":
                key = "total_tokens_budget"  # in2's own --max-tokens is the context length
            expected[key] = cli_default(item)
    return expected


def _plain(value: object) -> object:
    return None if value in ((), []) else value


@pytest.mark.parametrize("name", sorted(OPTIONS))
def test_every_default_comes_from_options(name):
    import inspect

    params = {p.name: p for p in commands()[name].params}
    expected = _expected(name)
    assert set(expected) <= set(params), f"{name}: flags missing for {set(expected) - set(params)}"
    for param_name, param in params.items():
        if param_name in expected:
            want = expected[param_name]
            if want is inspect.Parameter.empty:
                assert param.required, f"{name} --{param_name} should be required"
            else:
                assert _plain(param.default) == _plain(want), f"{name} --{param_name}"
        elif param_name in SHARED:
            continue
        elif name == "demo" and param_name == "out":
            assert str(param.default) == DEMO_OUT
        else:
            # a command's own input and output flags: required, or nothing by default
            assert param.required or _plain(param.default) in (None, False), (
                f"{name} --{param_name} has a default ({param.default!r}) not in options"
            )


def _json(result) -> object:
    assert result.exit_code in (0, 1), result.output
    return json.loads(result.stdout)


def test_json_prints_parseable_json(tmp_path):
    rows = [
        {"id": "a", "kind": "instruction", "instruction": "Explain the tides.", "input": "",
         "output": "The Moon pulls the oceans."},
        {"id": "b", "kind": "instruction", "instruction": "Explain the tides.", "input": "",
         "output": "The Moon pulls the oceans."},
    ]  # fmt: skip
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"id": "s", "instruction": "Explain tides."}])
    runner = CliRunner()
    out = ["--no-report"]
    deduped = _json(runner.invoke(app, ["dedup", str(source), "--out", str(tmp_path / "u.jsonl"),
                                        "--json", *out]))  # fmt: skip
    assert deduped["kept"] == 1 and deduped["dropped"] == 1
    checked = _json(runner.invoke(app, ["validate", str(source), "--json", "-q"]))
    assert checked["total"] == 2 and checked["invalid"] == 0
    dry = ["answer", "--seeds", str(seeds), "--out", str(tmp_path / "a.jsonl"), "--dry-run"]
    planned = _json(runner.invoke(app, [*dry, "--json"]))
    assert planned["operators"]["answer"]["calls"] == 1
    assert not (tmp_path / "a.jsonl").exists()  # a dry run writes nothing
    pick = ["select", str(source), "--out", str(tmp_path / "s.jsonl"), "--method", "random"]
    selected = _json(runner.invoke(app, [*pick, "--budget", "1", "--json", *out]))
    assert selected["selected"] == 1


def test_dedup_and_select_print_a_table_without_json(tmp_path):
    rows = [{"id": "a", "kind": "instruction", "instruction": "x", "input": "", "output": "y"}]
    source = write_jsonl(tmp_path / "in.jsonl", rows)
    runner = CliRunner()
    shown = runner.invoke(app, ["dedup", str(source), "--out", str(tmp_path / "u.jsonl"),
                                "--no-report", "-q"])  # fmt: skip
    assert shown.exit_code == 0, shown.output
    assert "evoforge dedup" in shown.stdout and "kept" in shown.stdout
    with pytest.raises(json.JSONDecodeError):
        json.loads(shown.stdout)


def test_a_run_summary_as_json(fake_openai, seeds_file, tmp_path):
    out = tmp_path / "a.jsonl"
    result = CliRunner().invoke(app, [
        "answer", "--seeds", str(seeds_file(3)), "--out", str(out), "--no-cache", "-q",
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--json", "--no-report",
    ])  # fmt: skip
    summary = _json(result)
    assert summary["status"] == "complete" and summary["accepted"] == 3
    assert summary["out"] == str(out) and summary["usage"]["answer"]["calls"] == 3
