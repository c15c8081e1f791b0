"""Faults from the LLM server, through whole runs: the fake OpenAI server on 127.0.0.1
answers with 429 storms, quota and client errors, 5xx, resets, hangs and bad JSON.
The per-call rules (one request, one reply) are in tests/test_retry_rules.py."""

from __future__ import annotations

import asyncio
import json
import resource
import subprocess
import sys
import time
from collections import defaultdict

import pytest

from evoforge import EngineOptions, Record, Result, answer
from evoforge.engine.client import LLMClient, RetryPolicy
from evoforge.engine.runner import Run
from evoforge.llm.openai_backend import OpenAIChatModel
from evoforge.testing.fake_openai import Reply
from helpers import read_jsonl, write_jsonl

pytestmark = pytest.mark.reliability


def options(server, **overrides) -> EngineOptions:
    settings = {"backoff_base": 0.02, "quiet": True, **overrides}
    return EngineOptions(llm=f"openai:fake-model@{server.base_url}", **settings)


def seed_rows(n: int) -> list[dict]:
    return [{"id": f"s{i:03d}", "instruction": f"Seed {i}"} for i in range(n)]


class Arrivals:
    """A responder wrapper that notes when each seed's requests reached the server."""

    def __init__(self, server, responder=None) -> None:
        self.times: dict[str, list[float]] = defaultdict(list)
        self.responder = responder
        server.responder = self

    def __call__(self, request):
        self.times[request.last_user].append(time.monotonic())
        return self.responder(request) if self.responder is not None else None


def test_a_429_storm_with_retry_after_is_waited_out_and_the_run_completes(fake_openai, tmp_path):
    """Every seed's first request gets 429 with Retry-After: 0.4; no seed is asked again
    before 0.4 s have passed, the concurrency backs off, and every seed is answered."""
    seen: set[str] = set()

    def storm(request):
        if request.last_user not in seen:
            seen.add(request.last_user)
            return Reply.rate_limited(0.4)
        return None

    arrivals = Arrivals(fake_openai, storm)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(20))
    summary = answer(seeds, tmp_path / "out.jsonl", options=options(fake_openai, concurrency=8))
    assert summary.status == "complete" and summary.accepted == 20
    assert len(arrivals.times) == 20
    for seed, times in arrivals.times.items():
        assert len(times) == 2, seed
        assert times[1] - times[0] >= 0.4, f"{seed} was re-sent before its Retry-After"
    assert summary.usage["answer"]["retries"] == 20


def test_retry_after_past_the_cap_stops_cleanly_and_a_rerun_resumes(fake_openai, tmp_path):
    """A Retry-After longer than --max-retry-wait stops the run (exit 3) with a resume
    hint; what finished is kept and the re-run asks only for the rest."""
    fake_openai.responder = lambda r: Reply.rate_limited(3600) if r.last_user == "Seed 5" else None
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(10))
    out = tmp_path / "out.jsonl"
    summary = answer(seeds, out, options=options(fake_openai, concurrency=1, max_retry_wait=5))
    assert summary.exit_code == 3 and summary.stop_reason == "retry_after_too_long"
    assert "re-run" in summary.message.lower()
    assert [r["id"] for r in read_jsonl(out)] == [f"s{i:03d}" for i in range(5)]
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["status"] == "stopped"

    fake_openai.responder = None
    hits = fake_openai.hits
    summary = answer(seeds, out, options=options(fake_openai, concurrency=1, max_retry_wait=5))
    assert summary.exit_code == 0 and len(read_jsonl(out)) == 10
    assert fake_openai.hits - hits == 5


def test_insufficient_quota_exits_4_at_once_and_keeps_finished_work(fake_openai, tmp_path):
    """insufficient_quota is not retried: the CLI says what to do, exits 4, and keeps what
    was done; adding credit and re-running finishes the job."""
    fake_openai.responder = lambda r: Reply.insufficient_quota() if r.n > 4 else None
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(12))
    out = tmp_path / "out.jsonl"
    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--concurrency", "1", "--quiet",
    ]  # fmt: skip
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 4, result.stderr
    assert "insufficient quota" in result.stderr and "resume" in result.stderr
    assert "Traceback" not in result.stderr
    assert fake_openai.hits == 5, "the quota error was not retried"
    assert len(read_jsonl(out)) == 4

    fake_openai.responder = None
    result = subprocess.run(args, capture_output=True, text=True, timeout=120)
    assert result.returncode == 0, result.stderr
    assert len(read_jsonl(out)) == 12 and fake_openai.hits == 5 + 8


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        (Reply.context_length_exceeded(), "context_length_exceeded"),
        (Reply.fail(400, "bad request"), "http_400"),
        (Reply.fail(401, "bad key"), "http_401"),
        (Reply.fail(403, "forbidden"), "http_403"),
        (Reply.fail(404, "no such model"), "http_404"),
        (Reply.fail(422, "unprocessable"), "http_422"),
    ],
)
def test_client_errors_are_not_retried_and_the_seed_is_rejected_with_the_error(
    fake_openai, tmp_path, reply, reason
):
    arrivals = Arrivals(fake_openai, lambda r: reply if r.last_user == "Seed 2" else None)
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(5))
    summary = answer(seeds, tmp_path / "out.jsonl", options=options(fake_openai))
    assert summary.accepted == 4 and summary.rejected_by_reason == {reason: 1}
    assert len(arrivals.times["Seed 2"]) == 1, "retried a client error"
    (rejection,) = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert rejection["id"] == "s002" and rejection["reason"] == reason
    assert rejection["detail"]
    assert "s002" not in {r["id"] for r in read_jsonl(tmp_path / "out.jsonl")}


def run_seeds(tmp_path, client: LLMClient, task, n: int):
    """Run ``task`` over seeds "Seed 0".."Seed n-1" (ids s000...) through ``client``."""
    items = [Record("instruction", {"instruction": f"Seed {i}"}, id=f"s{i:03d}") for i in range(n)]
    run = Run(
        command="t", task=task, kind="instruction", config={}, client=client,
        out=tmp_path / "out.jsonl",
    )  # fmt: skip

    async def go():
        try:
            return await run.execute(items)
        finally:
            await client.aclose()

    return asyncio.run(go())


async def answer_task(record, ctx):
    completion = await ctx.client.complete(
        [{"role": "user", "content": record["instruction"]}], op="answer"
    )
    return Result.accept(
        Record("instruction", {**record.fields, "output": completion.text}, id=record.id)
    )


@pytest.mark.parametrize(
    "fault",
    ["500", "502", "503", "408", "reset", "hang"],
)
def test_transient_faults_are_retried_on_schedule_without_leaking_slots(
    fake_openai, tmp_path, fault
):
    """Each seed fails twice (5xx, 408, a reset connection, or a server that accepts and
    never answers), then succeeds. Retries wait the backoff schedule, every seed gets its
    answer, and every concurrency slot is returned."""
    failures: dict[str, int] = defaultdict(int)

    def flaky(request):
        if failures[request.last_user] < 2:
            failures[request.last_user] += 1
            if fault == "reset":
                return Reply.drop()
            if fault == "hang":
                return Reply(content="too late", delay=30)
            return Reply.fail(int(fault), "try again")
        return None

    arrivals = Arrivals(fake_openai, flaky)
    policy = RetryPolicy(backoff_base=0.05, max_attempts=4, request_timeout=0.3)
    client = LLMClient(OpenAIChatModel("fake-model", base_url=fake_openai.base_url), retry=policy)
    client.concurrency.maximum = client.concurrency.limit = 4
    summary = run_seeds(tmp_path, client, answer_task, 8)
    assert summary.status == "complete" and summary.accepted == 8
    assert client.concurrency.in_flight == 0
    if fault != "hang":  # a hung request stays open on the server after the client gives up
        assert fake_openai.max_in_flight <= 4
    assert len(arrivals.times) == 8
    for seed, times in arrivals.times.items():
        assert len(times) == 3, seed
        # Backoff after attempt k is base * 2**(k-1) with jitter in [0.5, 1].
        assert times[1] - times[0] >= 0.5 * 0.05
        assert times[2] - times[1] >= 0.5 * 0.1
    assert summary.usage["answer"]["retries"] == 16


def test_the_backoff_schedule_is_exponential_jittered_and_capped():
    """The schedule itself, with no clock at all: base * 2**(k-1) times a jitter in
    [0.5, 1], capped at backoff_max; a Retry-After replaces it."""
    from evoforge.errors import TransientError

    client = LLMClient(
        OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1"),
        retry=RetryPolicy(backoff_base=1.0, backoff_max=8.0),
        jitter_seed=3,
    )
    waits = [client._backoff(k, TransientError("x", status=503)) for k in range(1, 8)]
    for k, wait in enumerate(waits, start=1):
        ideal = min(8.0, 2.0 ** (k - 1))
        assert 0.5 * ideal <= wait <= ideal
    assert max(waits) <= 8.0
    again = LLMClient(OpenAIChatModel("m", base_url="http://127.0.0.1:9/v1"), jitter_seed=3)
    again.retry = RetryPolicy(backoff_base=1.0, backoff_max=8.0)
    assert [again._backoff(k, TransientError("x")) for k in range(1, 8)] == waits
    told = client._backoff(1, TransientError("x", status=429, retry_after=7.0))
    assert 7.0 <= told <= 7.05


@pytest.mark.parametrize(
    ("reply", "reason"),
    [
        ('{"question": "cut off mid', "invalid_json"),
        ("not json at all, just prose", "invalid_json"),
        ('{"question": 42}', "schema_mismatch"),
    ],
)
def test_bad_json_never_reaches_the_output(fake_openai, tmp_path, reply, reason):
    """Truncated JSON, invalid JSON and JSON that does not match the schema are re-asked
    once (quoting the error), then rejected; a good second answer is accepted."""
    schema = {
        "type": "object",
        "required": ["question"],
        "properties": {"question": {"type": "string"}},
    }
    asked: dict[str, int] = defaultdict(int)

    def replies(request):
        seed = request.messages[0]["content"]
        asked[seed] += 1
        if seed == "Seed 1":
            return reply  # wrong every time
        if seed == "Seed 2" and asked[seed] == 1:
            return reply  # wrong once, then right
        return json.dumps({"question": f"Q for {seed}?"})

    fake_openai.responder = replies
    client = LLMClient(OpenAIChatModel("fake-model", base_url=fake_openai.base_url))

    async def task(record, ctx):
        completion = await ctx.client.complete(
            [{"role": "user", "content": record["instruction"]}], op="ask", schema=schema
        )
        question = completion.parsed["question"]
        return Result.accept(Record("instruction", {"instruction": question}, id=record.id))

    summary = run_seeds(tmp_path, client, task, 4)
    kept = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in kept] == ["s000", "s002", "s003"]
    assert all(r["instruction"].startswith("Q for ") for r in kept)
    assert summary.rejected_by_reason == {reason: 1}
    assert asked["Seed 1"] == 2 and asked["Seed 2"] == 2, "one bounded re-ask"
    (rejection,) = read_jsonl(tmp_path / "out.rejects.jsonl")
    assert rejection["id"] == "s001" and rejection["reason"] == reason


def test_concurrency_1000_under_ulimit_256_opens_no_more_files_than_allowed(fake_openai, tmp_path):
    """`ulimit -n 256` and `--concurrency 1000`: the engine lowers the concurrency to
    what the open-file limit allows (and says so) instead of failing with EMFILE."""
    seeds = write_jsonl(tmp_path / "seeds.jsonl", seed_rows(600))
    out = tmp_path / "out.jsonl"
    fake_openai.latency = 0.5  # long enough for the sockets to pile up, even on a busy CPU

    def limit_files():
        resource.setrlimit(resource.RLIMIT_NOFILE, (256, 256))

    args = [
        sys.executable, "-m", "evoforge.cli", "answer", "--seeds", str(seeds), "--out", str(out),
        "--llm", f"openai:fake-model@{fake_openai.base_url}", "--concurrency", "1000",
        "--quiet", "--no-cache",
    ]  # fmt: skip
    result = subprocess.run(
        args, capture_output=True, text=True, timeout=120, preexec_fn=limit_files
    )
    assert result.returncode == 0, result.stderr[-2000:]
    assert "Too many open files" not in result.stderr + result.stdout
    assert "lowered to" in result.stderr
    assert len(read_jsonl(out)) == 600
    assert 50 < fake_openai.max_in_flight <= 256
