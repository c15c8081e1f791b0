"""MinHash dedup on Ray Data (``NearDuplicateGraph(executor="ray[:ADDRESS]")``).

The per-record and per-pair work of :class:`~.graph.NearDuplicateGraph` runs as Ray
Data ``map_batches`` jobs over the cluster:

- **signatures** (shingling, MinHash, LSH band keys): :func:`.shards._band_keys_of_texts`,
  the very function a local run calls, over windows of ``WINDOW`` texts. A record's
  keys depend on its text alone, so they equal the local ones whatever the blocks;
- **verification** of candidate pairs (their true shingle Jaccard), ``RAY_PAIRS``
  pairs a job, each row a pair with its two texts; the same arithmetic as the local
  :func:`pair_similarities`, so the same similarities;
- **embeddings** for ``semantic`` (:func:`embed_texts`), the embedder sent to the
  workers.

The rest stays on the driver, as in a local run: reading the records, the exact-text
digests, grouping band keys into candidate pairs (a sort of one band's keys at a
time), the connected components (the vectorised union-find of
:func:`.graph.connected_components`, a reduce of component ids) and the choice of
survivors. Per record the driver holds its id, a digest and its band keys, as a
local run does, and one window of texts or pairs at a time.

So the kept set, the rejects with ``lost_to`` and the clusters equal the local
result on the same input and seed (tests/test_ray_executor.py).
"""

from __future__ import annotations

import functools
import warnings
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np

from evoforge.validators.dedup.shards import _band_keys_of_texts, _KeyPipeline

WINDOW = 1 << 17  # texts per Ray Data job: bounds the driver's memory
BLOCK = 4096  # texts (or pairs) per map_batches call
RAY_PAIRS = 1 << 16  # candidate pairs per Ray Data job


def key_pipeline(executor: str, active: bool, workers: int, band_args: tuple[int, ...]) -> Any:
    """The band keys' pipeline of a graph: this machine's (``workers`` processes,
    :class:`.shards._KeyPipeline`) or, for ``executor`` ``ray[:ADDRESS]``, Ray Data's
    (:class:`RayKeyPipeline`). Both give the same keys."""
    if executor == "local" or not active:
        return _KeyPipeline(active=active, workers=workers, band_args=band_args)
    address = executor.partition(":")[2] or None
    return RayKeyPipeline(active=active, band_args=band_args, address=address)


def pair_checker(
    executor: str, shingler: Any, batch_size: int, block: int
) -> tuple[Callable[[np.ndarray, dict[int, str]], list[float]], int]:
    """How a graph checks its candidate pairs, and how many at a time: here
    (:func:`pair_similarities`, ``block`` pairs), or for ``ray[:ADDRESS]`` as Ray Data
    jobs of ``RAY_PAIRS`` pairs (:class:`RayPairCheck`). Both give the same numbers."""
    if executor == "local":
        return functools.partial(pair_similarities, shingler=shingler, batch_size=batch_size), block
    return RayPairCheck(executor.partition(":")[2] or None, shingler), RAY_PAIRS


def pair_similarities(
    pairs: np.ndarray, texts: dict[int, str], *, shingler: Any, batch_size: int
) -> list[float]:
    """The shingle Jaccard of each pair ``(a, b)`` of record positions; ``texts`` maps
    each position in the pairs to its compared text."""
    needed = list(texts)
    sets: dict[int, np.ndarray] = {}
    for start in range(0, len(needed), batch_size):
        part = needed[start : start + batch_size]
        flat, counts = shingler.hashes([texts[i] for i in part])
        pieces = map(np.unique, np.split(flat, np.cumsum(counts)[:-1]))
        sets.update(zip(part, pieces, strict=True))
    return [_jaccard(sets[a], sets[b]) for a, b in pairs.tolist()]


def _jaccard(sa: np.ndarray, sb: np.ndarray) -> float:
    common = len(np.intersect1d(sa, sb, assume_unique=True))
    return common / (len(sa) + len(sb) - common)


class _PairJaccard:
    """The map_batches function: the Jaccard of each row's two texts."""

    def __init__(self, shingler: Any) -> None:
        self.shingler = shingler

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        sets = {}
        for side in ("a", "b"):
            flat, counts = self.shingler.hashes([str(t) for t in batch[side]])
            sets[side] = list(map(np.unique, np.split(flat, np.cumsum(counts)[:-1])))
        similarity = [_jaccard(sa, sb) for sa, sb in zip(sets["a"], sets["b"], strict=True)]
        return {"at": batch["at"], "similarity": np.array(similarity, dtype=np.float64)}


class RayPairCheck:
    """Candidate pairs checked by a Ray Data job: one row per pair with its two texts."""

    def __init__(self, address: str | None, shingler: Any) -> None:
        from evoforge.engine.ray_executor import connect

        self.ray = connect(address)
        self.shingler = shingler

    def __call__(self, pairs: np.ndarray, texts: dict[int, str]) -> list[float]:
        columns = {
            "at": np.arange(len(pairs)),
            "a": [texts[a] for a in pairs[:, 0].tolist()],
            "b": [texts[b] for b in pairs[:, 1].tolist()],
        }
        results = (
            _dataset(self.ray, columns)
            .map_batches(_PairJaccard(self.shingler), batch_format="numpy", batch_size=BLOCK)
            .iter_batches(batch_format="numpy", batch_size=None)
        )
        at, similarity = [], []
        for batch in results:
            at.append(batch["at"])
            similarity.append(batch["similarity"])
        order = np.argsort(np.concatenate(at), kind="stable")
        return np.concatenate(similarity)[order].tolist()


def embed_texts(executor: str, embedder: Any, texts: list[str]) -> np.ndarray:
    """``embedder.embed(texts)``: here, or for ``ray[:ADDRESS]`` as Ray Data jobs of
    ``WINDOW`` texts (``BLOCK`` a call). Vectors come back in order, of the embedder's
    dtype; an embedder whose vector of a text does not depend on the other texts of
    its batch (hashing, an HTTP embedder) gives the same vectors either way."""
    if executor == "local" or not texts:
        return embedder.embed(texts)
    from evoforge.engine.ray_executor import connect

    ray = connect(executor.partition(":")[2] or None)
    parts = []
    for start in range(0, len(texts), WINDOW):
        window = texts[start : start + WINDOW]
        parts.append(_in_order(
            _dataset(ray, {"at": np.arange(len(window)), "text": window})
            .map_batches(_Embed(embedder), batch_format="numpy", batch_size=BLOCK),
            "vector",
        ))  # fmt: skip
    return np.concatenate(parts)


class _Embed:
    """The map_batches function: a block of texts' vectors."""

    def __init__(self, embedder: Any) -> None:
        self.embedder = embedder

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        vectors = np.asarray(self.embedder.embed([str(t) for t in batch["text"]]))
        return {"at": batch["at"], "vector": vectors}


def _in_order(dataset: Any, column: str) -> np.ndarray:
    """A finished dataset's ``column``, in the order of its ``at`` column."""
    at, values = [], []
    for batch in dataset.iter_batches(batch_format="numpy", batch_size=None):
        at.append(batch["at"])
        values.append(np.asarray(batch[column]))
    return np.concatenate(values)[np.argsort(np.concatenate(at), kind="stable")]


def _dataset(ray: Any, columns: dict[str, Any]) -> Any:
    import pyarrow as pa

    with warnings.catch_warnings():
        # Ray Data's own context warns of its deprecated fields as it is made.
        warnings.simplefilter("ignore", DeprecationWarning)
        context = ray.data.DataContext.get_current()
    context.enable_progress_bars = False
    context.print_on_execution_start = False
    return ray.data.from_arrow(pa.table(columns))


class _BandKeys:
    """The map_batches function: band keys of a block of texts, with their positions."""

    def __init__(self, band_args: tuple[int, ...]) -> None:
        self.band_args = band_args

    def __call__(self, batch: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        keys, shingled = _band_keys_of_texts([str(t) for t in batch["text"]], *self.band_args)
        return {"at": batch["at"], "keys": keys, "shingled": shingled}


class RayKeyPipeline:
    """:class:`.shards._KeyPipeline`'s interface on Ray Data: ``submit`` gathers texts and
    yields the keys of each full window, in order; ``drain`` yields the rest."""

    def __init__(self, *, active: bool, band_args: tuple[int, ...], address: str | None) -> None:
        self._active = active
        self._args = band_args
        self._address = address
        self._texts: list[str] = []
        self.ray: Any = None

    def __enter__(self) -> RayKeyPipeline:
        if self._active:
            from evoforge.engine.ray_executor import connect

            self.ray = connect(self._address)
        return self

    def __exit__(self, *exc: object) -> None:
        self._texts = []

    def submit(self, texts: list[str]) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if not self._active:
            return
        self._texts.extend(texts)
        if len(self._texts) >= WINDOW:
            yield self._window()

    def drain(self) -> Iterator[tuple[np.ndarray, np.ndarray]]:
        if self._active and self._texts:
            yield self._window()

    def _window(self) -> tuple[np.ndarray, np.ndarray]:
        texts, self._texts = self._texts, []
        dataset = _dataset(self.ray, {"at": np.arange(len(texts)), "text": texts})
        results = dataset.map_batches(
            _BandKeys(self._args), batch_format="numpy", batch_size=BLOCK
        ).iter_batches(batch_format="numpy", batch_size=None)
        at, keys, shingled = [], [], []
        for batch in results:
            at.append(batch["at"])
            keys.append(np.asarray(batch["keys"]))
            shingled.append(batch["shingled"])
        order = np.argsort(np.concatenate(at), kind="stable")
        return np.concatenate(keys)[order], np.concatenate(shingled)[order]


class RayEmbedder:
    """An embedder whose :meth:`embed` runs as Ray Data jobs (:func:`embed_texts`): how
    ``select --executor ray`` embeds for DEITA's diversity filter and k-center. Every
    other attribute is the wrapped embedder's."""

    def __init__(self, embedder: Any, executor: str) -> None:
        self.embedder = embedder
        self.executor = executor

    def embed(self, texts: Any) -> np.ndarray:
        return embed_texts(self.executor, self.embedder, list(texts))

    def __getattr__(self, name: str) -> Any:
        return getattr(self.embedder, name)
