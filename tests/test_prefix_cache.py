"""Issue 19, part 2: the fake server's simulated provider prefix cache, cached tokens per
operator in the manifest and the report, and what a `rag` run gets from it."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
import sys

import pytest
from openai import OpenAI

from evoforge import EngineOptions, answer
from evoforge.engine.client import LLMClient
from evoforge.llm.openai_backend import OpenAIChatModel
from evoforge.prompting import builtin_template
from evoforge.testing.fake_openai import FakeOpenAI
from evoforge.testing.fake_prefix_cache import PrefixCache, prompt_words
from evoforge.testing.long_corpus import make_corpus
from helpers import rag_responder, run_cli


def words(n: int, tag: str = "w") -> str:
    return " ".join(f"{tag}{i}" for i in range(n))


def chat(*texts: str, role: str = "user") -> list[dict[str, str]]:
    return [{"role": role, "content": text} for text in texts]


# ----------------------------------------------------------------------------- the rule


def test_a_shared_prefix_counts_from_1024_tokens_in_steps_of_128():
    cache = PrefixCache()
    assert cache.lookup(chat(words(1100))) == 0  # nothing seen before
    assert cache.lookup(chat(words(1100))) == 1024  # the same 1,100 tokens: 1,024 of them
    assert cache.lookup(chat(words(1300))) == 1024  # 1,100 shared, rounded down to 128s
    assert cache.lookup(chat(words(1300))) == 1280
    assert cache.lookup(chat(words(1500) + " new")) == 1280  # the longest earlier prefix


def test_below_1024_shared_tokens_nothing_is_cached():
    cache = PrefixCache()
    base = words(1023)
    assert cache.lookup(chat(base + " a" + words(500, "x"))) == 0
    assert cache.lookup(chat(base + " b" + words(500, "x"))) == 0  # 1,023 shared: too few
    assert cache.lookup(chat(words(900))) == 0  # a prompt under 1,024 tokens never is
    assert cache.lookup(chat(words(900))) == 0


def test_the_prefix_follows_messages_in_order_and_their_roles():
    cache = PrefixCache()
    context, question = words(1200, "c"), "What happened in 1888?"
    first = [*chat("Judge strictly.", role="system"), *chat(f"{context}\n\n{question}")]
    assert cache.lookup(first) == 0
    other_question = [*chat("Judge strictly.", role="system"), *chat(f"{context}\n\nWho?")]
    assert cache.lookup(other_question) == 1152  # system + context: 1,202 tokens shared
    as_system = chat("Judge strictly.", f"{context}\n\n{question}", role="system")
    assert cache.lookup(as_system) == 0  # the same words in a system message differ
    moved = [*chat(f"{context}\n\n{question}"), *chat("Judge strictly.", role="system")]
    assert cache.lookup(moved) == 0  # what comes first decides
    assert prompt_words(first)[0] == "system\x1fJudge"
    assert cache.requests == 4 and cache.cached_tokens == 1152
    assert cache.prompt_tokens == 1206 + 1203 + 1206 + 1206


def test_a_bounded_cache_evicts_the_least_recently_used_blocks():
    cache = PrefixCache(capacity_tokens=16 * 128)
    a, b, c = (chat(words(8 * 128, tag)) for tag in "abc")  # 8 blocks each
    assert [cache.lookup(a), cache.lookup(b), cache.lookup(a)] == [0, 0, 1024]  # 16 held
    assert cache.lookup(c) == 0  # 8 more: b's blocks, the least recently used, go
    assert cache.lookup(a) == 1024
    assert cache.lookup(b) == 0
    with pytest.raises(ValueError, match="at least one block"):
        PrefixCache(capacity_tokens=100)


def test_a_bounded_cache_evicts_a_prompt_from_its_end():
    """The prompt's first blocks are its most recent use, so what an eviction leaves
    is still a prefix (a chain broken at its first block would serve nothing)."""
    cache = PrefixCache(capacity_tokens=16 * 128)
    long_prompt = chat(words(12 * 128, "p"))
    cache.lookup(long_prompt)
    cache.lookup(chat(words(8 * 128, "q")))  # 20 blocks: 4 go, the long prompt's last 4
    assert cache.lookup(long_prompt) == 8 * 128


# ----------------------------------------------------------------------------- the server


def test_the_server_reports_cached_tokens_only_when_asked(fake_openai):
    client = OpenAI(base_url=fake_openai.base_url, api_key="x")
    long_prompt = chat(words(1500))
    for _ in range(2):
        reply = client.chat.completions.create(model="fake-model", messages=long_prompt)
        assert reply.usage.prompt_tokens_details is None  # off: the body as it always was
    with FakeOpenAI(prefix_cache=True, max_seconds=60) as server:
        client = OpenAI(base_url=server.base_url, api_key="x")
        got = [
            client.chat.completions.create(model="fake-model", messages=long_prompt).usage
            for _ in range(2)
        ]
        assert [u.prompt_tokens_details.cached_tokens for u in got] == [0, 1408]
        assert got[1].prompt_tokens == 1500
        assert server.prefix_cache.cached_tokens == 1408
        assert server.prefix_cache.share == pytest.approx(1408 / 3000)


@pytest.mark.parametrize("flags", [["--prefix-cache"], ["--prefix-cache-tokens", "1100"]])
def test_the_server_process_takes_prefix_cache_as_a_flag(flags):
    argv = [sys.executable, "-m", "evoforge.testing.fake_openai", "--port", "0", *flags]
    proc = subprocess.Popen(argv, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        ready = proc.stdout.readline().strip()
        assert ready.startswith("READY "), proc.stderr.read()
        client = OpenAI(base_url=ready.split(" ", 1)[1], api_key="x")
        first, other = chat(words(1100)), chat(words(1100, "o"))
        got = [
            client.chat.completions.create(model="fake-model", messages=prompt).usage
            for prompt in (first, first, other, first)
        ]
        cached = [u.prompt_tokens_details.cached_tokens for u in got]
        # Bounded to 1,100 tokens (8 blocks), the cache holds one such prompt at a time.
        assert cached == ([0, 1024, 0, 1024] if len(flags) == 1 else [0, 1024, 0, 0])
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=30)
    assert proc.returncode == 0


def test_cached_tokens_per_operator_reach_the_usage_report():
    async def go(server: FakeOpenAI) -> dict[str, dict[str, int]]:
        client = LLMClient(OpenAIChatModel("fake-model", base_url=server.base_url, api_key="x"))
        try:
            for op, tail in (("judge", "a"), ("judge", "b"), ("short", "c")):
                text = words(1300) + f" {tail}" if op == "judge" else tail
                await client.complete(chat(text), op=op)
        finally:
            await client.aclose()
        return client.usage_report()

    with FakeOpenAI(prefix_cache=True, max_seconds=60) as server:
        usage = asyncio.run(go(server))
    assert usage["judge"]["cached_tokens"] == 1280 and usage["judge"]["prompt_tokens"] == 2602
    assert "cached_tokens" not in usage["short"]  # none cached: the row as before
    with FakeOpenAI(max_seconds=60) as server:
        usage = asyncio.run(go(server))
    assert all("cached_tokens" not in row for row in usage.values())


@pytest.mark.parametrize("batch", [False, True], ids=["online", "batch"])
def test_answer_online_and_in_batch_records_cached_tokens_in_the_manifest(tmp_path, batch):
    # Three instructions share their first 1,300 words: the first is a miss, the other
    # two are served from the prefix (the answer prompt's system message + 1,300 words).
    shared = words(1300)
    rows = [{"id": f"s{i}", "instruction": f"{shared} and then {i}?"} for i in range(3)]
    seeds = tmp_path / "seeds.jsonl"
    seeds.write_text("".join(json.dumps(row) + "\n" for row in rows))
    with FakeOpenAI(prefix_cache=True, max_seconds=120) as server:
        options = EngineOptions(
            llm=f"openai:fake-model@{server.base_url}", cache=False, quiet=True,
            batch=batch, batch_poll=0.01, concurrency=1,
        )  # fmt: skip
        summary = answer(seeds, tmp_path / "out.jsonl", options=options)
        served = server.prefix_cache.cached_tokens
    assert summary.accepted == 3
    system = len(builtin_template("answer").messages[0]["content"].split())
    assert served == 2 * ((system + 1300) // 128 * 128)
    usage = json.loads((tmp_path / "out.manifest.json").read_text())["usage"]
    assert usage["answer"]["cached_tokens"] == served


def test_ray_shards_cached_tokens_add_up_on_the_driver():
    from evoforge.engine.ray_executor import _add_usage

    client = LLMClient(OpenAIChatModel("fake-model", base_url="http://127.0.0.1:9/v1"))
    row = {"calls": 2, "cache_hits": 0, "retries": 0, "reasks": 0}
    for cached in (1024, 0, 1152):  # three shards' usage_report() rows
        usage = {**row, "prompt_tokens": 2600, "completion_tokens": 10}
        usage |= {"cached_tokens": cached} if cached else {}
        _add_usage(client, {"usage": {"judge": usage}, "calls": 2, "tokens": 2610})
    assert client.usage_report()["judge"]["cached_tokens"] == 2176
    assert client.usage_report()["judge"]["prompt_tokens"] == 7800


# ----------------------------------------------------------------------------- a rag run


def test_a_rag_run_reports_its_cached_share_per_operator_and_in_the_report(tmp_path):
    make_corpus(tmp_path / "docs", docs=4, words=2000)
    out = tmp_path / "eval.jsonl"
    with FakeOpenAI(
        prefix_cache=True,
        max_seconds=300,
        responder=lambda request: rag_responder(request.messages, request.n),
    ) as server:
        result = run_cli(
            "rag", "--docs", str(tmp_path / "docs"), "--n", "10", "--out", str(out),
            "--embedder", "hashing", "--chunk-size", "1500", "--chunk-unit", "tokens",
            "--no-cache", "--quiet", "--llm", f"openai:fake-model@{server.base_url}",
            timeout=300,
        )  # fmt: skip
        assert result.returncode == 0, result.stderr
        served = server.prefix_cache.cached_tokens
        share = server.prefix_cache.share
    manifest = json.loads(out.with_name("eval.manifest.json").read_text("utf-8"))
    usage = manifest["usage"]
    assert manifest["efficiency"]["cached_share"] == round(share, 4)  # the run reports it
    assert sum(row.get("cached_tokens", 0) for row in usage.values()) == served
    assert sum(row["prompt_tokens"] for row in usage.values()) == server.prefix_cache.prompt_tokens
    # Every call over a chunk opens with the shared preamble and the chunk, so after the
    # chunk's first call (its node filter) the seed questions and the judges of its
    # samples find the chunk in the cache, whatever their template.
    seed = usage["rag_seed"]
    assert seed["cached_tokens"] >= 0.75 * seed["prompt_tokens"], seed  # 82% measured
    critics = [row for op, row in usage.items() if op.startswith("critic_") and op != "critic_fix"]
    judged = sum(row["prompt_tokens"] for row in critics)
    assert sum(row.get("cached_tokens", 0) for row in critics) >= 0.7 * judged, usage
    assert usage["node_filter"].get("cached_tokens", 0) == 0  # a chunk's first call
    # Issue 19's target: at least 40% of a rag run's prompt tokens cached (here about
    # 64% at n=10 on 4 documents; bench/prefix_cache.py measures 68% at n=100).
    assert share >= 0.40, f"cached share {share:.1%}: {usage}"
    page = (tmp_path / "report.html").read_text("utf-8")
    assert "cached prompt tokens" in page and "prefix cache served" in page
