"""The retry and rate-limit schedule, waited on a fake clock: LLMClient talks to the fake
OpenAI server over real HTTP, but every backoff, Retry-After pause and token-bucket wait
goes through a FakeClock that records it and moves virtual time instead of sleeping.
So the exact waits are checked (jitter included, against an independent copy of the
jitter generator), a Retry-After of minutes costs no real time, and each request's
arrival at the server is stamped with virtual time."""

from __future__ import annotations

import asyncio
import random
import time
from itertools import pairwise

import pytest

from evoforge.engine.client import Limits, LLMClient, RetryPolicy
from evoforge.engine.limits import AdaptiveConcurrency
from evoforge.errors import RequestRejected, RunStopped
from evoforge.llm.openai_backend import OpenAIChatModel
from evoforge.testing.fake_clock import FakeClock
from evoforge.testing.fake_openai import Reply

pytestmark = pytest.mark.reliability

JITTER_SEED = 11
MESSAGES = [{"role": "user", "content": "hello there"}]


class Script:
    """Answers the server's requests from ``replies`` in order (then the default reply)
    and stamps each arrival with the fake clock's time."""

    def __init__(self, server, clock: FakeClock, replies) -> None:
        self.clock = clock
        self.replies = list(replies)
        self.arrivals: list[float] = []
        server.responder = self

    def __call__(self, request):
        self.arrivals.append(self.clock.now())
        return self.replies.pop(0) if self.replies else None


def ask(server, clock: FakeClock, *, policy: RetryPolicy, limits=None, calls=1, params=None):
    """``calls`` completions one after another through one LLMClient on ``clock``."""

    async def go():
        client = LLMClient(
            OpenAIChatModel("fake-model", base_url=server.base_url),
            retry=policy,
            limits=limits,
            jitter_seed=JITTER_SEED,
            clock=clock,
        )
        try:
            return [await client.complete(MESSAGES, op="t", params=params) for _ in range(calls)]
        finally:
            await client.aclose()

    return asyncio.run(asyncio.wait_for(go(), 30))  # a real sleep of minutes would fail here


def gaps(times: list[float]) -> list[float]:
    return [later - earlier for earlier, later in pairwise(times)]


def fault_reply(fault: str) -> Reply:
    if fault == "reset":
        return Reply.drop()
    if fault == "hang":
        return Reply(content="too late", delay=0.5)  # five times the client's timeout
    return Reply.server_error(int(fault), "try again")


@pytest.mark.parametrize("fault", ["500", "502", "503", "408", "reset", "hang"])
def test_transient_faults_wait_the_exponential_jittered_capped_schedule(fake_openai, fault):
    """Five failures, then an answer: the five waits are base * 2**(k-1), capped at
    backoff_max, times a jitter in [0.5, 1] -- exactly the jitter generator's draws -- and
    each retry reaches the server that long (virtual time) after the one before."""
    clock = FakeClock()
    script = Script(fake_openai, clock, [fault_reply(fault)] * 5)
    # A hung server is given up on by the real per-attempt timeout; the waits are virtual.
    policy = RetryPolicy(backoff_base=1.0, backoff_max=4.0, max_attempts=6, request_timeout=0.1)
    started = time.monotonic()
    (completion,) = ask(fake_openai, clock, policy=policy)
    elapsed = time.monotonic() - started

    assert completion.text == "ANSWER: hello there"
    ideal = [1.0, 2.0, 4.0, 4.0, 4.0]
    jitter = random.Random(JITTER_SEED)
    assert clock.sleeps == [wait * jitter.uniform(0.5, 1.0) for wait in ideal]
    for wait, cap in zip(clock.sleeps, ideal, strict=True):
        assert 0.5 * cap <= wait <= cap <= policy.backoff_max
    assert len(script.arrivals) == 6 and fake_openai.hits == 6
    assert gaps(script.arrivals) == pytest.approx(clock.sleeps)
    assert elapsed < sum(clock.sleeps) / 2, "the backoff was slept in real time"


def test_retries_used_up_reject_the_request_after_the_whole_schedule(fake_openai):
    """Every attempt fails: max_attempts requests, max_attempts - 1 waits, then
    RequestRejected("retries_exhausted")."""
    clock = FakeClock()
    script = Script(fake_openai, clock, [Reply.server_error(503)] * 10)
    policy = RetryPolicy(backoff_base=2.0, backoff_max=60.0, max_attempts=4)
    with pytest.raises(RequestRejected) as info:
        ask(fake_openai, clock, policy=policy)
    assert info.value.reason == "retries_exhausted" and info.value.status == 503
    jitter = random.Random(JITTER_SEED)
    assert clock.sleeps == [wait * jitter.uniform(0.5, 1.0) for wait in (2.0, 4.0, 8.0)]
    assert len(script.arrivals) == 4
    assert gaps(script.arrivals) == pytest.approx(clock.sleeps)


def test_a_429_waits_exactly_its_retry_after_and_is_not_resent_before(fake_openai):
    """Retry-After replaces the backoff: the wait is the server's number (plus at most
    0.05 s of jitter), up to and including the cap, and no request is re-sent before
    it has passed in virtual time."""
    clock = FakeClock()
    replies = [Reply.rate_limited(7), Reply.rate_limited(0.5), Reply.rate_limited(300)]
    script = Script(fake_openai, clock, replies)
    policy = RetryPolicy(backoff_base=1.0, max_attempts=6, max_retry_after=300)
    (completion,) = ask(fake_openai, clock, policy=policy)

    assert completion.text == "ANSWER: hello there"
    jitter = random.Random(JITTER_SEED)
    assert clock.sleeps == [told + jitter.uniform(0, 0.05) for told in (7, 0.5, 300)]
    assert len(script.arrivals) == 4
    for gap, told in zip(gaps(script.arrivals), (7, 0.5, 300), strict=True):
        assert told <= gap <= told + 0.05


def test_a_retry_after_above_the_cap_stops_the_run_without_waiting(fake_openai):
    """A Retry-After under the cap is waited; the next one, above it, stops the run
    (retry_after_too_long) at once: no further wait, no further request."""
    clock = FakeClock()
    script = Script(fake_openai, clock, [Reply.rate_limited(2), Reply.rate_limited(3600)])
    policy = RetryPolicy(backoff_base=1.0, max_attempts=6, max_retry_after=300)
    with pytest.raises(RunStopped) as info:
        ask(fake_openai, clock, policy=policy)
    assert info.value.reason == "retry_after_too_long"
    assert "3600" in str(info.value) and "re-run" in str(info.value).lower()
    jitter = random.Random(JITTER_SEED)
    assert clock.sleeps == [2 + jitter.uniform(0, 0.05)]
    assert len(script.arrivals) == 2 and fake_openai.hits == 2


def test_the_requests_per_minute_bucket_paces_calls_in_virtual_time(fake_openai):
    """rpm 120 is 2 requests a second with a burst of 2: six calls reach the server at
    0, 0, 0.5, 1, 1.5 and 2 s."""
    clock = FakeClock()
    script = Script(fake_openai, clock, [])
    ask(fake_openai, clock, policy=RetryPolicy(), limits=Limits(rpm=120), calls=6)
    assert clock.sleeps == [0.5] * 4
    assert script.arrivals == [0, 0, 0.5, 1.0, 1.5, 2.0]


def test_the_tokens_per_minute_bucket_waits_for_the_tokens_a_call_used(fake_openai):
    """tpm 7680 is 128 tokens a second, a bucket of 128. Each call reserves its estimate
    (prompt chars / 4 + max_tokens = 2 + 126 here) and is corrected by the usage the server
    reports: after a call that used 128 the next waits 1 s, after one that used 64 only
    0.5 s."""
    clock = FakeClock()

    def used(total: int) -> Reply:
        return Reply(content="ok", usage={"prompt_tokens": 10, "completion_tokens": total - 10})

    script = Script(fake_openai, clock, [used(128), used(64), used(128), used(128)])
    ask(
        fake_openai, clock, policy=RetryPolicy(), limits=Limits(tpm=7680), calls=4,
        params={"max_tokens": 126},
    )  # fmt: skip
    assert clock.sleeps == [1.0, 0.5, 1.0]
    assert script.arrivals == [0, 1.0, 1.5, 2.5]


def test_a_retry_after_holds_every_new_request_until_it_has_passed():
    """After a 429 with Retry-After 30 at 0 s, a request that starts at 10 s waits the
    20 s left and takes its concurrency slot at 30 s; one after the pause does not wait."""
    clock = FakeClock()
    limiter = AdaptiveConcurrency(4, clock=clock)

    async def go():
        limiter.on_rate_limit(retry_after=30)
        clock.time += 10
        async with limiter:
            held = clock.now()
        async with limiter:
            pass
        return held

    assert asyncio.run(go()) == 30
    assert clock.sleeps == [20]
