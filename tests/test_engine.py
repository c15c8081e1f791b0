"""The engine's promises: cache, budgets, journal, flow control, reproducibility."""

from __future__ import annotations

import asyncio
import json

import pytest

from evoforge import ConfigError, EngineOptions, Record, Result, answer
from evoforge.engine.client import Limits, LLMClient
from evoforge.engine.limits import AdaptiveConcurrency, TokenBucket
from evoforge.engine.runner import Run, derive_rng
from evoforge.testing.fake_openai import Reply
from evoforge.testing.scripted import ScriptedChatModel
from helpers import read_jsonl, write_jsonl


def options(server, **overrides) -> EngineOptions:
    return EngineOptions(
        llm=f"openai:fake-model@{server.base_url}", backoff_base=0.01, quiet=True, **overrides
    )


def test_answer_writes_outputs_rejects_and_manifest(fake_openai, seeds_file, tmp_path):
    summary = answer(seeds_file(5), tmp_path / "out.jsonl", options=options(fake_openai))
    records = read_jsonl(tmp_path / "out.jsonl")
    assert [r["id"] for r in records] == [f"q{i:03d}" for i in range(5)]
    assert records[0]["output"] == "ANSWER: Question number 0?"
    assert records[0]["lineage"][0]["op"] == "answer"
    assert records[0]["lineage"][0]["prompt_id"] == "answer@v1"
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["status"] == "complete"
    assert manifest["counts"]["accepted"] == 5
    assert manifest["usage"]["answer"]["calls"] == 5
    assert manifest["config"]["prompts"]["answer"] == records[0]["lineage"][0]["prompt_hash"]
    assert manifest["model"]["base_url"] == fake_openai.base_url
    assert summary.accepted == 5 and (tmp_path / "out.rejects.jsonl").read_text() == ""


def test_rerun_makes_zero_calls_from_the_cache(fake_openai, seeds_file, tmp_path):
    seeds = seeds_file(6)
    answer(seeds, tmp_path / "a.jsonl", options=options(fake_openai))
    assert fake_openai.hits == 6
    # A different output file: the journal does not help, the cache does.
    summary = answer(seeds, tmp_path / "b.jsonl", options=options(fake_openai))
    assert fake_openai.hits == 6
    assert summary.usage["answer"]["cache_hits"] == 6
    assert read_jsonl(tmp_path / "a.jsonl") == read_jsonl(tmp_path / "b.jsonl")


def test_cache_key_includes_the_endpoint(fake_openai, seeds_file, tmp_path):
    from evoforge.testing.fake_openai import FakeOpenAI

    seeds = seeds_file(2)
    answer(seeds, tmp_path / "a.jsonl", options=options(fake_openai))
    with FakeOpenAI() as other:
        answer(seeds, tmp_path / "b.jsonl", options=options(other))
        assert other.hits == 2


def test_max_calls_stops_cleanly_and_a_rerun_finishes(fake_openai, seeds_file, tmp_path):
    seeds = seeds_file(10)
    out = tmp_path / "out.jsonl"
    first = answer(seeds, out, options=options(fake_openai, max_calls=4, concurrency=2))
    assert first.status == "stopped" and first.stop_reason == "max_calls"
    assert first.exit_code == 3
    assert first.accepted == 4 and len(read_jsonl(out)) == 4
    manifest = json.loads((tmp_path / "out.manifest.json").read_text())
    assert manifest["status"] == "stopped"
    second = answer(seeds, out, options=options(fake_openai, concurrency=2))
    assert second.status == "complete" and second.skipped_done == 4
    records = read_jsonl(out)
    assert sorted(r["id"] for r in records) == [f"q{i:03d}" for i in range(10)]
    assert fake_openai.hits == 10


def test_max_tokens_budget_stops(fake_openai, seeds_file, tmp_path):
    summary = answer(
        seeds_file(10),
        tmp_path / "o.jsonl",
        options=options(fake_openai, max_tokens=20, concurrency=1),
    )
    assert summary.stop_reason == "max_tokens"
    assert 0 < summary.accepted < 10


def test_insufficient_quota_keeps_what_was_done(fake_openai, seeds_file, tmp_path):
    fake_openai.responder = lambda r: Reply.insufficient_quota() if r.n > 3 else None
    summary = answer(
        seeds_file(10), tmp_path / "o.jsonl", options=options(fake_openai, concurrency=1)
    )
    assert summary.stop_reason == "insufficient_quota"
    assert summary.accepted == 3
    assert len(read_jsonl(tmp_path / "o.jsonl")) == 3


def test_journal_refuses_a_different_configuration(fake_openai, seeds_file, tmp_path):
    seeds, out = seeds_file(2), tmp_path / "o.jsonl"
    answer(seeds, out, options=options(fake_openai))
    with pytest.raises(ConfigError, match="--overwrite"):
        answer(seeds, out, options=options(fake_openai, temperature=0.9))
    summary = answer(seeds, out, options=options(fake_openai, temperature=0.9, overwrite=True))
    assert summary.accepted == 2 and summary.skipped_done == 0


def test_changing_concurrency_still_resumes(fake_openai, seeds_file, tmp_path):
    seeds, out = seeds_file(3), tmp_path / "o.jsonl"
    answer(seeds, out, options=options(fake_openai, concurrency=2))
    summary = answer(seeds, out, options=options(fake_openai, concurrency=7))
    assert summary.skipped_done == 3


def test_rejections_carry_reason_and_environmental_ones_retry_on_resume(
    fake_openai, seeds_file, tmp_path
):
    seeds, out = seeds_file(4), tmp_path / "o.jsonl"
    fake_openai.responder = lambda r: (
        Reply.fail(400, "bad") if "number 1?" in r.last_user
        else Reply.fail(401, "bad key") if "number 2?" in r.last_user
        else "   ...   " if "number 3?" in r.last_user
        else None
    )  # fmt: skip
    summary = answer(seeds, out, options=options(fake_openai))
    assert summary.rejected_by_reason == {"http_400": 1, "http_401": 1, "empty_answer": 1}
    rejects = {r["id"]: r for r in read_jsonl(tmp_path / "o.rejects.jsonl")}
    assert rejects["q001"]["reason"] == "http_400" and "bad" in rejects["q001"]["detail"]
    assert rejects["q001"]["record"]["instruction"] == "Question number 1?"
    fake_openai.responder = None
    hits = fake_openai.hits
    again = answer(seeds, out, options=options(fake_openai))
    # Only the 401 (the environment's fault) is asked again.
    assert fake_openai.hits == hits + 1
    assert again.accepted == 2 and again.rejected_by_reason == {"http_400": 1, "empty_answer": 1}


def test_bad_seed_rows_are_recorded_with_file_line_and_field(fake_openai, tmp_path):
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text(
        '{"instruction": "fine"}\n{"prompt": "wrong field"}\nnot json\n{"instruction": 3}\n'
    )
    summary = answer(seeds, tmp_path / "o.jsonl", options=options(fake_openai))
    assert summary.accepted == 1
    details = [r["detail"] for r in read_jsonl(tmp_path / "o.rejects.jsonl")]
    assert details == [
        f'{seeds} line 2: field "instruction" is missing (expected string)',
        f"{seeds} line 3: is not valid JSON: Expecting value (column 1)",
        f'{seeds} line 4: field "instruction" must be a string, got integer',
    ]


def test_field_mapping(fake_openai, tmp_path):
    seeds = write_jsonl(tmp_path / "s.jsonl", [{"prompt": "Map me", "category": "x"}])
    answer(
        seeds,
        tmp_path / "o.jsonl",
        options=options(fake_openai),
        field_map={"instruction": "prompt"},
    )
    record = read_jsonl(tmp_path / "o.jsonl")[0]
    assert record["instruction"] == "Map me"
    assert record["meta"]["source"] == {"category": "x"}


def test_same_seed_same_output_and_per_record_seeds(fake_openai, seeds_file, tmp_path):
    seeds = seeds_file(3)
    answer(seeds, tmp_path / "a.jsonl", options=options(fake_openai, cache=False, seed=7))
    sent_a = [r.json["seed"] for r in fake_openai.requests]
    answer(seeds, tmp_path / "b.jsonl", options=options(fake_openai, cache=False, seed=7))
    sent_b = [r.json["seed"] for r in fake_openai.requests[3:]]
    assert sorted(sent_a) == sorted(sent_b) and len(set(sent_a)) == 3
    assert derive_rng(7, "q000").random() == derive_rng(7, "q000").random()
    assert derive_rng(7, "q000").random() != derive_rng(8, "q000").random()
    assert derive_rng(7, "q000", 1).random() != derive_rng(7, "q000", 2).random()


def test_a_bug_in_a_task_rejects_that_record_only(tmp_path, capsys):
    async def task(record, ctx):
        if record.id == "r1":
            raise ValueError("boom")
        return Result.accept(record)

    items = [Record("instruction", {"instruction": f"i{i}"}, id=f"r{i}") for i in range(3)]
    run = Run(
        command="t", task=task, kind="instruction", config={},
        client=LLMClient(ScriptedChatModel("x")), out=tmp_path / "o.jsonl",
    )  # fmt: skip
    summary = asyncio.run(run.execute(items))
    assert summary.accepted == 2 and summary.rejected_by_reason == {"internal_error": 1}
    assert "ValueError: boom" in capsys.readouterr().err


def test_invalid_output_records_go_to_rejects_with_the_schema_path(tmp_path):
    async def task(record, ctx):
        return Result.accept(Record("instruction", {"instruction": ""}, id=record.id))

    run = Run(
        command="t", task=task, kind="instruction", config={},
        client=LLMClient(ScriptedChatModel("x")), out=tmp_path / "o.jsonl",
    )  # fmt: skip
    summary = asyncio.run(run.execute([Record("instruction", {"instruction": "x"}, id="a")]))
    assert summary.accepted == 0
    reject = read_jsonl(tmp_path / "o.rejects.jsonl")[0]
    assert reject["reason"] == "schema_invalid"
    assert reject["detail"].startswith("at $.instruction:")


def test_in_flight_requests_are_bounded(fake_openai, seeds_file, tmp_path):
    fake_openai.latency = 0.05
    answer(seeds_file(40), tmp_path / "o.jsonl", options=options(fake_openai, concurrency=5))
    assert fake_openai.max_in_flight == 5


def test_concurrency_halves_on_a_429_storm_and_recovers():
    async def go():
        limiter = AdaptiveConcurrency(16, cooldown=10)
        for _ in range(5):  # one storm: five 429s within the cooldown
            limiter.on_rate_limit()
        after_storm = limiter.limit
        for _ in range(200):
            limiter.on_success()
        return after_storm, limiter.limit

    after_storm, recovered = asyncio.run(go())
    assert after_storm == 8
    assert recovered == 16


def test_retry_after_pauses_every_new_request():
    async def go():
        limiter = AdaptiveConcurrency(4)
        limiter.on_rate_limit(retry_after=0.3)
        loop = asyncio.get_running_loop()
        started = loop.time()
        async with limiter:
            return loop.time() - started

    assert asyncio.run(go()) >= 0.29


def test_requests_per_minute_bucket_paces_calls():
    async def go():
        bucket = TokenBucket(600)  # 10 per second, burst of 10
        loop = asyncio.get_running_loop()
        started = loop.time()
        for _ in range(15):
            await bucket.acquire()
        return loop.time() - started

    assert 0.4 <= asyncio.run(go()) < 1.5


def test_rpm_limit_applies_to_a_run(fake_openai, seeds_file, tmp_path):
    import time

    started = time.monotonic()
    answer(seeds_file(8), tmp_path / "o.jsonl", options=options(fake_openai, rpm=300))
    # 5 per second with a burst of 5: 8 calls need at least 0.6 s.
    assert time.monotonic() - started >= 0.55


def test_unknown_engine_option_has_a_hint():
    with pytest.raises(ConfigError, match="did you mean 'concurrency'"):
        EngineOptions.from_dict({"concurency": 4})


def test_limits_are_validated():
    with pytest.raises(ConfigError, match="--concurrency"):
        EngineOptions(concurrency=0)
    assert Limits().concurrency == 16


def test_each_step_counts_its_outcomes_into_the_manifest(tmp_path):
    """The runner counts its own steps (input, the task, the schema check, the final
    selection) and a step inside the task reports through ``ctx.count``; the journal keeps
    a seed's counts with its row, so a second run over the same journal counts the same."""

    async def task(record, ctx):
        ctx.count("shorten", seen=1, kept=0 if record.id == "c" else 1,
                  rejected=["too_long"] if record.id == "c" else [])  # fmt: skip
        if record.id == "c":
            return Result.reject(record, "too_long", "over the limit")
        text = "" if record.id == "b" else "x"  # b's second record fails the schema
        return Result.accept(
            record, Record("instruction", {"instruction": text}, id=f"{record.id}/m")
        )

    class DropFirst:
        def __init__(self) -> None:
            self.seen = 0

        def drop(self, record):
            self.seen += 1
            return ("surplus", "quota met") if self.seen == 1 else None

    items = [Record("instruction", {"instruction": f"i {n}"}, id=n) for n in "abca"]

    def run_once():
        run = Run(
            command="t", task=task, kind="instruction", config={}, select=DropFirst,
            client=LLMClient(ScriptedChatModel("x")), out=tmp_path / "o.jsonl",
        )  # fmt: skip
        return asyncio.run(run.execute(items))

    summary = run_once()
    steps = json.loads((tmp_path / "o.manifest.json").read_text())["steps"]
    assert summary.steps == steps
    assert list(steps) == ["input", "t", "schema", "shorten", "select"]
    assert steps["input"] == {"in": 4, "kept": 3, "rejected": 1,
                              "rejected_by_reason": {"duplicate_id": 1}}  # fmt: skip
    assert steps["t"] == {"in": 3, "kept": 4, "rejected": 1,
                          "rejected_by_reason": {"too_long": 1}}  # fmt: skip
    assert steps["schema"] == {"in": 4, "kept": 3, "rejected": 1,
                               "rejected_by_reason": {"schema_invalid": 1}}  # fmt: skip
    assert steps["shorten"]["in"] == 3 and steps["shorten"]["kept"] == 2
    assert steps["select"] == {"in": 3, "kept": 2, "rejected": 1,
                               "rejected_by_reason": {"surplus": 1}}  # fmt: skip
    assert summary.accepted == 2
    again = run_once()  # every seed from the journal: the same counts
    assert again.skipped_done == 4 and again.steps == steps


def test_a_tasks_groups_run_together_and_keep_their_positions(tmp_path):
    """A task with ``group_key`` (rag: a sample's first chunk) has the seeds of one
    group run one after another, each group where its first seed is; positions
    (``ctx.seq``), the output's order and what a selector sees keep the input's order.
    Seeds without a key, and tasks without ``group_key``, run in input order."""
    started: list[str] = []

    class Grouped:
        def __init__(self, keyed: bool) -> None:
            self.keyed = keyed

        def group_key(self, record: Record) -> str | None:
            return record["instruction"][0] if self.keyed else None

        async def __call__(self, record: Record, ctx) -> Result:
            started.append(record.id)
            await asyncio.sleep(0)
            return Result.accept(
                Record(
                    "instruction",
                    {"instruction": f"{record['instruction']} @{ctx.seq}"},
                    id=record.id,
                )
            )

    firsts = "abcab" + "cabxa"
    items = [
        Record("instruction", {"instruction": f"{c}{i}"}, id=f"r{i}") for i, c in enumerate(firsts)
    ]
    for keyed, expected in [
        (True, ["r0", "r3", "r6", "r9", "r1", "r4", "r7", "r2", "r5", "r8"]),
        (False, [f"r{i}" for i in range(10)]),
    ]:
        started.clear()
        out = tmp_path / f"{keyed}.jsonl"
        run = Run(
            command="t", task=Grouped(keyed), kind="instruction", config={},
            client=LLMClient(ScriptedChatModel("x")), out=out, max_tasks=1,
        )  # fmt: skip
        asyncio.run(run.execute(items))
        assert started == expected
        rows = read_jsonl(out)
        assert [r["id"] for r in rows] == [f"r{i}" for i in range(10)]  # the input's order
        assert [r["instruction"].split("@")[1] for r in rows] == [str(i) for i in range(10)]
