"""The policy around a ChatModel: cache, rate limits, retries, budgets, accounting.

Backends only speak their protocol and classify their failures; everything a
run decides about a call is here, once:

- a prompt that cannot fit the model's context window is rejected ``too_long``
  before it is sent (:mod:`evoforge.engine.context_window`);
- a cached answer is returned without a call (key: backend identity, model,
  messages, params -- ``logprobs``/``top_logprobs`` included -- schema, prompt
  hash); the cached completion keeps its token logprobs;
- requests wait for a concurrency slot (halved on a 429 storm, recovering) and
  for the requests/min and tokens/min buckets;
- ``TransientError`` is retried with jittered exponential backoff, or exactly
  the server's ``Retry-After``; a ``Retry-After`` longer than the cap stops the
  run (resumable) instead of sleeping for it;
- every one of those waits reads and sleeps on ``clock`` (real time unless a test passes
  a fake one);
- retries used up -> ``RequestRejected("retries_exhausted")``; quota gone ->
  ``RunStopped("insufficient_quota")``; budgets spent -> ``RunStopped``.
"""

from __future__ import annotations

import asyncio
import dataclasses
import random
from collections import defaultdict
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from typing import Any, TypeVar

from tenacity import (
    AsyncRetrying,
    RetryCallState,
    retry_if_exception_type,
    stop_after_attempt,
)

from evoforge.engine.clock import Clock
from evoforge.engine.context_window import ContextLimit
from evoforge.engine.limits import AdaptiveConcurrency, TokenBucket
from evoforge.engine.store import ResponseCache, cache_key
from evoforge.engine.structured import ReplyError, check_reply, reask_messages
from evoforge.errors import QuotaExhausted, RequestRejected, RunStopped, TransientError
from evoforge.llm.base import ChatModel, Completion, Message
from evoforge.options import EngineOptions as _Defaults  # the one home of engine defaults

T = TypeVar("T")


@dataclass
class RetryPolicy:
    """How transient failures are retried (defaults: :class:`evoforge.options.EngineOptions`)."""

    max_attempts: int = _Defaults.max_attempts
    backoff_base: float = _Defaults.backoff_base  # first wait; doubles each attempt, with jitter
    backoff_max: float = 60.0
    max_retry_after: float = _Defaults.max_retry_wait  # a longer server wait stops the run
    request_timeout: float | None = _Defaults.timeout  # seconds per attempt; None = no limit


@dataclass
class Limits:
    concurrency: int = _Defaults.concurrency
    rpm: float | None = None
    tpm: float | None = None
    max_calls: int | None = None
    max_tokens: int | None = None


@dataclass
class OpStats:
    calls: int = 0
    cache_hits: int = 0
    retries: int = 0
    reasks: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    cached_tokens: int = 0  # of prompt_tokens, served by the provider's prefix cache


class LLMClient:
    """One model behind the engine's policies. Shared by every record of a run."""

    def __init__(
        self,
        model: ChatModel,
        *,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        cache: ResponseCache | None = None,
        params: dict[str, Any] | None = None,
        jitter_seed: int = 0,
        clock: Clock | None = None,
        context: ContextLimit | None = None,
    ) -> None:
        self.model = model
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.params = dict(params or {})
        self.stats: dict[str, OpStats] = defaultdict(OpStats)
        self.clock = clock or Clock()
        self.concurrency = AdaptiveConcurrency(self.limits.concurrency, clock=self.clock)
        self._rpm = TokenBucket(self.limits.rpm, clock=self.clock) if self.limits.rpm else None
        self._tpm = TokenBucket(self.limits.tpm, clock=self.clock) if self.limits.tpm else None
        self._jitter = random.Random(jitter_seed)
        self.calls_sent = 0
        self.tokens_used = 0
        # Called right before a request goes on the wire. The runner commits its pending
        # journal rows and cache entries here, so whatever finished before a request was
        # sent is on disk: a kill -9 can only cost the requests in flight.
        self.before_send: Callable[[], None] | None = None
        # A prompt that cannot fit the model's window is rejected (too_long), not sent.
        self.context = context

    @property
    def model_name(self) -> str:
        identity = self.model.identity
        return identity.get("model", identity.get("backend", "?"))

    def usage_report(self) -> dict[str, dict[str, int]]:
        # cached_tokens only where a provider reported some: manifests stay as they were.
        return {op: _usage_row(stats) for op, stats in sorted(self.stats.items())}

    async def complete(
        self,
        messages: list[Message],
        *,
        op: str,
        schema: dict[str, Any] | None = None,
        tag: str = "",
        params: dict[str, Any] | None = None,
        validate: bool = True,
    ) -> Completion:
        """One completion through cache, limits and retries; ``parsed`` set when ``schema``.

        With a schema, an unusable reply is re-asked once quoting the error; a
        second failure raises ``RequestRejected`` with ``invalid_json`` or
        ``schema_mismatch``. ``validate=False`` still sends the schema (a
        ``response_format``, guided decoding) but returns the reply unchecked, for a
        caller that reads it itself and has a fallback for a server that wrote text.
        """
        call_params = {**self.params, **(params or {})}
        completion = await self._cached_call(messages, schema, call_params, tag, op)
        if schema is None or not validate:
            return completion
        try:
            return _with_parsed(completion, check_reply(completion.text, schema))
        except ReplyError as first:
            self.stats[op].reasks += 1
            retry_messages = reask_messages(messages, completion.text, first, schema)
            second = await self._cached_call(retry_messages, schema, call_params, tag, op)
            try:
                return _with_parsed(second, check_reply(second.text, schema))
            except ReplyError as error:
                raise RequestRejected(error.reason, error.detail) from None

    async def complete_text(
        self, prompt: str, *, op: str, tag: str = "", params: dict[str, Any] | None = None
    ) -> Completion:
        """A raw-text completion of ``prompt`` (no chat template applied), through the same
        cache, limits and retries; the model must have ``complete_text`` (see
        :class:`~evoforge.llm.base.TextCompletionModel`). Magpie samples user turns so."""
        call_params = {**self.params, **(params or {})}
        return await self._cached_call([raw_prompt(prompt)], None, call_params, tag, op)

    async def _cached_call(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None,
        params: dict[str, Any],
        tag: str,
        op: str,
    ) -> Completion:
        stats = self.stats[op]
        key = cache_key(self.model.identity, messages, params, schema, tag)
        if self.cache is not None:
            hit = self.cache.get(key)
            if hit is not None:
                stats.cache_hits += 1
                return hit
        if self.context is not None:
            await self.context.check(messages, params)  # before any spend
        completion = await self._call_with_retries(messages, schema, params, stats)
        if self.cache is not None:
            self.cache.put(key, completion)
        return completion

    async def _call_with_retries(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None,
        params: dict[str, Any],
        stats: OpStats,
    ) -> Completion:
        def retried() -> None:
            stats.retries += 1

        try:
            return await with_retries(
                lambda: self._attempt(messages, schema, params, stats),
                self.retry,
                self.clock,
                self._jitter,
                retried,
            )
        except TransientError as exc:
            raise RequestRejected(
                "retries_exhausted",
                f"gave up after {self.retry.max_attempts} attempts: {exc}",
                status=exc.status,
            ) from None
        except QuotaExhausted as exc:
            raise RunStopped(
                "insufficient_quota",
                f"the provider reports insufficient quota ({exc}). Add credit, then re-run "
                "the same command to resume; nothing finished so far is lost.",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    def _check_budget(self) -> None:
        limits = self.limits
        if limits.max_calls is not None and self.calls_sent >= limits.max_calls:
            raise RunStopped("max_calls", f"reached --max-calls {limits.max_calls}")
        if limits.max_tokens is not None and self.tokens_used >= limits.max_tokens:
            raise RunStopped("max_tokens", f"reached --max-tokens {limits.max_tokens}")

    async def _attempt(
        self,
        messages: list[Message],
        schema: dict[str, Any] | None,
        params: dict[str, Any],
        stats: OpStats,
    ) -> Completion:
        async with self.concurrency:
            self._check_budget()
            estimate = _estimate_tokens(messages, params)
            if self._rpm is not None:
                await self._rpm.acquire(1)
            if self._tpm is not None:
                await self._tpm.acquire(estimate)
            if self.before_send is not None:
                self.before_send()
            self.calls_sent += 1
            stats.calls += 1
            completion = await send_once(
                lambda: _send(self.model, messages, schema, params),
                self.retry,
                self.concurrency,
                lambda wait: (
                    f"the server asked to wait {wait:g} s (cap "
                    f"{self.retry.max_retry_after:g} s). Re-run later to resume."
                ),
            )
        self.concurrency.on_success()
        used = completion.usage
        stats.prompt_tokens += used.prompt_tokens
        stats.completion_tokens += used.completion_tokens
        stats.cached_tokens += used.cached_tokens
        self.tokens_used += used.total_tokens
        if self._tpm is not None and used.total_tokens:
            self._tpm.adjust(used.total_tokens - estimate)
        return completion

    def _backoff(self, attempt_number: int, exc: BaseException | None) -> float:
        return retry_wait(self.retry, attempt_number, exc, self._jitter)

    async def aclose(self) -> None:
        await self.model.aclose()


def _usage_row(stats: OpStats) -> dict[str, int]:
    row = asdict(stats)
    if not row["cached_tokens"]:
        del row["cached_tokens"]
    return row


def retry_wait(
    policy: RetryPolicy, attempt_number: int, exc: BaseException | None, jitter: random.Random
) -> float:
    """The wait after failed attempt ``attempt_number``: the server's Retry-After if it
    sent one, else exponential from ``backoff_base`` with jitter, capped. Chat and
    embedding calls (:mod:`evoforge.engine.embedding_client`) both wait this long."""
    if isinstance(exc, TransientError) and exc.retry_after is not None:
        return exc.retry_after + jitter.uniform(0, 0.05)
    backoff = policy.backoff_base * 2 ** (attempt_number - 1)
    return min(policy.backoff_max, backoff) * jitter.uniform(0.5, 1.0)


async def with_retries(
    attempt: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    clock: Clock,
    jitter: random.Random,
    on_retry: Callable[[], None],
) -> T:
    """Run ``attempt`` until it returns, retrying ``TransientError`` up to
    ``policy.max_attempts`` in all, waiting :func:`retry_wait` on ``clock`` between tries;
    ``on_retry`` is called before each retry. The last ``TransientError`` (and anything
    else) propagates. Chat and embedding calls both retry through here."""
    try:
        # Most calls succeed at once: the first attempt skips tenacity's set-up.
        return await attempt()
    except TransientError as first:
        if policy.max_attempts <= 1:
            raise
        await clock.sleep(retry_wait(policy, 1, first, jitter))

    def wait(state: RetryCallState) -> float:
        # Tenacity counts from the second attempt (the first ran outside it).
        exc = state.outcome.exception() if state.outcome else None
        return retry_wait(policy, state.attempt_number + 1, exc, jitter)

    retrying = AsyncRetrying(
        sleep=clock.sleep,
        stop=stop_after_attempt(policy.max_attempts - 1),
        wait=wait,
        retry=retry_if_exception_type(TransientError),
        reraise=True,
    )
    async for tried in retrying:
        with tried:
            on_retry()
            return await attempt()
    raise AssertionError("unreachable")  # pragma: no cover


async def send_once(
    send: Callable[[], Awaitable[T]],
    policy: RetryPolicy,
    concurrency: AdaptiveConcurrency,
    too_long: Callable[[float], str],
) -> T:
    """Await one request, ``send()``, within ``policy.request_timeout`` (a timeout becomes a
    ``TransientError``); a rate limit shrinks ``concurrency``, and a server's
    ``Retry-After`` over ``policy.max_retry_after`` stops the run with the message
    ``too_long(retry_after)``. Chat and embedding calls both send through here."""
    try:
        if policy.request_timeout is None:
            return await send()
        return await asyncio.wait_for(send(), policy.request_timeout)
    except asyncio.TimeoutError:
        raise TransientError(f"no reply within {policy.request_timeout:g} s (timeout)") from None
    except TransientError as exc:
        if exc.is_rate_limit:
            concurrency.on_rate_limit(exc.retry_after)
        if exc.retry_after is not None and exc.retry_after > policy.max_retry_after:
            raise RunStopped("retry_after_too_long", too_long(exc.retry_after)) from None
        raise


RAW_ROLE = "raw"  # a one-message "conversation" that is a raw-text prompt


def raw_prompt(prompt: str) -> Message:
    return {"role": RAW_ROLE, "content": prompt}


def _send(
    model: ChatModel, messages: list[Message], schema: dict[str, Any] | None, params: dict
) -> Awaitable[Completion]:
    if len(messages) == 1 and messages[0]["role"] == RAW_ROLE:
        return model.complete_text(messages[0]["content"], **params)  # type: ignore[attr-defined]
    return model.complete(messages, schema=schema, **params)


def _with_parsed(completion: Completion, parsed: Any) -> Completion:
    return dataclasses.replace(completion, parsed=parsed)


def _estimate_tokens(messages: list[Message], params: dict[str, Any]) -> int:
    chars = sum(len(m["content"]) for m in messages)
    return chars // 4 + int(params.get("max_tokens") or 256)
