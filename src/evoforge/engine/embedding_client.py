"""The policy around an embedding backend: cache, rate limits, retries, on the engine's clock.

The same policy as :class:`~evoforge.engine.client.LLMClient` applies to chat calls,
for ``POST /embeddings``: the backend only speaks HTTP and classifies its failures
(:mod:`evoforge.errors`); everything decided about a call is here:

- a text whose vector is in ``cache`` is not sent (content address: the backend's
  identity -- backend, model, base URL, dimensions -- and the SHA-256 of the text);
  each distinct text is embedded once per call;
- batches go one after another, each waiting for a concurrency slot (halved on a 429
  storm) and for the requests/min and tokens/min buckets of :class:`Limits`;
- ``TransientError`` (connection errors, 408, 409, 429, 5xx) is retried with the
  :class:`RetryPolicy`'s jittered exponential backoff, or the server's ``Retry-After``
  (a longer one than ``max_retry_after`` stops the run instead of sleeping);
  ``RequestRejected`` (400, 422, ...) is not retried; ``insufficient_quota`` stops the
  run (``RunStopped``);
- every wait reads and sleeps on ``clock`` (a test passes a ``FakeClock``).

Retries used up raise the last ``TransientError``, reworded: an embedding is needed by
the whole run (the knowledge graph, a selection), not by one record that could be
rejected alone.
"""

from __future__ import annotations

import hashlib
import json
import random
from collections.abc import Iterable, Sequence
from typing import Protocol

import numpy as np

from evoforge.engine.client import Limits, OpStats, RetryPolicy, send_once, with_retries
from evoforge.engine.clock import Clock
from evoforge.engine.limits import AdaptiveConcurrency, TokenBucket
from evoforge.errors import QuotaExhausted, RunStopped, TransientError


class EmbeddingBackend(Protocol):
    """One batch of texts in, one vector per text out (``(len(texts), dim)``); failures
    raised as the engine's errors. No retries, no cache: those are the client's."""

    @property
    def identity(self) -> dict[str, str]:
        """What makes two backends give the same vectors (backend, model, base URL, ...)."""
        ...

    @property
    def endpoint(self) -> str:
        """Where the requests go, for messages (e.g. ``http://host/v1/embeddings``)."""
        ...

    async def embed_batch(self, texts: list[str]) -> np.ndarray: ...


class VectorStore(Protocol):
    """Vectors by (identity, text digest); :class:`evoforge.embeddings.EmbeddingCache`."""

    def get(
        self, identity: str, digests: Sequence[bytes], dim: int | None
    ) -> dict[bytes, np.ndarray]: ...

    def put(self, identity: str, items: Iterable[tuple[bytes, np.ndarray]]) -> None: ...


def identity_key(identity: dict[str, str]) -> str:
    """The canonical JSON of an embedder's identity, the first half of a cache address."""
    return json.dumps(identity, sort_keys=True, separators=(",", ":"))


def text_digest(text: str) -> bytes:
    """SHA-256 of the text, the second half of a cache address."""
    return hashlib.sha256(text.encode("utf-8")).digest()


class CachedTexts:
    """The texts of one call split into cached vectors and the distinct texts still to embed.

    ``missing`` maps digest -> text, in first-seen order; :meth:`fill` stores the fresh
    vectors and :meth:`matrix` lays every row out in the order of the texts.
    """

    def __init__(
        self, store: VectorStore, identity: dict[str, str], texts: Sequence[str], dim: int | None
    ) -> None:
        self.store = store
        self.identity = identity_key(identity)
        self.digests = [text_digest(text) for text in texts]
        self.found = store.get(self.identity, list(dict.fromkeys(self.digests)), dim)
        self.missing: dict[bytes, str] = {}
        for digest, text in zip(self.digests, texts, strict=True):
            if digest not in self.found:
                self.missing.setdefault(digest, text)

    def fill(self, vectors: np.ndarray) -> None:
        """Store the vectors of :attr:`missing`, in its order."""
        fresh = dict(zip(self.missing, vectors, strict=True))
        self.store.put(self.identity, fresh.items())
        self.found.update(fresh)
        self.missing = {}

    def matrix(self, dim: int) -> np.ndarray:
        out = np.zeros((len(self.digests), dim), dtype=np.float32)
        for row, digest in enumerate(self.digests):
            out[row] = self.found[digest]
        return out


class EmbeddingClient:
    """An :class:`EmbeddingBackend` behind the engine's cache, limits, retries and clock."""

    def __init__(
        self,
        backend: EmbeddingBackend,
        *,
        batch_size: int = 64,
        limits: Limits | None = None,
        retry: RetryPolicy | None = None,
        cache: VectorStore | None = None,
        clock: Clock | None = None,
        jitter_seed: int = 0,
    ) -> None:
        self.backend = backend
        self.batch_size = batch_size
        self.limits = limits or Limits()
        self.retry = retry or RetryPolicy()
        self.cache = cache
        self.clock = clock or Clock()
        self.stats = OpStats()
        self.concurrency = AdaptiveConcurrency(self.limits.concurrency, clock=self.clock)
        self._rpm = TokenBucket(self.limits.rpm, clock=self.clock) if self.limits.rpm else None
        self._tpm = TokenBucket(self.limits.tpm, clock=self.clock) if self.limits.tpm else None
        self._jitter = random.Random(jitter_seed)

    async def embed(self, texts: Sequence[str]) -> np.ndarray:
        """One vector per text, in order; ``(0, 0)`` for no texts. Cached texts are not
        sent, the others go ``batch_size`` at a time."""
        if not texts:
            return np.zeros((0, 0), dtype=np.float32)
        if self.cache is None:
            return await self._embed_all(list(texts))
        lookup = CachedTexts(self.cache, self.backend.identity, texts, None)
        self.stats.cache_hits += sum(digest in lookup.found for digest in lookup.digests)
        if lookup.missing:
            lookup.fill(await self._embed_all(list(lookup.missing.values())))
        return lookup.matrix(len(next(iter(lookup.found.values()))))

    async def _embed_all(self, texts: list[str]) -> np.ndarray:
        rows = [
            await self._with_retries(texts[start : start + self.batch_size])
            for start in range(0, len(texts), self.batch_size)
        ]
        return np.concatenate(rows)

    async def _with_retries(self, batch: list[str]) -> np.ndarray:
        def retried() -> None:
            self.stats.retries += 1

        try:
            return await with_retries(
                lambda: self._attempt(batch), self.retry, self.clock, self._jitter, retried
            )
        except TransientError as exc:
            raise TransientError(
                f"{self.backend.endpoint}: gave up after {self.retry.max_attempts} attempts: {exc}",
                status=exc.status,
                retry_after=exc.retry_after,
            ) from None
        except QuotaExhausted as exc:
            raise RunStopped(
                "insufficient_quota",
                f"{self.backend.endpoint}: the provider reports insufficient quota ({exc}). "
                "Add credit, then re-run the same command.",
            ) from None
        raise AssertionError("unreachable")  # pragma: no cover

    async def _attempt(self, batch: list[str]) -> np.ndarray:
        async with self.concurrency:
            if self._rpm is not None:
                await self._rpm.acquire(1)
            if self._tpm is not None:
                await self._tpm.acquire(sum(len(text) for text in batch) // 4 + 1)
            self.stats.calls += 1
            vectors = await send_once(
                lambda: self.backend.embed_batch(batch),
                self.retry,
                self.concurrency,
                lambda wait: (
                    f"{self.backend.endpoint}: the server asked to wait {wait:g} s "
                    f"(cap {self.retry.max_retry_after:g} s). Re-run later."
                ),
            )
        self.concurrency.on_success()
        return vectors
