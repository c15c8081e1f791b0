"""The CLI as a user runs it: help, answer end to end, validate, errors, crash and resume."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time

import pytest

from helpers import read_jsonl, run_cli, write_jsonl

COMMANDS = ["answer", "evolve", "rag", "in2", "validate", "demo"]


def test_help_lists_every_command():
    result = run_cli("--help")
    assert result.returncode == 0
    for command in COMMANDS:
        assert command in result.stdout


@pytest.mark.parametrize("command", COMMANDS)
def test_every_command_has_help(command):
    result = run_cli(command, "--help")
    assert result.returncode == 0, result.stderr
    assert "Example:" in result.stdout


def test_answer_end_to_end(fake_openai, seeds_file, tmp_path):
    out = tmp_path / "answers.jsonl"
    result = run_cli(
        "answer", "--seeds", str(seeds_file(3)), "--out", str(out),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--quiet",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 3
    assert "accepted" in result.stdout and "3" in result.stdout
    assert (tmp_path / "answers.manifest.json").exists()


def test_no_progress_bar_when_stderr_is_not_a_terminal(fake_openai, seeds_file, tmp_path):
    result = run_cli(
        "answer", "--seeds", str(seeds_file(2)), "--out", str(tmp_path / "o.jsonl"),
        "--llm", f"openai:fake-model@{fake_openai.base_url}",
    )  # fmt: skip
    assert result.returncode == 0
    # stderr carries only the line naming the refreshed report: no bar, no spinner frames
    assert result.stderr == (
        f"report: {tmp_path / 'report.html'} (summary: {tmp_path / 'summary.md'})\n"
    )


def test_missing_seed_file_is_one_clear_line(tmp_path):
    result = run_cli(
        "answer", "--seeds", str(tmp_path / "nope.jsonl"), "--out", str(tmp_path / "o.jsonl")
    )
    assert result.returncode == 2
    assert (
        result.stderr.strip()
        == f"evoforge: error: {tmp_path / 'nope.jsonl'}: no such file or directory"
    )
    assert "Traceback" not in result.stderr


def test_json_that_is_not_an_array_names_the_fix(tmp_path):
    seeds = tmp_path / "seeds.json"
    seeds.write_text('{"instruction": "x"}')
    result = run_cli("answer", "--seeds", str(seeds), "--out", str(tmp_path / "o.jsonl"))
    assert result.returncode == 2
    assert "expected a JSON array of objects" in result.stderr and ".jsonl" in result.stderr


def test_unknown_backend_suggests_the_right_one(tmp_path, seeds_file):
    result = run_cli("answer", "--seeds", str(seeds_file(1)), "--out", str(tmp_path / "o.jsonl"),
                     "--llm", "openia:gpt-4o")  # fmt: skip
    assert result.returncode == 2
    assert "Did you mean 'openai'?" in result.stderr


def test_validate_reports_line_and_path_and_exits_1(tmp_path):
    good = {"id": "a", "kind": "instruction", "instruction": "x", "output": "y"}
    bad = {"id": "b", "kind": "instruction", "instruction": "x", "output": 5}
    path = write_jsonl(tmp_path / "r.jsonl", [good, bad, {**good, "id": "c"}])
    result = run_cli("validate", str(path), "--kind", "instruction")
    assert result.returncode == 1
    assert result.stdout.strip() == (
        f"{path} line 2: schema_invalid: at $.output: 5 is not of type 'string'"
    )
    assert "3 records, 1 invalid" in result.stderr
    ok = write_jsonl(tmp_path / "ok.jsonl", [good])
    assert run_cli("validate", str(ok), "--kind", "instruction").returncode == 0


def test_validate_infers_kind_from_records(tmp_path):
    path = write_jsonl(
        tmp_path / "r.jsonl", [{"id": "a", "kind": "qa", "question": "q", "answer": "a"}]
    )
    result = run_cli("validate", str(path))
    assert result.returncode == 1 and "contexts" in result.stdout


def test_sigkill_mid_run_then_resume_loses_nothing_and_repeats_nothing(fake_openai, tmp_path):
    """kill -9 the CLI mid-run; the same command finishes the job with one record per seed
    and re-sends at most the requests that were in flight."""
    n, concurrency = 60, 4
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Seed {i}"} for i in range(n)])
    out = tmp_path / "out.jsonl"
    fake_openai.latency = 0.1
    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--concurrency", str(concurrency),
        "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(
        args, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=os.environ
    )
    deadline = time.monotonic() + 60
    while fake_openai.hits < 20 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGKILL)
    process.wait(timeout=10)
    process.stderr.close()
    assert process.returncode == -signal.SIGKILL
    hits_before = fake_openai.hits
    assert hits_before < n, "the run finished before it was killed; the test proves nothing"
    assert not out.exists(), "the output is only written at the end, atomically"

    fake_openai.latency = 0.0
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    records = read_jsonl(out)
    ids = [r["id"] for r in records]
    assert len(ids) == n and len(set(ids)) == n
    assert [r["instruction"] for r in records] == [f"Seed {i}" for i in range(n)]
    # Only the requests in flight at the kill are paid twice.
    assert fake_openai.hits <= n + concurrency
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["counts"]["resumed_seeds"] >= hits_before - concurrency


def test_sigterm_stops_cleanly_and_keeps_finished_work(fake_openai, tmp_path):
    seeds = write_jsonl(tmp_path / "seeds.jsonl", [{"instruction": f"Seed {i}"} for i in range(40)])
    out = tmp_path / "out.jsonl"
    fake_openai.latency = 0.1
    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--concurrency", "2", "--quiet",
    ]  # fmt: skip
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 60
    while fake_openai.hits < 6 and time.monotonic() < deadline:
        time.sleep(0.01)
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=30)
    assert process.returncode == 130, stderr
    assert "re-run the same command to resume" in stderr
    kept = read_jsonl(out)
    assert 4 <= len(kept) < 40
