"""MinHash signatures on Ray Data (``NearDuplicateGraph(executor="ray[:ADDRESS]")``).

The per-record part of :class:`~.graph.NearDuplicateGraph`, the signatures
(shingling, MinHash, LSH band keys), runs as Ray Data ``map_batches`` jobs over the
cluster, with :func:`.shards._band_keys_of_texts`, the very function a local run
calls, over windows of ``WINDOW`` texts. A record's keys depend on its text alone, so
they equal the local ones whatever the blocks.

The rest stays on the driver, as in a local run: the exact-text digests, grouping
band keys into candidate pairs (a sort of one band's keys at a time), verifying each
pair by its true shingle Jaccard, the connected components (the vectorised
union-find of :func:`.graph.connected_components`) and the choice of survivors.

So the kept set, the rejects with ``lost_to`` and the clusters equal the local
result on the same input and seed (tests/test_ray_dedup.py). The driver holds one
window of texts at a time, so memory does not grow with the input beyond the
per-record ids, digests and keys that a local run keeps too.
"""

from __future__ import annotations

import warnings
from collections.abc import Iterator
from typing import Any

import numpy as np

from evoforge.validators.dedup.shards import _band_keys_of_texts, _KeyPipeline

WINDOW = 1 << 17  # texts per Ray Data job: bounds the driver's memory
BLOCK = 4096  # texts (or pairs) per map_batches call


def key_pipeline(executor: str, active: bool, workers: int, band_args: tuple[int, ...]) -> Any:
    """The band keys' pipeline of a graph: this machine's (``workers`` processes,
    :class:`.shards._KeyPipeline`) or, for ``executor`` ``ray[:ADDRESS]``, Ray Data's
    (:class:`RayKeyPipeline`). Both give the same keys."""
    if executor == "local" or not active:
        return _KeyPipeline(active=active, workers=workers, band_args=band_args)
    address = executor.partition(":")[2] or None
    return RayKeyPipeline(active=active, band_args=band_args, address=address)


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
