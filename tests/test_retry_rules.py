"""Every retry rule of the engine, through the real OpenAI SDK and real HTTP."""

from __future__ import annotations

import asyncio
import time

import pytest

from evoforge.engine.client import LLMClient, RetryPolicy
from evoforge.errors import RequestRejected, RunStopped
from evoforge.llm.openai_backend import TRANSPORTS, OpenAIChatModel, retry_after_seconds
from evoforge.testing.fake_openai import Reply

pytestmark = pytest.mark.reliability

MESSAGES = [{"role": "user", "content": "hello there"}]


@pytest.fixture(params=TRANSPORTS)
def transport(request):
    """Every rule holds for both transports: the lean aiohttp one and the official SDK."""
    return request.param


def ask(server, transport, *, policy: RetryPolicy | None = None, schema=None):
    async def go():
        client = LLMClient(
            OpenAIChatModel("fake-model", base_url=server.base_url, transport=transport),
            retry=policy or RetryPolicy(backoff_base=0.01, max_attempts=4),
        )
        try:
            return await client.complete(MESSAGES, op="t", schema=schema), client
        finally:
            await client.aclose()

    return asyncio.run(go())


def test_plain_completion_and_usage(fake_openai, transport):
    completion, client = ask(fake_openai, transport)
    assert completion.text == "ANSWER: hello there"
    assert completion.usage.prompt_tokens == 2
    assert client.stats["t"].calls == 1
    # The SDK's own retries are off: the engine owns them.
    assert fake_openai.hits == 1


@pytest.mark.parametrize("status", [408, 409, 429, 500, 502, 503, 504])
def test_transient_statuses_are_retried(fake_openai, transport, status):
    fake_openai.enqueue(Reply.fail(status), Reply.fail(status), "finally")
    completion, client = ask(fake_openai, transport)
    assert completion.text == "finally"
    assert fake_openai.hits == 3
    assert client.stats["t"].retries == 2


def test_connection_drop_is_retried(fake_openai, transport):
    fake_openai.enqueue(Reply.drop(), "back again")
    completion, _ = ask(fake_openai, transport)
    assert completion.text == "back again"
    assert fake_openai.hits == 2


def test_timeout_is_retried(fake_openai, transport):
    fake_openai.enqueue(Reply(content="too late", delay=2.0), "in time")
    policy = RetryPolicy(backoff_base=0.01, request_timeout=0.3)
    completion, _ = ask(fake_openai, transport, policy=policy)
    assert completion.text == "in time"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422])
def test_client_errors_are_not_retried_and_become_rejections(fake_openai, transport, status):
    fake_openai.enqueue(Reply.fail(status, "nope"))
    with pytest.raises(RequestRejected) as info:
        ask(fake_openai, transport)
    assert info.value.reason == f"http_{status}"
    assert fake_openai.hits == 1


def test_context_length_exceeded_is_not_retried(fake_openai, transport):
    fake_openai.enqueue(Reply.context_length_exceeded())
    with pytest.raises(RequestRejected) as info:
        ask(fake_openai, transport)
    assert info.value.reason == "context_length_exceeded"
    assert fake_openai.hits == 1


def test_insufficient_quota_stops_the_run_at_once(fake_openai, transport):
    fake_openai.enqueue(Reply.insufficient_quota())
    with pytest.raises(RunStopped) as info:
        ask(fake_openai, transport)
    assert info.value.reason == "insufficient_quota"
    assert "re-run" in str(info.value)
    assert fake_openai.hits == 1


def test_retries_exhausted_is_a_rejection_with_the_last_error(fake_openai, transport):
    fake_openai.responder = lambda request: Reply.fail(503, "overloaded")
    with pytest.raises(RequestRejected) as info:
        ask(fake_openai, transport, policy=RetryPolicy(backoff_base=0.01, max_attempts=3))
    assert info.value.reason == "retries_exhausted"
    assert "overloaded" in str(info.value)
    assert fake_openai.hits == 3


def test_retry_after_is_respected(fake_openai, transport):
    fake_openai.enqueue(Reply.rate_limited(1), "ok")
    started = time.monotonic()
    completion, client = ask(fake_openai, transport)
    assert completion.text == "ok"
    assert time.monotonic() - started >= 1.0
    assert client.concurrency.reductions == 1


def test_retry_after_ms_is_respected(fake_openai, transport):
    fake_openai.enqueue(Reply.rate_limited(retry_after_ms=400), "ok")
    started = time.monotonic()
    ask(fake_openai, transport)
    elapsed = time.monotonic() - started
    assert 0.4 <= elapsed < 3.0


def test_retry_after_past_the_cap_stops_the_run(fake_openai, transport):
    fake_openai.enqueue(Reply.rate_limited(3600))
    policy = RetryPolicy(backoff_base=0.01, max_retry_after=60)
    started = time.monotonic()
    with pytest.raises(RunStopped) as info:
        ask(fake_openai, transport, policy=policy)
    assert info.value.reason == "retry_after_too_long"
    assert time.monotonic() - started < 5


def test_retry_after_header_forms():
    assert retry_after_seconds({"retry-after": "2"}) == 2.0
    assert retry_after_seconds({"retry-after-ms": "1500", "retry-after": "9"}) == 1.5
    assert retry_after_seconds({}) is None
    http_date = retry_after_seconds({"retry-after": "Wed, 21 Oct 2015 07:28:00 GMT"})
    assert http_date == 0.0  # a date in the past means "now"


def test_json_schema_goes_as_response_format(fake_openai, transport):
    schema = {
        "type": "object",
        "required": ["question"],
        "properties": {"question": {"type": "string"}},
    }
    completion, _ = ask(fake_openai, transport, schema=schema)
    sent = fake_openai.requests[0].json["response_format"]
    assert sent["type"] == "json_schema" and sent["json_schema"]["schema"] == schema
    assert completion.parsed == {"question": "x"}


def test_server_without_response_format_falls_back_to_prompting(fake_openai, transport):
    schema = {"type": "object", "required": ["a"], "properties": {"a": {"type": "string"}}}

    def responder(request):
        if "response_format" in request.json:
            return Reply.fail(400, "response_format is not supported by this server")
        return '{"a": "fine"}'

    fake_openai.responder = responder
    completion, _ = ask(fake_openai, transport, schema=schema)
    assert completion.parsed == {"a": "fine"}
    assert "JSON Schema" in fake_openai.requests[-1].messages[0]["content"]
