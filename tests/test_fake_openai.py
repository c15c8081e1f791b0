"""Tests for evoforge.testing.fake_openai, driven through the real OpenAI SDK over HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import os
import signal
import subprocess
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any, TypeVar

import openai
import pytest
from openai import AsyncOpenAI, DefaultAioHttpClient

from evoforge.testing.fake_openai import (
    FakeOpenAI,
    FakeRequest,
    Reply,
    fake_embedding,
    minimal_instance,
)

T = TypeVar("T")
SRC = Path(__file__).resolve().parents[1] / "src"
USER = [{"role": "user", "content": "What is the capital of France?"}]


@pytest.fixture
def server() -> Iterator[FakeOpenAI]:
    with FakeOpenAI(latency=0.0) as srv:
        yield srv


@asynccontextmanager
async def sdk(base_url: str) -> AsyncIterator[AsyncOpenAI]:
    client = AsyncOpenAI(
        base_url=base_url, api_key="test", max_retries=0, http_client=DefaultAioHttpClient()
    )
    try:
        yield client
    finally:
        await client.close()


def run_with_client(base_url: str, fn: Callable[[AsyncOpenAI], Awaitable[T]]) -> T:
    async def main() -> T:
        async with sdk(base_url) as client:
            return await fn(client)

    return asyncio.run(main())


async def ask(client: AsyncOpenAI, text: str = "hi", **kwargs: Any) -> Any:
    return await client.chat.completions.create(
        model="fake-model", messages=[{"role": "user", "content": text}], **kwargs
    )


def test_default_reply_and_usage(server: FakeOpenAI) -> None:
    messages = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": "What is the capital of France?"},
    ]

    async def call(client: AsyncOpenAI) -> Any:
        return await client.chat.completions.create(model="my-model", messages=messages)

    result = run_with_client(server.base_url, call)
    assert result.object == "chat.completion"
    assert result.model == "my-model"
    assert result.id
    assert isinstance(result.created, int)
    choice = result.choices[0]
    assert choice.message.role == "assistant"
    assert choice.message.content == "ANSWER: What is the capital of France?"
    assert choice.finish_reason == "stop"
    assert result.usage is not None
    assert result.usage.prompt_tokens == 3 + 6
    assert result.usage.completion_tokens == 7
    assert result.usage.total_tokens == 16
    assert server.hits == 1
    assert server.hits_by_path == {"/v1/chat/completions": 1}
    (seen,) = server.requests
    assert seen.n == 1
    assert seen.model == "my-model"
    assert seen.last_user == "What is the capital of France?"
    assert seen.messages == messages
    assert seen.headers["authorization"] == "Bearer test"


def test_default_reply_truncates_and_counts_at_least_one(server: FakeOpenAI) -> None:
    long_text = "word " * 40
    short = run_with_client(server.base_url, lambda c: ask(c, ""))
    assert short.choices[0].message.content == "ANSWER: "
    assert short.usage.prompt_tokens == 1
    assert short.usage.completion_tokens == 1
    long = run_with_client(server.base_url, lambda c: ask(c, long_text))
    assert long.choices[0].message.content == "ANSWER: " + long_text[:60]


def test_json_response_formats(server: FakeOpenAI) -> None:
    schema = {
        "type": "object",
        "properties": {
            "question": {"type": "string"},
            "score": {"type": "integer", "minimum": 3},
            "ratio": {"type": "number"},
            "ok": {"type": "boolean"},
            "tags": {"type": "array", "items": {"type": "string"}},
            "kind": {"enum": ["a", "b"]},
            "optional": {"type": "string"},
        },
        "required": ["question", "score", "ratio", "ok", "tags", "kind"],
        "additionalProperties": False,
    }

    async def call(client: AsyncOpenAI) -> tuple[Any, Any]:
        structured = await ask(
            client,
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "qa", "schema": schema, "strict": True},
            },
        )
        loose = await ask(client, "give json", response_format={"type": "json_object"})
        return structured, loose

    structured, loose = run_with_client(server.base_url, call)
    assert json.loads(structured.choices[0].message.content) == {
        "question": "x",
        "score": 3,
        "ratio": 1,
        "ok": True,
        "tags": [],
        "kind": "a",
    }
    assert isinstance(json.loads(loose.choices[0].message.content), dict)


def test_minimal_instance_handles_refs_and_nullable() -> None:
    schema = {
        "$defs": {"Item": {"type": "object", "properties": {"name": {"type": "string"}}}},
        "type": "object",
        "properties": {
            "items": {"type": "array", "items": {"$ref": "#/$defs/Item"}, "minItems": 1},
            "maybe": {"anyOf": [{"type": "null"}, {"type": "integer"}]},
            "either": {"type": ["null", "boolean"]},
        },
    }
    assert minimal_instance(schema) == {"items": [{"name": "x"}], "maybe": 1, "either": True}


def test_scripted_queue_is_fifo_then_falls_back(server: FakeOpenAI) -> None:
    server.enqueue("first", Reply(content="second", finish_reason="length"), "third")
    assert server.pending == 3

    async def calls(client: AsyncOpenAI) -> list[Any]:
        return [await ask(client, f"q{i}") for i in range(4)]

    results = run_with_client(server.base_url, calls)
    assert [r.choices[0].message.content for r in results] == [
        "first",
        "second",
        "third",
        "ANSWER: q3",
    ]
    assert results[1].choices[0].finish_reason == "length"
    assert server.pending == 0
    assert [r.n for r in server.requests] == [1, 2, 3, 4]


def test_responder_sees_hit_numbers_and_can_be_swapped(server: FakeOpenAI) -> None:
    def responder(req: FakeRequest) -> str | None:
        return None if req.n == 2 else f"hit {req.n}: {req.last_user}"

    server.responder = responder

    async def calls(client: AsyncOpenAI) -> list[str]:
        out = [(await ask(client, f"m{i}")).choices[0].message.content for i in range(3)]
        server.responder = lambda req: {  # a dict is sent verbatim
            "id": "custom",
            "object": "chat.completion",
            "created": 0,
            "model": "raw",
            "choices": [
                {
                    "index": 0,
                    "message": {"role": "assistant", "content": "verbatim"},
                    "finish_reason": "stop",
                }
            ],
        }
        out.append((await ask(client)).choices[0].message.content)
        server.enqueue("queued beats responder")
        out.append((await ask(client)).choices[0].message.content)
        return out

    assert run_with_client(server.base_url, calls) == [
        "hit 1: m0",
        "ANSWER: m1",
        "hit 3: m2",
        "verbatim",
        "queued beats responder",
    ]


def test_async_responder_and_usage_override(server: FakeOpenAI) -> None:
    async def responder(req: FakeRequest) -> Reply:
        await asyncio.sleep(0)
        return Reply(content="async", usage={"prompt_tokens": 5, "completion_tokens": 6})

    server.responder = responder
    result = run_with_client(server.base_url, ask)
    assert result.choices[0].message.content == "async"
    assert result.usage.prompt_tokens == 5
    assert result.usage.completion_tokens == 6


def test_responder_exception_becomes_500_and_is_recorded(server: FakeOpenAI) -> None:
    def boom(req: FakeRequest) -> str:
        raise ValueError("kaput")

    server.responder = boom
    with pytest.raises(openai.InternalServerError):
        run_with_client(server.base_url, ask)
    assert len(server.errors) == 1
    assert isinstance(server.errors[0], ValueError)


def test_rate_limit_with_retry_after(server: FakeOpenAI) -> None:
    server.enqueue(Reply.rate_limited(1), Reply.rate_limited(retry_after_ms=200))
    with pytest.raises(openai.RateLimitError) as info:
        run_with_client(server.base_url, ask)
    assert info.value.status_code == 429
    assert info.value.response.headers["retry-after"] == "1"
    assert info.value.code == "rate_limit_exceeded"
    with pytest.raises(openai.RateLimitError) as info:
        run_with_client(server.base_url, ask)
    assert info.value.response.headers["retry-after-ms"] == "200"

    server.enqueue(Reply(status=429, headers={"retry-after": "2"}))  # defaults for the body
    with pytest.raises(openai.RateLimitError) as info:
        run_with_client(server.base_url, ask)
    assert info.value.response.headers["retry-after"] == "2"
    assert isinstance(info.value.body, dict)
    assert info.value.body["type"] == "rate_limit_exceeded"


def test_server_error(server: FakeOpenAI) -> None:
    server.enqueue(Reply(status=500), Reply.server_error(503))
    with pytest.raises(openai.InternalServerError) as info:
        run_with_client(server.base_url, ask)
    assert info.value.status_code == 500
    with pytest.raises(openai.InternalServerError) as info:
        run_with_client(server.base_url, ask)
    assert info.value.status_code == 503


def test_insufficient_quota_and_context_length(server: FakeOpenAI) -> None:
    server.enqueue(Reply.insufficient_quota(), Reply.context_length_exceeded())
    with pytest.raises(openai.RateLimitError) as quota:
        run_with_client(server.base_url, ask)
    assert quota.value.code == "insufficient_quota"
    assert isinstance(quota.value.body, dict)
    assert quota.value.body["type"] == "insufficient_quota"
    with pytest.raises(openai.BadRequestError) as too_long:
        run_with_client(server.base_url, ask)
    assert too_long.value.code == "context_length_exceeded"


def test_disconnect_is_a_connection_error(server: FakeOpenAI) -> None:
    server.enqueue(Reply.drop())

    async def calls(client: AsyncOpenAI) -> Any:
        with pytest.raises(openai.APIConnectionError):
            await ask(client)
        return await ask(client, "after")  # the client recovers on a new connection

    result = run_with_client(server.base_url, calls)
    assert result.choices[0].message.content == "ANSWER: after"
    assert server.hits == 2


def test_latency_is_respected_and_per_reply_delay_overrides(server: FakeOpenAI) -> None:
    server.latency = 0.2

    async def timed(client: AsyncOpenAI) -> float:
        start = time.perf_counter()
        await ask(client)
        return time.perf_counter() - start

    assert run_with_client(server.base_url, timed) >= 0.2
    server.enqueue(Reply(content="quick", delay=0.0))
    assert run_with_client(server.base_url, timed) < 0.2


def test_max_in_flight_counts_concurrent_requests(server: FakeOpenAI) -> None:
    server.latency = 0.1

    async def burst(client: AsyncOpenAI) -> list[Any]:
        return await asyncio.gather(*(ask(client, str(i)) for i in range(10)))

    started = time.perf_counter()
    results = run_with_client(server.base_url, burst)
    elapsed = time.perf_counter() - started
    assert len(results) == 10
    assert server.max_in_flight == 10
    assert server.in_flight == 0
    assert server.hits == 10
    assert elapsed < 1.0  # the latency sleeps overlap


def test_embeddings_shape_and_determinism(server: FakeOpenAI) -> None:
    async def calls(client: AsyncOpenAI) -> tuple[Any, Any, Any, Any]:
        many = await client.embeddings.create(model="emb", input=["alpha", "beta", "alpha"])
        one = await client.embeddings.create(model="emb", input="alpha")
        wide = await client.embeddings.create(model="emb", input="alpha", dimensions=32)
        floats = await client.embeddings.create(
            model="emb", input=["alpha"], encoding_format="float"
        )
        return many, one, wide, floats

    # The SDK asks for base64 by default and decodes float32 vectors.
    many, one, wide, floats = run_with_client(server.base_url, calls)
    vectors = [d.embedding for d in many.data]
    assert [d.index for d in many.data] == [0, 1, 2]
    assert all(len(v) == 8 for v in vectors)
    assert vectors[0] == vectors[2] != vectors[1]
    assert one.data[0].embedding == vectors[0]
    assert math.isclose(math.sqrt(sum(x * x for x in vectors[1])), 1.0, rel_tol=1e-6)
    assert len(wide.data[0].embedding) == 32
    assert vectors[0] == pytest.approx(fake_embedding("alpha", 8))
    assert floats.data[0].embedding == fake_embedding("alpha", 8)  # exact without base64
    assert server.embedding_requests[0].json["encoding_format"] == "base64"
    assert many.usage.prompt_tokens == 3
    assert server.embedding_hits == 4
    assert server.hits == 0  # chat counter only


def test_models_and_paths_without_v1_prefix(server: FakeOpenAI) -> None:
    async def calls(client: AsyncOpenAI) -> tuple[list[str], Any]:
        models = [m.id async for m in client.models.list()]
        async with sdk(server.url) as bare:
            result = await ask(bare, "bare")
        return models, result

    models, result = run_with_client(server.base_url, calls)
    assert "fake-model" in models
    assert result.choices[0].message.content == "ANSWER: bare"
    assert server.hits_by_path == {"/v1/models": 1, "/chat/completions": 1}


def test_record_false_keeps_counters_only() -> None:
    with FakeOpenAI(record=False) as srv:
        run_with_client(srv.base_url, ask)
        assert srv.hits == 1
        assert srv.requests == []
    with pytest.raises(RuntimeError):
        _ = srv.base_url


def test_async_context_manager_runs_in_callers_loop() -> None:
    async def main() -> str:
        async with FakeOpenAI() as srv, sdk(srv.base_url) as client:
            srv.enqueue("same loop")
            return (await ask(client)).choices[0].message.content

    assert asyncio.run(main()) == "same loop"


def test_start_stop_restart() -> None:
    srv = FakeOpenAI().start()
    try:
        first = srv.port
        assert first
    finally:
        srv.stop()
    srv.stop()  # idempotent
    with srv:
        assert run_with_client(srv.base_url, ask).choices[0].message.content == "ANSWER: hi"
    assert srv.port is None


def test_max_seconds_stops_thread_by_itself() -> None:
    srv = FakeOpenAI(max_seconds=0.2).start()
    try:
        thread = srv._thread
        assert thread is not None
        thread.join(5)
        assert not thread.is_alive()
    finally:
        srv.stop()


def _spawn(*args: str) -> tuple[subprocess.Popen[str], str]:
    paths = [str(SRC), *filter(None, [os.environ.get("PYTHONPATH")])]
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(paths)}
    proc = subprocess.Popen(
        [sys.executable, "-m", "evoforge.testing.fake_openai", "--port", "0", *args],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline().strip()
    if not line.startswith("READY http://127.0.0.1:"):
        proc.kill()
        _, err = proc.communicate()
        pytest.fail(f"no READY line: {line!r}\n{err}")
    return proc, line.split(" ", 1)[1]


def _finish(proc: subprocess.Popen[str]) -> tuple[int, str]:
    try:
        _, err = proc.communicate(timeout=10)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.communicate()
        raise
    return proc.returncode, err


def test_subprocess_mode_serves_and_stops_on_sigterm() -> None:
    proc, base_url = _spawn("--latency", "0.01", "--no-record")
    try:
        assert base_url.endswith("/v1")
        result = run_with_client(base_url, lambda c: ask(c, "from a process"))
        assert result.choices[0].message.content == "ANSWER: from a process"
    finally:
        proc.send_signal(signal.SIGTERM)
        code, err = _finish(proc)
    assert code == 0, err
    assert err == ""


def test_subprocess_mode_max_seconds() -> None:
    proc, _ = _spawn("--max-seconds", "0.3")
    code, err = _finish(proc)
    assert code == 0, err


def test_throughput_sanity(capsys: pytest.CaptureFixture[str]) -> None:
    total, concurrency = 2000, 128
    with FakeOpenAI(latency=0.05, record=False) as srv:

        async def load(client: AsyncOpenAI) -> float:
            remaining = iter(range(total))

            async def worker() -> None:
                for i in remaining:
                    await ask(client, f"request {i}")

            start = time.perf_counter()
            await asyncio.gather(*(worker() for _ in range(concurrency)))
            return time.perf_counter() - start

        wall = run_with_client(srv.base_url, load)
        assert srv.hits == total
        assert srv.max_in_flight <= concurrency
    with capsys.disabled():
        print(
            f"\n[fake_openai] {total} requests, concurrency {concurrency}, latency 50 ms, "
            f"in-thread server: {wall:.2f} s ({total / wall:.0f} req/s)"
        )
    assert wall < 30
