"""Dedup methods as set steps: ``step.run(records) -> SetResult(kept, rejected)``.

:class:`DedupStep` runs one :class:`~.graph.NearDuplicateGraph` over its ``methods``
and returns each dropped record as a :class:`~evoforge.steps.Rejection` with
``reason="duplicate"``, ``step="dedup.METHOD"``, ``lost_to`` (the id it lost to),
the record itself, and ``extra={"similarity", "method"}``. :data:`EXACT`,
:data:`MINHASH` and :data:`SEMANTIC` are the ``dedup`` registry's built-ins
(``exact``, ``minhash``, ``semantic``); several built-ins named together
(``--method exact,minhash``) run as one graph (:meth:`DedupStep.combine`), so a
group joined by an exact pair and a MinHash pair stays one group.

A plugin's dedup method is any object with ``run(records) -> SetResult``; when it
also has ``configure(**settings)``, ``evoforge dedup`` calls it with the settings its
signature names (``fields``, ``threshold``, ``seed``, ``score``, ...) and runs what it
returns. Register it with ``register("dedup", "mine", step)``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Callable, Iterable, Sequence
from typing import Any

from evoforge.steps import SetResult
from evoforge.validators.dedup.graph import NearDuplicateGraph

__all__ = ["EXACT", "MINHASH", "SEMANTIC", "DedupStep", "ExactDedup", "MinHashDedup",
           "SemanticDedup"]  # fmt: skip


class DedupStep:
    """A set step: the near-duplicate graph over ``methods``, one record kept per group.

    ``settings`` are :class:`NearDuplicateGraph`'s keywords (``threshold``, ``fields``,
    ``seed``, ``embedder``, ``shards``, ...); ``score`` picks each group's survivor
    (highest, then lowest id; default: lowest id)."""

    methods: tuple[str, ...] = ("exact", "minhash")

    def __init__(
        self,
        methods: Sequence[str] | None = None,
        *,
        score: Callable[[dict[str, Any]], float] | None = None,
        **settings: Any,
    ) -> None:
        if methods is not None:
            self.methods = tuple(methods)
        self.score = score
        self.settings = settings

    @property
    def name(self) -> str:
        return "dedup." + "+".join(self.methods)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(methods={list(self.methods)})"

    def configure(self, **settings: Any) -> DedupStep:
        """A copy with these settings added (``methods`` and ``score`` included)."""
        merged: dict[str, Any] = {"score": self.score, **self.settings, **settings}
        methods = merged.pop("methods", self.methods)
        return DedupStep(methods, **merged)

    @staticmethod
    def combine(steps: Iterable[DedupStep]) -> DedupStep:
        """One step over the methods of all ``steps`` (in order, each once), so that
        their pairs meet in one graph; settings of later steps win."""
        methods: list[str] = []
        settings: dict[str, Any] = {}
        score = None
        for step in steps:
            methods += [m for m in step.methods if m not in methods]
            settings.update(step.settings)
            score = step.score or score
        return DedupStep(methods, score=score, **settings)

    def build(self, records: Iterable[dict[str, Any]]) -> NearDuplicateGraph:
        """The graph of ``records`` (held in memory; see ``dedup_jsonl`` to stream)."""
        return NearDuplicateGraph(methods=self.methods, **self.settings).build(list(records))

    def resolve(self, graph: NearDuplicateGraph) -> SetResult:
        """Kept records in input order and a Rejection (with its record) per duplicate."""
        dropped = graph.rejections_by_index(self.score)
        kept = [r for i, r in enumerate(graph.records) if i not in dropped]
        rejected = [
            dataclasses.replace(dropped[i], record=graph.records[i]) for i in sorted(dropped)
        ]
        return SetResult(kept, rejected)

    def run(self, records: Iterable[dict[str, Any]]) -> SetResult:
        return self.resolve(self.build(records))


class ExactDedup(DedupStep):
    """Identical normalised text (NFKC, casefold, whitespace collapsed); similarity 1.0."""

    methods = ("exact",)


class MinHashDedup(DedupStep):
    """MinHash LSH candidates, each verified by its shingle Jaccard ``>= threshold``."""

    methods = ("minhash",)


class SemanticDedup(DedupStep):
    """Embedding cosine ``>= semantic_threshold`` over nearest neighbours (SemDeDup);
    needs ``embedder=...`` (``configure(embedder=load_embedder(...))``)."""

    methods = ("semantic",)


EXACT = ExactDedup()
MINHASH = MinHashDedup()
SEMANTIC = SemanticDedup()
