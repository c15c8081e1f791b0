"""Band keys of a stream of text batches, in this process or in ``shards`` workers.

Signatures depend on each text alone (:mod:`.signatures`), so worker processes can
compute them for batches in any order and the result equals one process's; only a
bounded number of batches is in flight, so memory does not grow with the input.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Iterator
from concurrent.futures import Future, ProcessPoolExecutor
from multiprocessing import get_context

import numpy as np

from evoforge.validators.dedup.signatures import MinHasher, ShingleHasher, _short_keys, band_keys


def _band_keys_of_texts(
    texts: list[str], num_perm: int, seed: int, bands: int, rows: int, n_words: int, n_chars: int
) -> tuple[np.ndarray, np.ndarray]:
    """Band keys of a batch of texts and which texts have shingles; the unit of work of
    :class:`_KeyPipeline`, in this process or a shard's (a top-level function, so a
    worker process can run it)."""
    shingler = ShingleHasher(n_words=n_words, n_chars=n_chars)
    flat, counts = shingler.hashes(texts)
    signatures = MinHasher(num_perm, seed)._permute_min(flat, counts)
    return _short_keys(band_keys(signatures, bands, rows)), counts > 0


class _KeyPipeline:
    """Band keys of batches of texts, in submission order: computed here, or with
    ``workers > 1`` by that many worker processes with a bounded number of batches in
    flight (so memory does not grow with the input). ``band_args`` are those of
    :func:`_band_keys_of_texts` after the texts; when not ``active`` (no ``minhash``
    method), nothing is computed."""

    def __init__(self, *, active: bool, workers: int, band_args: tuple[int, ...]) -> None:
        self._active = active
        self._args = band_args
        self._workers = workers
        self._pool: ProcessPoolExecutor | None = None
        self._pending: deque[Future[tuple[np.ndarray, np.ndarray]]] = deque()

    def __enter__(self) -> _KeyPipeline:
        if self._active and self._workers > 1:
            self._pool = ProcessPoolExecutor(self._workers, mp_context=get_context("spawn"))
        return self

    def __exit__(self, *exc: object) -> None:
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)

    def submit(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self._active or not texts:
            return
        if self._pool is None:
            yield _band_keys_of_texts(texts, *self._args)
            return
        self._pending.append(self._pool.submit(_band_keys_of_texts, texts, *self._args))
        while len(self._pending) > 2 * self._workers:
            yield self._pending.popleft().result()

    def drain(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        while self._pending:
            yield self._pending.popleft().result()
