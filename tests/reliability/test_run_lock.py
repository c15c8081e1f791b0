"""Two runs on one output (issue 15, item 1): the second exits 2 with one line naming
the first run's host, PID and start time, or with ``--wait`` waits its turn; read-only
commands take no lock; the stale-temporary cleanup never removes a live run's file."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

import pytest
from typer.testing import CliRunner

from evoforge.cli import app
from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability


def seeds(tmp_path: Path, n: int) -> Path:
    rows = [{"id": f"s{i:04d}", "instruction": f"Seed {i}"} for i in range(n)]
    return write_jsonl(tmp_path / "seeds.jsonl", rows)


def answer_args(seed_file: Path, out: Path, server, *extra: str) -> list[str]:
    return [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seed_file),
        "--out", str(out), "--llm", f"openai:fake-model@{server.base_url}", "-q",
        "--no-report", "--concurrency", "2", *extra,
    ]  # fmt: skip


def wait_until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def test_a_second_run_on_the_same_output_exits_2_naming_the_first(fake_openai, tmp_path):
    """The issue's case: two `answer` on one --out. The first finishes whole; the second
    touches nothing and says, in one line, which run holds the output."""
    n = 150
    seed_file, out = seeds(tmp_path, n), tmp_path / "o.jsonl"
    fake_openai.latency = 0.05
    first = subprocess.Popen(answer_args(seed_file, out, fake_openai),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: fake_openai.hits >= 5 or first.poll() is not None)
        fake_openai.latency = 2.0  # the first run is still going, however slow the start
        second = subprocess.run(answer_args(seed_file, out, fake_openai),
                                capture_output=True, text=True, timeout=120)  # fmt: skip
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        fake_openai.latency = 0.0
        _, first_err = first.communicate(timeout=120)
    assert second.returncode == 2, second.stderr
    lines = second.stderr.strip().splitlines()
    assert len(lines) == 1 and "Traceback" not in second.stderr, second.stderr
    line = lines[0]
    assert f"PID {first.pid}" in line and "host " in line and "started 20" in line, line
    assert "--wait" in line
    assert first.returncode == 0, first_err
    assert [r["id"] for r in read_jsonl(out)] == [f"s{i:04d}" for i in range(n)]
    assert fake_openai.hits == n, "the second run sent requests"
    assert not list(tmp_path.glob(".o.jsonl.lock")), "the lock file goes with its run"
    assert not list(tmp_path.glob(".*.tmp-*"))


def test_wait_starts_when_the_first_run_ends(fake_openai, tmp_path):
    n = 150
    seed_file, out = seeds(tmp_path, n), tmp_path / "o.jsonl"
    fake_openai.latency = 0.05
    first = subprocess.Popen(answer_args(seed_file, out, fake_openai),
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    try:
        wait_until(lambda: fake_openai.hits >= 3 or first.poll() is not None)
        fake_openai.latency = 2.0  # held until the second says it waits
        args = answer_args(seed_file, out, fake_openai, "--wait")
        second = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
        told = second.stderr.readline()
        assert first.poll() is None, "the first run ended before the second started"
    finally:
        fake_openai.latency = 0.0
        first.communicate(timeout=120)
    _, rest = second.communicate(timeout=120)
    assert first.returncode == 0 and second.returncode == 0, told + rest
    assert told.startswith("evoforge: waiting for the run on") and f"PID {first.pid}" in told
    assert len(read_jsonl(out)) == n and fake_openai.hits == n
    manifest = json.loads(out.with_name("o.manifest.json").read_text())
    # The second run started after the first had finished: it resumed every seed.
    assert manifest["counts"]["resumed_seeds"] == n


HOLD = """
import sys, time
from evoforge.io.lock import RunLock
with RunLock(sys.argv[1]):
    print("held", flush=True)
    time.sleep(120)
"""


@pytest.fixture
def held(tmp_path):
    """Hold a path's run lock from another process, as another run would."""
    holders = []

    def hold(path: Path) -> subprocess.Popen:
        process = subprocess.Popen([sys.executable, "-c", HOLD, str(path)],
                                   stdout=subprocess.PIPE, text=True)  # fmt: skip
        holders.append(process)
        assert process.stdout.readline().strip() == "held"
        return process

    yield hold
    for process in holders:
        process.kill()
        process.wait()
        process.stdout.close()


def invoke(*args: str):
    result = CliRunner().invoke(app, [str(a) for a in args])
    assert result.exception is None or isinstance(result.exception, SystemExit), result.exception
    assert "Traceback" not in result.output
    return result


RECORDS = [
    {"id": f"r{i}", "kind": "instruction", "instruction": f"Task {i}?", "input": "",
     "output": f"Answer {i}."}
    for i in range(4)
]  # fmt: skip


def writing_commands(tmp_path: Path, server) -> dict[str, list]:
    """Every command that writes an output, with the output it writes."""
    records = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    seed_file = seeds(tmp_path, 3)
    docs = tmp_path / "docs"
    docs.mkdir()
    (docs / "a.txt").write_text("The tides follow the Moon. " * 40)
    llm = ["--llm", f"openai:fake-model@{server.base_url}", "-q", "--no-report"]
    out = tmp_path / "held.jsonl"
    recipe = tmp_path / "recipe.yaml"
    recipe.write_text(
        f"llm: {{spec: 'openai:fake-model@{server.base_url}'}}\n"
        f"source: {{seeds: {seed_file}}}\ngenerator: {{type: answer}}\n"
        f"outputs: {{dir: {tmp_path / 'run-folder'}}}\n"
    )
    return {
        "answer": ["answer", "--seeds", seed_file, "--out", out, *llm],
        "evolve": ["evolve", "--seeds", seed_file, "--out", out, "--rounds", "1", *llm],
        "rag": ["rag", "--docs", docs, "--n", "2", "--out", out, *llm],
        "in2": ["in2", "--corpus", docs, "--n", "2", "--out", out, *llm],
        "select": [
            "select",
            records,
            "--out",
            out,
            "--method",
            "random",
            "--budget",
            "2",
            *llm,
        ],  # fmt: skip
        "dedup": ["dedup", records, "--out", out, "-q", "--no-report"],
        "validate --out": ["validate", records, "--out", out, "-q", "--no-report"],
        "probe build": [
            "probe",
            "build",
            "--task",
            "document",
            "--corpus",
            docs / "a.txt",
            "--n",
            "2",
            "--out",
            out,
            "--context-tokens",
            "300",
        ],  # fmt: skip
        "run": ["run", recipe, "-q"],
    }


def test_every_writing_command_refuses_an_output_another_run_holds(fake_openai, tmp_path, held):
    commands = writing_commands(tmp_path, fake_openai)
    (tmp_path / "run-folder").mkdir()
    held(tmp_path / "held.jsonl")
    folder_holder = held(tmp_path / "run-folder")
    for name, args in commands.items():
        result = invoke(*args)
        assert result.exit_code == 2, (name, result.output)
        lines = result.stderr.strip().splitlines()
        assert len(lines) == 1, (name, result.stderr)
        assert "in use by another run" in lines[0], (name, lines[0])
        if name == "run":
            assert f"PID {folder_holder.pid}" in lines[0]
    assert fake_openai.hits == 0
    assert not (tmp_path / "held.jsonl").exists()


def test_read_only_commands_take_no_lock(tmp_path, held):
    records = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    assert invoke("dedup", records, "--out", tmp_path / "u.jsonl", "-q").exit_code == 0
    held(tmp_path / "u.jsonl")
    held(tmp_path / "records.jsonl")
    assert invoke("validate", tmp_path / "u.jsonl", "-q").exit_code == 0
    assert invoke("report", tmp_path).exit_code == 0
    exported = invoke("export", tmp_path / "u.jsonl", "--to", "messages",
                      "--out", tmp_path / "train.jsonl")  # fmt: skip
    assert exported.exit_code == 0, exported.output


def test_the_stale_temporary_cleanup_spares_a_live_run(tmp_path):
    """Only temporaries whose owner is gone go: a live process's stays, a dead PID's
    goes, and so does one whose PID now belongs to a process started later."""
    from evoforge.io.lock import Owner, process_start

    records = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        wait_until(lambda: process_start(sleeper.pid) is not None)
        live = Owner(Owner.me().host, sleeper.pid, process_start(sleeper.pid))
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"],
                              capture_output=True, text=True).stdout.strip()  # fmt: skip
        reused = Owner(live.host, sleeper.pid, (live.start or 0) + 1)  # same PID, not its start
        names = {
            "live": f".u.jsonl.tmp-{live.tag()}",
            "dead": f".u.jsonl.tmp-{dead}",
            "reused": f".u.jsonl.tmp-{reused.tag()}",
            "dead_tagged": f".u.jsonl.tmp-{dead}-12345-{live.host}",
        }
        for name in names.values():
            (tmp_path / name).write_text("half a file")
        assert invoke("dedup", records, "--out", tmp_path / "u.jsonl", "-q").exit_code == 0
        assert (tmp_path / names["live"]).exists(), "a live run's temporary was removed"
        for gone in ("dead", "reused", "dead_tagged"):
            assert not (tmp_path / names[gone]).exists(), gone
    finally:
        sleeper.kill()
        sleeper.wait()


def test_a_killed_holder_leaves_no_lock_behind(tmp_path, held):
    records = write_jsonl(tmp_path / "records.jsonl", RECORDS)
    holder = held(tmp_path / "u.jsonl")
    assert invoke("dedup", records, "--out", tmp_path / "u.jsonl", "-q").exit_code == 2
    holder.kill()
    holder.wait()
    assert os.path.exists(tmp_path / ".u.jsonl.lock")  # a SIGKILL cannot remove it ...
    assert invoke("dedup", records, "--out", tmp_path / "u.jsonl", "-q").exit_code == 0
    assert not os.path.exists(tmp_path / ".u.jsonl.lock")  # ... the next run takes it over
