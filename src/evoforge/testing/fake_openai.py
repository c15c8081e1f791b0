"""A scriptable, OpenAI-compatible HTTP server for tests and benchmarks.

:class:`FakeOpenAI` speaks enough of the OpenAI REST API for the real ``openai`` SDK
to talk to it over real HTTP:

* ``POST /v1/chat/completions`` (non-streaming),
* ``POST /v1/embeddings`` (deterministic, hash-derived, L2-normalised vectors),
* ``GET /v1/models``,
* ``POST /v1/completions`` (raw text; :mod:`evoforge.testing.fake_completions`),

and the same paths without the ``/v1`` prefix.

What a chat request gets back is scriptable, in this order of precedence:

1. the FIFO queue filled by :meth:`FakeOpenAI.enqueue` (one entry per request);
2. the :attr:`FakeOpenAI.responder` callable, ``(FakeRequest) -> Reply | str | dict | None``
   (it may also be ``async``); ``None`` falls through to
3. the default reply: ``"ANSWER: " + last_user_message[:60]``, or, when the request asks for
   ``response_format`` ``json_schema`` / ``json_object``, a minimal JSON document
   (see :func:`minimal_instance`).

A :class:`Reply` can also describe HTTP errors (with OpenAI-shaped error bodies and headers
such as ``retry-after``), extra latency, or a dropped connection.

Three ways to run it:

* in a background thread with its own event loop (``with FakeOpenAI() as server: ...``);
* inside the caller's running event loop (``async with FakeOpenAI() as server: ...``);
* as its own process, e.g. for a throughput benchmark::

      python -m evoforge.testing.fake_openai --port 0 --latency 0.05 --no-record

  which prints ``READY http://127.0.0.1:PORT/v1`` once listening and serves until
  SIGTERM/SIGINT or ``--max-seconds`` (default 3600) elapse.

The request handlers are kept lean (no per-request logging, no access log, latency via
``asyncio.sleep``) so that the server is not the bottleneck of a benchmark.  Counters are
mutated only on the server's event loop; reading them from another thread is fine.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import contextlib
import hashlib
import inspect
import json
import math
import signal
import struct
import sys
import threading
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any, Union

from aiohttp import web
from multidict import CIMultiDict

# One way to count tokens for the fake server and the dry run's counting model, so a
# dry run and a real run on this server report the same prompt tokens.
from evoforge.llm.counting import completion_tokens, minimal_instance, prompt_tokens
from evoforge.llm.counting import content_text as _content_text
from evoforge.llm.counting import count_words as _count_words
from evoforge.testing.fake_prefix_cache import PrefixCache

__all__ = [
    "DEFAULT_EMBEDDING_DIM",
    "DEFAULT_MODEL",
    "FakeOpenAI",
    "FakeRequest",
    "Reply",
    "ReplyLike",
    "Responder",
    "context_length_exceeded_error",
    "default_reply_text",
    "error_body",
    "fake_embedding",
    "insufficient_quota_error",
    "main",
    "minimal_instance",
]

DEFAULT_MODEL = "fake-model"
DEFAULT_EMBEDDING_MODEL = "fake-embedding"
DEFAULT_EMBEDDING_DIM = 8

# status -> (type, code, message) used to fill in missing fields of an error body.
_ERROR_DEFAULTS: dict[int, tuple[str, str | None, str]] = {
    400: ("invalid_request_error", None, "Bad request."),
    401: ("invalid_request_error", "invalid_api_key", "Incorrect API key provided."),
    403: ("permission_error", "permission_denied", "You are not allowed to do this."),
    404: ("invalid_request_error", "model_not_found", "The requested resource does not exist."),
    408: ("timeout", "timeout", "Request timed out."),
    409: ("conflict_error", "conflict", "Conflict."),
    422: ("invalid_request_error", "unprocessable_entity", "Unprocessable entity."),
    429: (
        "rate_limit_exceeded",
        "rate_limit_exceeded",
        "Rate limit reached for requests. Please try again later.",
    ),
    500: ("server_error", None, "The server had an error while processing your request."),
    502: ("server_error", "bad_gateway", "Bad gateway."),
    503: ("server_error", "service_unavailable", "The server is overloaded or not ready yet."),
    504: ("server_error", "gateway_timeout", "Gateway timeout."),
}

_DUMPS = json.JSONEncoder(separators=(",", ":")).encode


def error_body(
    status: int,
    message: str | None = None,
    *,
    type: str | None = None,
    code: str | None = None,
    param: str | None = None,
) -> dict[str, Any]:
    """The inner OpenAI error object (``{"message", "type", "param", "code"}``) for a status.

    Missing fields get sensible per-status defaults (e.g. 429 -> ``rate_limit_exceeded``).
    """
    d_type, d_code, d_message = _ERROR_DEFAULTS.get(
        status,
        ("server_error", None, f"HTTP {status}")
        if status >= 500
        else ("invalid_request_error", None, f"HTTP {status}"),
    )
    return {
        "message": message if message is not None else d_message,
        "type": type if type is not None else d_type,
        "param": param,
        "code": code if code is not None else d_code,
    }


def insufficient_quota_error() -> dict[str, Any]:
    """The error object OpenAI sends (with HTTP 429) when the account has no credit left."""
    return error_body(
        429,
        "You exceeded your current quota, please check your plan and billing details.",
        type="insufficient_quota",
        code="insufficient_quota",
    )


def context_length_exceeded_error(max_tokens: int = 8192, got: int = 9000) -> dict[str, Any]:
    """The error object OpenAI sends (with HTTP 400) when the prompt is too long."""
    return error_body(
        400,
        f"This model's maximum context length is {max_tokens} tokens. However, your messages "
        f"resulted in {got} tokens. Please reduce the length of the messages.",
        type="invalid_request_error",
        code="context_length_exceeded",
        param="messages",
    )


@dataclass
class Reply:
    """What the fake server should answer to one request.

    ``content`` is the assistant text (``None``: the default reply).  When ``status`` is not
    200 the response body is ``{"error": error}`` with defaults filled in from the status.
    ``body``, when set, is sent verbatim as the JSON body (with ``status``/``headers``).
    ``delay`` overrides the server's global latency for this reply; ``disconnect`` closes the
    connection without any response (the client sees a connection error).  ``logprobs``
    scripts the ``choices[].logprobs`` block a ``logprobs: true`` request gets.
    """

    content: str | None = None
    status: int = 200
    error: dict[str, Any] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    delay: float | None = None
    disconnect: bool = False
    finish_reason: str = "stop"
    usage: dict[str, int] | None = None
    body: Any = None
    logprobs: list[tuple[str, dict[str, float]]] | None = None
    """The output tokens with their top alternatives (token -> logprob), sent only when
    the request asks ``logprobs: true``; unset, the content's words get logprob 0."""

    @classmethod
    def fail(
        cls,
        status: int,
        message: str | None = None,
        *,
        type: str | None = None,
        code: str | None = None,
        headers: Mapping[str, str] | None = None,
        delay: float | None = None,
    ) -> Reply:
        """An HTTP error with an OpenAI-shaped body."""
        return cls(
            status=status,
            error=error_body(status, message, type=type, code=code),
            headers=dict(headers or {}),
            delay=delay,
        )

    @classmethod
    def rate_limited(
        cls,
        retry_after: float | None = None,
        *,
        retry_after_ms: int | None = None,
        message: str | None = None,
    ) -> Reply:
        """A 429 ``rate_limit_exceeded``, optionally with ``retry-after``/``retry-after-ms``."""
        headers: dict[str, str] = {}
        if retry_after is not None:
            headers["retry-after"] = _format_seconds(retry_after)
        if retry_after_ms is not None:
            headers["retry-after-ms"] = str(int(retry_after_ms))
        return cls.fail(429, message, headers=headers)

    @classmethod
    def insufficient_quota(cls) -> Reply:
        """A 429 whose body says ``insufficient_quota`` (not retryable in practice)."""
        return cls(status=429, error=insufficient_quota_error())

    @classmethod
    def context_length_exceeded(cls, max_tokens: int = 8192, got: int = 9000) -> Reply:
        """A 400 ``context_length_exceeded``."""
        return cls(status=400, error=context_length_exceeded_error(max_tokens, got))

    @classmethod
    def server_error(cls, status: int = 500, message: str | None = None) -> Reply:
        """A 5xx ``server_error``."""
        return cls.fail(status, message)

    @classmethod
    def drop(cls, delay: float | None = None) -> Reply:
        """Close the connection without answering (after ``delay``, if given)."""
        return cls(disconnect=True, delay=delay)


def _format_seconds(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))


@dataclass(slots=True)
class FakeRequest:
    """One request as seen by the fake server (and by a responder)."""

    n: int
    """1-based hit number (per endpoint kind: chat completions or embeddings)."""
    path: str
    json: Any
    headers: Mapping[str, str]

    @property
    def messages(self) -> list[dict[str, Any]]:
        body = self.json
        if isinstance(body, dict):
            messages = body.get("messages")
            if isinstance(messages, list):
                return messages
        return []

    @property
    def last_user(self) -> str:
        """Text of the last ``user`` message ("" when there is none)."""
        for message in reversed(self.messages):
            if isinstance(message, dict) and message.get("role") == "user":
                return _content_text(message.get("content"))
        return ""

    @property
    def model(self) -> str | None:
        body = self.json
        model = body.get("model") if isinstance(body, dict) else None
        return model if isinstance(model, str) else None

    @property
    def response_format(self) -> dict[str, Any] | None:
        body = self.json
        fmt = body.get("response_format") if isinstance(body, dict) else None
        return fmt if isinstance(fmt, dict) else None


ReplyLike = Union[Reply, str, dict[str, Any], None]
"""What a responder may return: a Reply, a str (200 with that content), a dict (JSON body
sent verbatim with status 200) or None (fall back to the default reply)."""

Responder = Callable[[FakeRequest], Union[ReplyLike, Awaitable[ReplyLike]]]


def _logprobs_block(body: dict[str, Any], reply: Reply, content: str) -> Any:
    """OpenAI's ``{"content": [{token, logprob, top_logprobs}]}``, when the request asks."""
    if body.get("logprobs") is not True:
        return None
    top_n = body.get("top_logprobs") if isinstance(body.get("top_logprobs"), int) else 0
    tokens = reply.logprobs
    if tokens is None:  # one token per space-separated word, each certain
        words = [w if i == 0 else f" {w}" for i, w in enumerate(content.split(" "))]
        tokens = [(word, {word: 0.0}) for word in words if word]
    entries = []
    for token, top in tokens:
        ranked = sorted(top.items(), key=lambda item: -item[1])[:top_n]
        entries.append(
            {
                "token": token,
                "logprob": top.get(token, 0.0),
                "bytes": list(token.encode()),
                "top_logprobs": [
                    {"token": t, "logprob": lp, "bytes": list(t.encode())} for t, lp in ranked
                ],
            }
        )
    return {"content": entries, "refusal": None}


# ----------------------------------------------------------------------------- default replies


def default_reply_text(request: FakeRequest) -> str:
    """The reply the server sends when nothing was scripted for ``request``."""
    answer = "ANSWER: " + request.last_user[:60]
    fmt = request.response_format
    if fmt is not None:
        kind = fmt.get("type")
        if kind == "json_schema":
            spec = fmt.get("json_schema")
            schema = spec.get("schema", {}) if isinstance(spec, dict) else {}
            return _DUMPS(minimal_instance(schema))
        if kind == "json_object":
            return _DUMPS({"answer": answer})
    return answer


# ----------------------------------------------------------------------------- embeddings


def fake_embedding(value: Any, dim: int = DEFAULT_EMBEDDING_DIM) -> list[float]:
    """A deterministic, L2-normalised pseudo-random vector derived from a hash of ``value``."""
    key = value if isinstance(value, str) else _DUMPS(value)
    digest = hashlib.shake_256(key.encode("utf-8")).digest(4 * dim)
    raw = [x / 2147483648.0 - 1.0 for x in struct.unpack(f"<{dim}I", digest)]
    norm = math.sqrt(sum(v * v for v in raw)) or 1.0
    return [v / norm for v in raw]


# ----------------------------------------------------------------------------- the server


class FakeOpenAI:
    """A scriptable OpenAI-compatible server (see the module docstring).

    Parameters:
        latency: seconds slept (``asyncio.sleep``) before answering every request; a
            :attr:`Reply.delay` overrides it.  Settable at any time.
        responder: callable deciding chat replies; settable at any time.
        embedding_dim: default dimension of fake embeddings (a request's ``dimensions``
            wins).
        record: keep every :class:`FakeRequest` in :attr:`requests` (turn off for
            benchmarks so memory does not grow).
        max_seconds: in thread/process mode, stop by itself after this many seconds.
        host, port: where to listen; port 0 lets the OS pick a free port.
        models: ids listed by ``GET /v1/models``.
        model_fields: more fields of those entries, by id, e.g.
            ``{"fake-model": {"max_model_len": 4096}}`` (vLLM's context window).
        shutdown_timeout: how long stopping waits for in-flight requests.
        prefix_cache: simulate a provider's prefix cache: chat replies report
            ``usage.prompt_tokens_details.cached_tokens`` (see
            :mod:`evoforge.testing.fake_prefix_cache`; totals in :attr:`prefix_cache`).
            ``True`` for an unbounded cache, or a :class:`PrefixCache` of your own
            (``PrefixCache(capacity_tokens=...)`` evicts the least recently used).
    """

    def __init__(
        self,
        *,
        latency: float = 0.0,
        responder: Responder | None = None,
        embedding_dim: int = DEFAULT_EMBEDDING_DIM,
        record: bool = True,
        max_seconds: float | None = None,
        host: str = "127.0.0.1",
        port: int = 0,
        models: Sequence[str] = (DEFAULT_MODEL, DEFAULT_EMBEDDING_MODEL),
        shutdown_timeout: float = 1.0,
        model_fields: Mapping[str, Mapping[str, Any]] | None = None,
        prefix_cache: bool | PrefixCache = False,
    ) -> None:
        self.latency = float(latency)
        self.prefix_cache: PrefixCache | None = (
            prefix_cache
            if isinstance(prefix_cache, PrefixCache)
            else (PrefixCache() if prefix_cache else None)
        )
        self.responder: Responder | None = responder
        self.embeddings_responder: Responder | None = None
        """Optional hook for embeddings: return a Reply (errors/delay/disconnect), a dict
        (verbatim body) or None (the default fake vectors)."""
        self.embedding_dim = int(embedding_dim)
        self.record = record
        self.max_seconds = max_seconds
        self.host = host
        self.shutdown_timeout = shutdown_timeout
        self._requested_port = int(port)
        self._models_body = _DUMPS(
            {
                "object": "list",
                "data": [
                    {
                        "id": m,
                        "object": "model",
                        "created": 0,
                        "owned_by": "evoforge-fake",
                        **(model_fields or {}).get(m, {}),
                    }
                    for m in models
                ],
            }
        ).encode()
        self._queue: deque[ReplyLike] = deque()

        self.port: int | None = None
        self.hits = 0
        self.embedding_hits = 0
        self.hits_by_path: dict[str, int] = {}
        self.requests: list[FakeRequest] = []
        self.embedding_requests: list[FakeRequest] = []
        self.in_flight = 0
        self.max_in_flight = 0
        self.errors: list[BaseException] = []
        """Exceptions raised by responders (each also answered with a 500)."""

        self._runner: web.AppRunner | None = None
        self._thread: threading.Thread | None = None
        self._loop: asyncio.AbstractEventLoop | None = None
        self._stop_event: asyncio.Event | None = None
        self._ready = threading.Event()
        self._thread_error: BaseException | None = None
        # /v1/files and /v1/batches (issue 19): states, outcomes and counters live there.
        from evoforge.testing.fake_batches import FakeBatches

        self.batches = FakeBatches(self, FakeRequest)
        # /v1/completions (issue 18): raw-text completions, scripted apart from chat.
        from evoforge.testing.fake_completions import FakeCompletions

        self.text_completions = FakeCompletions(self, FakeRequest)

    # ------------------------------------------------------------------ scripting / state

    def enqueue(self, *replies: ReplyLike) -> None:
        """Script the next chat replies (FIFO, one per request, before the responder)."""
        self._queue.extend(replies)

    @property
    def pending(self) -> int:
        """Number of scripted replies not consumed yet."""
        return len(self._queue)

    def clear_queue(self) -> None:
        self._queue.clear()

    def reset(self) -> None:
        """Zero the counters and forget recorded requests (queue and responder are kept)."""
        self.hits = 0
        self.embedding_hits = 0
        self.hits_by_path = {}
        self.requests = []
        self.embedding_requests = []
        self.max_in_flight = self.in_flight
        self.errors = []

    @property
    def url(self) -> str:
        """Root URL, e.g. ``http://127.0.0.1:PORT``."""
        if self.port is None:
            raise RuntimeError("FakeOpenAI is not running")
        return f"http://{self.host}:{self.port}"

    @property
    def base_url(self) -> str:
        """The ``base_url`` for the OpenAI SDK, e.g. ``http://127.0.0.1:PORT/v1``."""
        return self.url + "/v1"

    def __repr__(self) -> str:
        where = f"port={self.port}" if self.port is not None else "stopped"
        return f"<FakeOpenAI {where} hits={self.hits} latency={self.latency}>"

    # ------------------------------------------------------------------ lifecycle (in a loop)

    async def astart(self) -> FakeOpenAI:
        """Start listening on the running event loop."""
        if self._runner is not None:
            raise RuntimeError("FakeOpenAI is already running")
        app = web.Application(client_max_size=256 * 1024 * 1024)
        for prefix in ("/v1", ""):
            app.router.add_post(prefix + "/chat/completions", self._handle_chat)
            app.router.add_post(prefix + "/embeddings", self._handle_embeddings)
            app.router.add_get(prefix + "/models", self._handle_models)
        self.batches.add_routes(app)
        self.text_completions.add_routes(app)
        app.router.add_route("*", "/{tail:.*}", self._handle_not_found)
        runner = web.AppRunner(
            app, access_log=None, handle_signals=False, shutdown_timeout=self.shutdown_timeout
        )
        await runner.setup()
        try:
            site = web.TCPSite(runner, self.host, self._requested_port, backlog=2048)
            await site.start()
        except BaseException:
            await runner.cleanup()
            raise
        self._runner = runner
        self.port = int(runner.addresses[0][1])
        return self

    async def astop(self) -> None:
        """Stop listening and close every connection."""
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        self.port = None

    async def __aenter__(self) -> FakeOpenAI:
        return await self.astart()

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        await self.astop()

    async def serve(
        self,
        *,
        ready: Callable[[FakeOpenAI], None] | None = None,
        handle_signals: bool = False,
    ) -> None:
        """Start, call ``ready(self)``, then serve until :meth:`request_stop`, a signal
        (when ``handle_signals``) or ``max_seconds``; then stop cleanly."""
        loop = asyncio.get_running_loop()
        self._loop = loop
        self._stop_event = stop_event = asyncio.Event()
        timer = None
        installed: list[signal.Signals] = []
        try:
            await self.astart()
            if handle_signals:
                for sig in (signal.SIGTERM, signal.SIGINT):
                    with contextlib.suppress(NotImplementedError, RuntimeError, ValueError):
                        loop.add_signal_handler(sig, stop_event.set)
                        installed.append(sig)
            if self.max_seconds is not None:
                timer = loop.call_later(self.max_seconds, stop_event.set)
            if ready is not None:
                ready(self)
            await stop_event.wait()
        finally:
            if timer is not None:
                timer.cancel()
            for sig in installed:
                loop.remove_signal_handler(sig)
            await self.astop()
            self._stop_event = None

    def request_stop(self) -> None:
        """Ask :meth:`serve` to return (thread-safe)."""
        loop, event = self._loop, self._stop_event
        if loop is None or event is None:
            return
        with contextlib.suppress(RuntimeError):  # loop already closed
            loop.call_soon_threadsafe(event.set)

    # ------------------------------------------------------------------ lifecycle (thread)

    def start(self, timeout: float = 30.0) -> FakeOpenAI:
        """Run the server on its own event loop in a daemon thread; return once listening."""
        if self._thread is not None:
            raise RuntimeError("FakeOpenAI is already running")
        self._ready.clear()
        self._thread_error = None
        thread = threading.Thread(target=self._thread_main, name="fake-openai", daemon=True)
        self._thread = thread
        thread.start()
        if not self._ready.wait(timeout):
            self.stop()
            raise RuntimeError("FakeOpenAI did not start in time")
        if self._thread_error is not None:
            error = self._thread_error
            self.stop()
            raise RuntimeError("FakeOpenAI failed to start") from error
        return self

    def stop(self, timeout: float = 30.0) -> None:
        """Stop the background thread (if any) and wait for it."""
        thread = self._thread
        if thread is None:
            return
        self.request_stop()
        thread.join(timeout)
        if thread.is_alive():
            raise RuntimeError("FakeOpenAI thread did not stop in time")
        self._thread = None
        self._loop = None

    def _thread_main(self) -> None:
        try:
            asyncio.run(self.serve(ready=lambda _server: self._ready.set()))
        except BaseException as error:  # surfaced by start()
            self._thread_error = error
        finally:
            self._ready.set()

    def __enter__(self) -> FakeOpenAI:
        return self.start()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    # ------------------------------------------------------------------ handlers

    def _count_path(self, path: str) -> None:
        by_path = self.hits_by_path
        by_path[path] = by_path.get(path, 0) + 1

    async def _handle_chat(self, request: web.Request) -> web.StreamResponse:
        self.in_flight += 1
        if self.in_flight > self.max_in_flight:
            self.max_in_flight = self.in_flight
        try:
            self.hits += 1
            n = self.hits
            path = request.path
            self._count_path(path)
            try:
                body = json.loads(await request.read())
            except ValueError:
                return _error_response(400, error_body(400, "Request body is not valid JSON."))
            fake = FakeRequest(n, path, body, request.headers)
            if self.record:
                self.requests.append(fake)

            if isinstance(body, dict) and body.get("stream"):
                reply: Reply | dict[str, Any] = Reply.fail(
                    400, "stream=true is not supported by the fake OpenAI server."
                )
            else:
                reply = await self._resolve(fake, self._queue.popleft() if self._queue else None)

            if isinstance(reply, dict):
                await self._sleep(None)
                return _json_response(200, _DUMPS(reply).encode())
            await self._sleep(reply.delay)
            if reply.disconnect:
                return _drop(request)
            if reply.body is not None:
                return _json_response(reply.status, _DUMPS(reply.body).encode(), reply.headers)
            if reply.status != 200:
                return _error_response(reply.status, reply.error, reply.headers)
            return _json_response(200, self._completion_body(fake, reply), reply.headers)
        finally:
            self.in_flight -= 1

    async def _resolve(self, fake: FakeRequest, scripted: ReplyLike) -> Reply | dict[str, Any]:
        """Turn the scripted entry / responder result into a Reply or a verbatim dict."""
        result: Any = scripted
        try:
            if result is None and self.responder is not None:
                result = self.responder(fake)
                if inspect.isawaitable(result):
                    result = await result
            if result is None:
                return Reply()
            if isinstance(result, Reply):
                return result
            if isinstance(result, str):
                return Reply(content=result)
            if isinstance(result, dict):
                return result
            raise TypeError(f"responder returned an unsupported {type(result).__name__}")
        except Exception as error:
            self.errors.append(error)
            return Reply.fail(500, f"fake responder raised {error!r}")

    async def _sleep(self, delay: float | None) -> None:
        seconds = self.latency if delay is None else delay
        if seconds > 0:
            await asyncio.sleep(seconds)

    def _completion_body(self, fake: FakeRequest, reply: Reply) -> bytes:
        content = reply.content if reply.content is not None else default_reply_text(fake)
        usage: dict[str, Any] | None = reply.usage
        if usage is None:
            prompt = prompt_tokens(fake.messages)
            completion = completion_tokens(content)
            usage = {
                "prompt_tokens": prompt,
                "completion_tokens": completion,
                "total_tokens": prompt + completion,
            }
            if self.prefix_cache is not None:  # issue 19: cached_tokens, as OpenAI reports it
                cached = self.prefix_cache.lookup(fake.messages)
                usage["prompt_tokens_details"] = {"cached_tokens": cached}
        body = fake.json if isinstance(fake.json, dict) else {}
        model = body.get("model")
        n_choices = body.get("n")
        count = n_choices if isinstance(n_choices, int) and 1 <= n_choices <= 128 else 1
        message = {"role": "assistant", "content": content, "refusal": None}
        return _DUMPS(
            {
                "id": f"chatcmpl-fake-{fake.n}",
                "object": "chat.completion",
                "created": int(time.time()),
                "model": model if isinstance(model, str) else DEFAULT_MODEL,
                "choices": [
                    {
                        "index": i,
                        "message": message,
                        "logprobs": _logprobs_block(body, reply, content),
                        "finish_reason": reply.finish_reason,
                    }
                    for i in range(count)
                ],
                "usage": usage,
                "system_fingerprint": None,
            }
        ).encode()

    async def _handle_embeddings(self, request: web.Request) -> web.StreamResponse:
        self.embedding_hits += 1
        path = request.path
        self._count_path(path)
        try:
            body = json.loads(await request.read())
        except ValueError:
            return _error_response(400, error_body(400, "Request body is not valid JSON."))
        fake = FakeRequest(self.embedding_hits, path, body, request.headers)
        if self.record:
            self.embedding_requests.append(fake)
        if not isinstance(body, dict) or "input" not in body:
            return _error_response(400, error_body(400, "'input' is required.", param="input"))

        reply: Reply | dict[str, Any] = Reply()
        if self.embeddings_responder is not None:
            reply = await self._resolve_embeddings(fake)
        if isinstance(reply, dict):
            await self._sleep(None)
            return _json_response(200, _DUMPS(reply).encode())
        await self._sleep(reply.delay)
        if reply.disconnect:
            return _drop(request)
        if reply.body is not None:
            return _json_response(reply.status, _DUMPS(reply.body).encode(), reply.headers)
        if reply.status != 200:
            return _error_response(reply.status, reply.error, reply.headers)

        inputs = body["input"]
        if isinstance(inputs, str) or (
            isinstance(inputs, list) and inputs and isinstance(inputs[0], int)
        ):
            inputs = [inputs]  # one string, or one token list
        if not isinstance(inputs, list):
            return _error_response(400, error_body(400, "'input' is invalid.", param="input"))
        dims = body.get("dimensions")
        dim = dims if isinstance(dims, int) and dims > 0 else self.embedding_dim
        as_base64 = body.get("encoding_format") == "base64"
        data = []
        words = 0
        for index, item in enumerate(inputs):
            vector = fake_embedding(item, dim)
            words += _count_words(item) if isinstance(item, str) else len(item)
            embedding: Any = (
                base64.b64encode(struct.pack(f"<{dim}f", *vector)).decode("ascii")
                if as_base64
                else vector
            )
            data.append({"object": "embedding", "index": index, "embedding": embedding})
        model = body.get("model")
        tokens = max(1, words)
        return _json_response(
            200,
            _DUMPS(
                {
                    "object": "list",
                    "data": data,
                    "model": model if isinstance(model, str) else DEFAULT_EMBEDDING_MODEL,
                    "usage": {"prompt_tokens": tokens, "total_tokens": tokens},
                }
            ).encode(),
        )

    async def _resolve_embeddings(self, fake: FakeRequest) -> Reply | dict[str, Any]:
        assert self.embeddings_responder is not None
        try:
            result: Any = self.embeddings_responder(fake)
            if inspect.isawaitable(result):
                result = await result
            if result is None:
                return Reply()
            if isinstance(result, (Reply, dict)):
                return result
            raise TypeError(f"embeddings responder returned an unsupported {type(result)}")
        except Exception as error:
            self.errors.append(error)
            return Reply.fail(500, f"fake embeddings responder raised {error!r}")

    async def _handle_models(self, request: web.Request) -> web.StreamResponse:
        self._count_path(request.path)
        await self._sleep(None)
        return _json_response(200, self._models_body)

    async def _handle_not_found(self, request: web.Request) -> web.StreamResponse:
        self._count_path(request.path)
        return _error_response(
            404,
            error_body(
                404,
                f"Unknown path {request.method} {request.path}",
                code="unknown_url",
            ),
        )


def _json_response(
    status: int, body: bytes, headers: Mapping[str, str] | None = None
) -> web.Response:
    if headers:
        merged = CIMultiDict({"Content-Type": "application/json"})
        for name, value in headers.items():
            merged[name] = value  # case-insensitive override
        return web.Response(body=body, status=status, headers=merged)
    return web.Response(body=body, status=status, content_type="application/json")


def _error_response(
    status: int, error: Mapping[str, Any] | None, headers: Mapping[str, str] | None = None
) -> web.Response:
    if error is None:
        payload: Mapping[str, Any] = {"error": error_body(status)}
    elif "error" in error and isinstance(error["error"], Mapping):
        payload = error  # already a full body
    else:
        payload = {"error": {**error_body(status), **error}}
    return _json_response(status, _DUMPS(payload).encode(), headers)


def _drop(request: web.Request) -> web.Response:
    """Close the connection; aiohttp then silently fails to write the returned response."""
    transport = request.transport
    if transport is not None:
        transport.close()
    return web.Response(status=204)


# ----------------------------------------------------------------------------- process mode


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m evoforge.testing.fake_openai``: serve until SIGTERM/SIGINT/--max-seconds."""
    parser = argparse.ArgumentParser(
        prog="python -m evoforge.testing.fake_openai",
        description="Scriptable fake OpenAI-compatible server (default replies only).",
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0, help="0 picks a free port")
    parser.add_argument("--latency", type=float, default=0.0, help="seconds per request")
    parser.add_argument("--embedding-dim", type=int, default=DEFAULT_EMBEDDING_DIM)
    parser.add_argument("--no-record", action="store_true", help="do not keep requests in memory")
    parser.add_argument(
        "--prefix-cache",
        action="store_true",
        help="simulate a provider prefix cache (usage.prompt_tokens_details.cached_tokens)",
    )
    parser.add_argument(
        "--prefix-cache-tokens",
        type=int,
        default=None,
        metavar="N",
        help="simulate a prefix cache that holds at most N tokens (least recently used go)",
    )
    parser.add_argument(
        "--max-seconds", type=float, default=3600.0, help="stop by itself after this long"
    )
    args = parser.parse_args(argv)
    server = FakeOpenAI(
        host=args.host,
        port=args.port,
        latency=args.latency,
        embedding_dim=args.embedding_dim,
        record=not args.no_record,
        max_seconds=args.max_seconds if args.max_seconds > 0 else None,
        prefix_cache=(
            PrefixCache(capacity_tokens=args.prefix_cache_tokens)
            if args.prefix_cache or args.prefix_cache_tokens
            else False
        ),
    )

    def ready(srv: FakeOpenAI) -> None:
        sys.stdout.write(f"READY {srv.base_url}\n")
        sys.stdout.flush()

    try:
        asyncio.run(server.serve(ready=ready, handle_signals=True))
    except KeyboardInterrupt:  # SIGINT before the handler was installed
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
