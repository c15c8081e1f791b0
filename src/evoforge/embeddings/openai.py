"""Any OpenAI-compatible ``POST /embeddings``, through the engine's retry policy, limits,
clock and cache.

:class:`OpenAIEmbeddingTransport` only speaks HTTP: one request per batch, its failures
classified as the chat backend classifies them. :class:`OpenAIEmbedder` puts it behind
:class:`evoforge.engine.embedding_client.EmbeddingClient`, the policy chat calls get too
(httpx's split of client and transport).
"""

from __future__ import annotations

import asyncio
import base64
import concurrent.futures
import dataclasses
import http.client
import json
import urllib.error
import urllib.request
from collections.abc import Coroutine, Sequence
from typing import Any, TypeVar

import numpy as np

from evoforge.embeddings.base import normalise_rows
from evoforge.engine.client import Limits, RetryPolicy
from evoforge.engine.clock import Clock
from evoforge.engine.embedding_client import EmbeddingClient, VectorStore
from evoforge.errors import ConfigError, LLMError, TransientError
from evoforge.llm.openai_backend import classify_status, error_fields, resolve_endpoint

T = TypeVar("T")


class OpenAIEmbedder:
    """Any OpenAI-compatible ``POST {base_url}/embeddings`` (OpenAI, vLLM, Ollama, TEI, ...).

    ``batch_size`` inputs per request, ``encoding_format: "float"``. The key comes from
    ``api_key`` or ``OPENAI_API_KEY``, the URL from ``base_url``, ``OPENAI_BASE_URL`` or
    OpenAI's own. Requests go through the engine's :class:`EmbeddingClient`, on
    ``clock``, within ``limits``: connection errors, timeouts, 408/409/429 and 5xx are
    retried (up to ``max_attempts`` in all) with jittered exponential backoff from
    ``retry_base_s`` capped at ``retry_max_s``, or the server's ``Retry-After``; what is
    not given comes from ``retry`` (a run's :class:`RetryPolicy`), else the engine's
    defaults. With a ``cache`` (an :class:`EmbeddingCache`) a text embedded before is
    not sent again. A bad key or an unknown model is a :class:`ConfigError`, other
    refusals the classified :class:`LLMError`; retries used up raise
    :class:`TransientError`, ``insufficient_quota`` stops the run. ``dim`` is
    ``dimensions`` when given, else learnt from the first reply (one probe request when
    asked before any). Vectors are re-normalised, whatever the server sends.

    :meth:`embed` is synchronous, like every embedder's; called from inside a running
    event loop it runs the client's loop in a worker thread and waits for it.
    """

    def __init__(
        self,
        model: str,
        *,
        base_url: str | None = None,
        api_key: str | None = None,
        batch_size: int = 64,
        dimensions: int | None = None,
        timeout: float = 60.0,
        max_attempts: int | None = None,
        retry_base_s: float | None = None,
        retry_max_s: float | None = None,
        retry: RetryPolicy | None = None,
        limits: Limits | None = None,
        clock: Clock | None = None,
        cache: VectorStore | None = None,
    ) -> None:
        if not model:
            raise ConfigError(
                "openai embedder: a model name is required, e.g. openai:text-embedding-3-small"
            )
        if batch_size < 1 or (max_attempts is not None and max_attempts < 1):
            raise ConfigError("openai embedder: batch_size and max_attempts must be >= 1")
        base_url, key = resolve_endpoint(base_url, api_key, who="openai embedder")
        self.transport = OpenAIEmbeddingTransport(
            model, base_url=base_url, api_key=key, dimensions=dimensions, timeout=timeout
        )
        # The socket timeout bounds each attempt (a thread cannot be cancelled midway).
        retry = dataclasses.replace(retry or RetryPolicy(), request_timeout=None)
        if max_attempts is not None:
            retry.max_attempts = max_attempts
        if retry_base_s is not None:
            retry.backoff_base = retry_base_s
        if retry_max_s is not None:
            retry.backoff_max = retry_max_s
        self.client = EmbeddingClient(
            self.transport,
            batch_size=batch_size,
            limits=limits,
            retry=retry,
            cache=cache,
            clock=clock,
        )

    @property
    def model(self) -> str:
        return self.transport.model

    @property
    def base_url(self) -> str:
        return self.transport.base_url

    @property
    def dimensions(self) -> int | None:
        return self.transport.dimensions

    @property
    def batch_size(self) -> int:
        return self.client.batch_size

    @property
    def timeout(self) -> float:
        return self.transport.timeout

    @property
    def max_attempts(self) -> int:
        return self.client.retry.max_attempts

    @property
    def retry_base_s(self) -> float:
        return self.client.retry.backoff_base

    @property
    def retry_max_s(self) -> float:
        return self.client.retry.backoff_max

    @property
    def requests(self) -> int:
        """HTTP requests sent so far, retries included."""
        return self.transport.requests

    @property
    def identity(self) -> dict[str, str]:
        return self.transport.identity

    @property
    def dim(self) -> int:
        if self.transport.dim is None:
            self.embed(["dimension probe"])
        assert self.transport.dim is not None
        return self.transport.dim

    def embed(self, texts: Sequence[str]) -> np.ndarray:
        if not texts:
            return np.zeros((0, self.transport.dim or 0), dtype=np.float32)
        # The API refuses empty strings; a space embeds as "nothing" just as well.
        vectors = _run(self.client.embed([text or " " for text in texts]))
        self.transport.check_width(vectors.shape[1])
        return normalise_rows(vectors)


def _run(coroutine: Coroutine[Any, Any, T]) -> T:
    """Run ``coroutine`` to the end from synchronous code, inside a running loop or not."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coroutine)
    # Called from async code (e.g. a selection inside a command's loop): that loop is
    # blocked until the vectors are back, as it was while urllib waited.
    with concurrent.futures.ThreadPoolExecutor(max_workers=1) as worker:
        return worker.submit(asyncio.run, coroutine).result()


class OpenAIEmbeddingTransport:
    """One ``POST {base_url}/embeddings`` per batch (``urllib``, in a worker thread), its
    failures classified for the engine: no retries, no cache, no waiting."""

    def __init__(
        self,
        model: str,
        *,
        base_url: str,
        api_key: str,
        dimensions: int | None = None,
        timeout: float = 60.0,
    ) -> None:
        self.model = model
        self.base_url = base_url
        self._api_key = api_key
        self.dimensions = dimensions
        self.timeout = timeout
        self.requests = 0
        """HTTP requests sent so far, retries included."""
        self.dim: int | None = dimensions
        """The vectors' width: ``dimensions``, else learnt from the first reply."""

    @property
    def identity(self) -> dict[str, str]:
        identity = {"backend": "openai", "model": self.model, "base_url": self.base_url}
        if self.dimensions is not None:
            identity["dimensions"] = str(self.dimensions)
        return identity

    @property
    def endpoint(self) -> str:
        return f"{self.base_url}/embeddings"

    async def embed_batch(self, texts: list[str]) -> np.ndarray:
        return await asyncio.to_thread(self._embed_batch, texts)

    def check_width(self, width: int) -> None:
        """Learn the width from the first vectors; any other width after that is an error."""
        if self.dim is None:
            self.dim = width
        elif width != self.dim:
            raise LLMError(f"{self.endpoint} returned {width}-d vectors, expected {self.dim}")

    def _embed_batch(self, batch: list[str]) -> np.ndarray:
        body: dict[str, Any] = {"model": self.model, "input": batch, "encoding_format": "float"}
        if self.dimensions is not None:
            body["dimensions"] = self.dimensions
        payload = self._post(json.dumps(body).encode("utf-8"))
        vectors = _vectors_from(payload, len(batch), self.base_url)
        self.check_width(vectors.shape[1])
        return vectors

    def _post(self, data: bytes) -> Any:
        url = f"{self.base_url}/embeddings"
        request = urllib.request.Request(
            url,
            data=data,
            method="POST",
            headers={
                "Authorization": f"Bearer {self._api_key}",
                "Content-Type": "application/json",
            },
        )
        self.requests += 1
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as response:
                raw = response.read()
        except urllib.error.HTTPError as exc:
            raw = exc.read()
            code, message = error_fields(raw, exc.code)
            if exc.code in (401, 403):
                raise ConfigError(
                    f"{url}: HTTP {exc.code}: {message} (check OPENAI_API_KEY)"
                ) from None
            if exc.code == 404:
                raise ConfigError(
                    f"{url}: HTTP 404: {message} (check the model name {self.model!r} and "
                    "the base URL)"
                ) from None
            raise classify_status(
                exc.code, code=code, message=message, headers=exc.headers
            ) from None
        except (OSError, http.client.HTTPException) as exc:  # refused, reset, timed out
            raise TransientError(f"connection error: {type(exc).__name__}: {exc}") from None
        try:
            return json.loads(raw)
        except ValueError:
            raise TransientError(f"{url}: HTTP 200 with a body that is not JSON") from None


def _vectors_from(payload: Any, expected: int, base_url: str) -> np.ndarray:
    data = payload.get("data") if isinstance(payload, dict) else None
    if not isinstance(data, list) or len(data) != expected:
        got = len(data) if isinstance(data, list) else "no"
        raise LLMError(f"{base_url}/embeddings returned {got} vectors for {expected} inputs")
    rows: list[Any] = [None] * expected
    for position, item in enumerate(data):
        index = item.get("index", position) if isinstance(item, dict) else None
        vector = item.get("embedding") if isinstance(item, dict) else None
        if not isinstance(index, int) or not 0 <= index < expected or vector is None:
            raise LLMError(f"{base_url}/embeddings returned a malformed item: {item!r:.120}")
        if isinstance(vector, str):  # base64 little-endian float32, from servers that ignore
            vector = np.frombuffer(base64.b64decode(vector), dtype="<f4")  # encoding_format
        rows[index] = np.asarray(vector, dtype=np.float32)
    if any(row is None for row in rows) or len({row.shape for row in rows}) != 1:
        raise LLMError(f"{base_url}/embeddings returned vectors of different sizes or indexes")
    return np.stack(rows)
