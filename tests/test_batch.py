"""``--batch`` (issue 19): the OpenAI Batch API on the fake server's /v1/files and
/v1/batches -- the same records and cache keys as online, resuming after a kill while
polling without a second batch, expired and failed items retried, the API's limits."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import pytest

from evoforge import EngineOptions, answer
from evoforge.engine import batch_api
from evoforge.engine.batch_api import request_line, split_lines
from evoforge.errors import ConfigError
from evoforge.testing.fake_openai import FakeOpenAI, Reply


def _seeds(folder: Path, n: int) -> Path:
    path = folder / "seeds.jsonl"
    rows = (
        json.dumps({"id": f"s{i}", "instruction": f"Name {i} prime numbers."}) for i in range(n)
    )
    path.write_text("\n".join(rows) + "\n")
    return path


def _options(server: FakeOpenAI, **extra) -> EngineOptions:
    settings = {"cache": False, "quiet": True, "batch_poll": 0.01, **extra}
    return EngineOptions(llm=f"openai:fake-model@{server.base_url}", **settings)


def _ids(out: Path) -> list[str]:
    return [json.loads(line)["id"] for line in out.read_text().splitlines()]


def _cache_keys(folder: Path) -> set[str]:
    # closing(): a connection's own `with` only commits; Python 3.13 warns (ResourceWarning,
    # an error here) when one is left to the garbage collector unclosed
    with contextlib.closing(sqlite3.connect(folder / "llm-cache.db")) as conn:
        return {row[0] for row in conn.execute("SELECT key FROM responses")}


def test_answer_batch_writes_the_online_records_and_cache_keys(tmp_path):
    seeds = _seeds(tmp_path, 5000)
    with FakeOpenAI(record=False) as server:
        online = answer(
            seeds,
            tmp_path / "online.jsonl",
            options=_options(server, cache=True, cache_dir=str(tmp_path / "c1")),
        )
        assert server.batches.batches_created == 0
        batched = answer(
            seeds,
            tmp_path / "batch.jsonl",
            options=_options(server, cache=True, cache_dir=str(tmp_path / "c2"), batch=True),
        )
        assert server.batches.batches_created == 1
        assert server.hits == 5000  # the online run's; the batch run sent none online
        assert server.batches.files == {}  # input, output deleted
    assert online.accepted == batched.accepted == 5000
    assert (tmp_path / "online.jsonl").read_text() == (tmp_path / "batch.jsonl").read_text()
    assert _cache_keys(tmp_path / "c1") == _cache_keys(tmp_path / "c2")
    manifest = json.loads((tmp_path / "batch.manifest.json").read_text())
    assert manifest["batch"]["ids"] == ["batch-fake000002"]
    assert manifest["engine"]["batch"] is True
    assert "batch" not in json.loads((tmp_path / "online.manifest.json").read_text())["engine"]


def test_a_batch_is_cut_at_the_api_limits(tmp_path, monkeypatch):
    monkeypatch.setattr(batch_api, "MAX_REQUESTS", 7)
    seeds = _seeds(tmp_path, 20)
    with FakeOpenAI() as server:
        summary = answer(seeds, tmp_path / "out.jsonl", options=_options(server, batch=True))
        assert server.batches.batches_created == 3
    assert summary.accepted == 20
    lines = [(f"c{i}", request_line(f"c{i}", {"n": "x" * 100})) for i in range(10)]
    chunks = split_lines(lines, max_requests=50, max_bytes=3 * len(lines[0][1]))
    assert [len(c) for c in chunks] == [3, 3, 3, 1]


@pytest.mark.parametrize("mode", ["online", "batch"])
def test_expired_items_are_retried_and_none_is_lost(tmp_path, mode):
    seeds = _seeds(tmp_path, 12)
    with FakeOpenAI() as server:
        server.batches.outcomes = ["expired"]
        server.batches.done_before_end = 5
        summary = answer(
            seeds, tmp_path / "out.jsonl", options=_options(server, batch=True, batch_retry=mode)
        )
        created, online = server.batches.batches_created, server.hits
    assert summary.accepted == 12 and summary.rejected == 0
    assert _ids(tmp_path / "out.jsonl") == [f"s{i}" for i in range(12)]
    assert (created, online) == ((1, 7) if mode == "online" else (2, 0))
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["batch"][f"retried_{mode}"] == 7


def test_a_failed_batch_and_a_partial_error_file_are_retried(tmp_path):
    seeds = _seeds(tmp_path, 9)
    with FakeOpenAI() as server:
        server.batches.outcomes = ["failed"]  # validation fails: no files at all
        summary = answer(seeds, tmp_path / "a.jsonl", options=_options(server, batch=True))
        assert summary.accepted == 9 and server.hits == 9
        server.batches.error_every = 3  # items 3, 6, 9 answer 500: the error file
        summary = answer(
            seeds, tmp_path / "b.jsonl", options=_options(server, batch=True, batch_retry="batch")
        )
        assert summary.accepted == 9
        # failed; 9 items (3rd, 6th, 9th fail); those 3 (the 3rd fails again); the last one
        assert server.batches.batches_created == 4
        assert server.hits == 9


def test_an_item_the_server_refuses_is_a_rejection_not_a_retry(tmp_path):
    seeds = _seeds(tmp_path, 4)
    with FakeOpenAI() as server:
        server.responder = lambda req: (
            Reply.fail(400, "bad prompt") if "Name 2 " in req.last_user else None
        )
        summary = answer(seeds, tmp_path / "out.jsonl", options=_options(server, batch=True))
        assert server.hits == 0
    assert (summary.accepted, summary.rejected) == (3, 1)
    assert summary.rejected_by_reason == {"http_400": 1}


def test_keep_batch_files_leaves_them_on_the_server(tmp_path):
    seeds = _seeds(tmp_path, 3)
    with FakeOpenAI() as server:
        answer(
            seeds,
            tmp_path / "out.jsonl",
            options=_options(server, batch=True, keep_batch_files=True),
        )
        assert server.batches.files_deleted == 0
        assert sorted(f.purpose for f in server.batches.files.values()) == ["batch", "batch_output"]


def test_batch_on_a_backend_without_a_batch_api_is_one_line_exit_2(tmp_path):
    seeds = _seeds(tmp_path, 2)
    with pytest.raises(ConfigError, match="no Batch API"):
        answer(seeds, tmp_path / "out.jsonl", options=EngineOptions(batch=True, quiet=True))
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "evoforge.cli",
            "answer",
            "--seeds",
            str(seeds),
            "--out",
            str(tmp_path / "o.jsonl"),
            "--llm",
            "local",
            "--batch",
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert run.returncode == 2, run.stderr
    assert len(run.stderr.strip().splitlines()) == 1 and "no Batch API" in run.stderr


def test_sigkill_while_polling_resumes_without_a_second_batch(tmp_path):
    seeds = _seeds(tmp_path, 30)
    out = tmp_path / "out.jsonl"
    with FakeOpenAI() as server:
        server.batches.hold = True  # stays in_progress until released
        argv = [
            sys.executable,
            "-m",
            "evoforge.cli",
            "answer",
            "--seeds",
            str(seeds),
            "--out",
            str(out),
            "--llm",
            f"openai:fake-model@{server.base_url}",
            "--no-cache",
            "--batch",
            "--batch-poll",
            "0.05",
            "-q",
        ]
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        process = subprocess.Popen(argv, env=env, stderr=subprocess.DEVNULL)
        deadline = time.time() + 120
        while not any(b["status"] == "in_progress" for b in server.batches.batches.values()):
            assert time.time() < deadline and process.poll() is None, "no batch in progress"
            time.sleep(0.05)
        time.sleep(0.3)  # a few polls
        process.send_signal(signal.SIGKILL)
        process.wait(timeout=30)
        assert server.batches.batches_created == 1
        server.batches.hold = False
        rerun = subprocess.run(argv, env=env, capture_output=True, text=True, timeout=300)
        assert rerun.returncode == 0, rerun.stderr
        assert server.batches.batches_created == 1  # polled the same batch
        assert server.hits == 0 and server.batches.batch_requests == 30
        assert server.batches.files == {}
    ids = _ids(out)
    assert sorted(ids) == sorted(f"s{i}" for i in range(30)) and len(ids) == len(set(ids))


def test_the_fake_batch_api_speaks_to_the_official_sdk(tmp_path):
    openai = pytest.importorskip("openai")
    with FakeOpenAI() as server:
        client = openai.OpenAI(base_url=server.base_url, api_key="k", max_retries=0)
        lines = b"".join(
            request_line(
                f"c{i}",
                {"model": "fake-model", "messages": [{"role": "user", "content": f"hi {i}"}]},
            )
            for i in range(3)
        )
        uploaded = client.files.create(file=("in.jsonl", lines), purpose="batch")
        batch = client.batches.create(
            input_file_id=uploaded.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        states = [batch.status]
        while batch.status not in batch_api.TERMINAL:
            batch = client.batches.retrieve(batch.id)
            states.append(batch.status)
        assert states == ["validating", "in_progress", "finalizing", "completed"]
        rows = [json.loads(x) for x in client.files.content(batch.output_file_id).text.splitlines()]
        assert [r["custom_id"] for r in rows] == ["c0", "c1", "c2"]
        assert rows[0]["response"]["body"]["choices"][0]["message"]["content"] == "ANSWER: hi 0"
        assert client.files.delete(uploaded.id).deleted
        bad = client.files.create(file=("in.jsonl", lines + lines), purpose="batch")  # duplicates
        failed = client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        failed = client.batches.retrieve(failed.id)
        assert failed.status == "failed" and failed.errors.data[0].code == "duplicate_custom_id"
        server.batches.hold = True
        held = client.batches.create(
            input_file_id=bad.id, endpoint="/v1/chat/completions", completion_window="24h"
        )
        assert client.batches.cancel(held.id).status == "cancelling"
        assert client.batches.list(limit=2).data[0].id == held.id
