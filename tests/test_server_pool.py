"""``--llm openai:MODEL@URL1,URL2,...``: one model on several fake servers (issue 20).

Requests go to the least-loaded server (ties round-robin), a failing server is
ejected for a cool-down and the manifest counts every server's requests."""

from __future__ import annotations

import asyncio
import contextlib
import json
import threading

import pytest

from evoforge import EngineOptions, answer
from evoforge.engine.store import cache_key
from evoforge.errors import ConfigError, TransientError
from evoforge.llm.server_pool import ServerPool
from evoforge.llm.spec import load_chat_model
from evoforge.testing.fake_openai import FakeOpenAI, Reply
from helpers import read_jsonl, write_jsonl


@pytest.fixture
def three_servers():
    with contextlib.ExitStack() as stack:
        yield [stack.enter_context(FakeOpenAI(max_seconds=300)) for _ in range(3)]


def pool_spec(servers) -> str:
    return "openai:fake-model@" + ",".join(s.base_url for s in servers)


def test_the_spec_builds_a_pool_whose_identity_names_no_server(three_servers):
    pool = load_chat_model(pool_spec(three_servers))
    assert isinstance(pool, ServerPool)
    other = load_chat_model(pool_spec(reversed(three_servers)))
    assert (
        pool.identity
        == other.identity
        == {
            "backend": "openai",
            "model": "fake-model",
            "servers": "pool",
        }
    )
    messages = [{"role": "user", "content": "hi"}]
    assert cache_key(pool.identity, messages, {}, None) == cache_key(
        other.identity, messages, {}, None
    )
    with pytest.raises(ConfigError, match="twice"):
        load_chat_model(f"openai:m@{three_servers[0].base_url},{three_servers[0].base_url}")
    with pytest.raises(ConfigError, match="two or more"):
        load_chat_model(f"openai:m@{three_servers[0].base_url},")
    with pytest.raises(ConfigError, match="cooldown"):
        load_chat_model(pool_spec(three_servers), {"cooldown": "soon"})


def test_least_in_flight_wins_and_ties_go_round_robin():
    now = [0.0]
    pool = ServerPool("m", ["http://a/v1", "http://b/v1", "http://c/v1"], clock=lambda: now[0])
    assert [pool.pick() for _ in range(6)] == [0, 1, 2, 0, 1, 2]
    pool._state[0].in_flight = 2
    pool._state[1].in_flight = 1
    assert pool.pick() == 2  # the only idle one
    pool._state[2].in_flight = 1
    assert [pool.pick() for _ in range(3)] == [1, 2, 1]  # 1 and 2 tie at one in flight
    pool._eject(pool._state[1])
    assert {pool.pick() for _ in range(4)} == {2}
    now[0] += 31.0  # the cool-down has passed: server 1 is back
    assert 1 in {pool.pick() for _ in range(4)}
    for state in pool._state:
        pool._eject(state)
    now[0] += 1.0
    pool._state[2].ejected_until = now[0] + 1.0  # ends first: every server is ejected
    assert pool.pick() == 2


def test_a_rate_limit_does_not_eject_but_a_server_error_does(three_servers):
    a, b, c = three_servers
    a.responder = lambda request: Reply.rate_limited(0.01)
    b.responder = lambda request: Reply.server_error(503)

    async def go() -> list[dict]:
        pool = ServerPool("fake-model", [s.base_url for s in three_servers])
        for _ in range(2):
            with pytest.raises(TransientError):
                await pool.complete([{"role": "user", "content": "x"}])
        reply = await pool.complete([{"role": "user", "content": "x"}])
        assert reply.text.startswith("ANSWER")
        await pool.aclose()
        return pool.server_report()

    report = asyncio.run(go())
    assert [(s["requests"], s["ejections"], s["ejected"]) for s in report] == [
        (1, 0, False),
        (1, 1, True),
        (1, 0, False),
    ]
    assert "503" in report[1]["last_error"]


def test_three_servers_one_fails_halfway_every_record_is_written(three_servers, tmp_path):
    """The third server answers its first requests, then fails every request: the run
    still writes every record (retries go to the healthy servers), and the manifest
    shows the failing server ejected and every server's counts."""
    a, b, c = three_servers
    lock = threading.Lock()
    served = [0]

    def fails_halfway(request):
        with lock:
            served[0] += 1
            return Reply.server_error(500) if served[0] > 10 else None

    c.responder = fails_halfway
    for server in three_servers:
        server.latency = 0.01
    n = 90
    seeds = write_jsonl(
        tmp_path / "seeds.jsonl",
        [{"id": f"s{i:03d}", "instruction": f"Seed {i}"} for i in range(n)],
    )
    out = tmp_path / "out.jsonl"
    options = EngineOptions(
        llm=pool_spec(three_servers),
        llm_args={"cooldown": 60},
        concurrency=6,
        backoff_base=0.01,
        cache_dir=str(tmp_path / "cache"),
        quiet=True,
    )
    summary = answer(seeds, out, options=options)
    assert summary.status == "complete" and summary.accepted == n and summary.rejected == 0
    assert sorted(r["id"] for r in read_jsonl(out)) == [f"s{i:03d}" for i in range(n)]
    manifest = json.loads(summary.manifest.read_text())
    servers = manifest["servers"]
    assert [s["url"] for s in servers] == [s.base_url for s in three_servers]
    assert servers[2]["ejected"] and servers[2]["ejections"] >= 1 and servers[2]["failures"] >= 1
    assert not servers[0]["ejected"] and not servers[1]["ejected"]
    assert servers[0]["ok"] > 0 and servers[1]["ok"] > 0 and servers[2]["ok"] == 10
    assert sum(s["requests"] for s in servers) == a.hits + b.hits + c.hits
    assert sum(s["ok"] for s in servers) == n
    # A second run hits the cache, whichever servers it is given.
    again = answer(
        seeds,
        tmp_path / "again.jsonl",
        options=EngineOptions(llm=pool_spec([b, a]), cache_dir=str(tmp_path / "cache"), quiet=True),
    )
    assert again.accepted == n and again.usage["answer"]["cache_hits"] == n
