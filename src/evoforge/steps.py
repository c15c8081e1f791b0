"""The step contract: every operator is a record step or a set step; one Rejection.

- A **record step** (generators' per-seed work, evolvers, checks, critics, scorers)
  is ``async step(record, ctx) -> Result``: one record in, any number of records
  and rejections out (a seed can yield several of each).
- A **set step** (dedup, select, the exact-N planners) sees the whole stream or
  set: ``step.run(records) -> SetResult(kept, rejected)``.
- A **Rejection** is the one shape of a dropped record, in every output: the
  reason code, a detail a person can read, the record, and where known the step
  that rejected it (``"check.refusal"``), the JSON path it is about (``"$.output"``,
  as jsonschema locates an error) and, for a duplicate, the id it ``lost_to``.

Steps are found by name in one registry per kind (:mod:`evoforge.registry`):
``lookup("check", "refusal")``; plugins add theirs through the ``evoforge.steps``
entry-point group. The design follows datatrove's pipeline steps (``run(data)``,
rejected documents written out with their reason, not lost) and jsonschema's
errors with a location.
"""

from __future__ import annotations

import dataclasses
import random
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

from evoforge.records import Record
from evoforge.registry import KINDS, Registry, lookup, names, register, registry, unregister

__all__ = [
    "KINDS",
    "RecordStep",
    "Registry",
    "Rejection",
    "Result",
    "SetResult",
    "SetStep",
    "StepContext",
    "lookup",
    "names",
    "register",
    "registry",
    "unregister",
]


@dataclass
class Rejection:
    """A dropped record and why: the only rejection shape.

    ``to_json`` writes ``{"id", "reason", "detail", "record"}`` as evoforge always has,
    plus ``step``, ``field`` and ``lost_to`` only when they are set, then the keys of
    ``extra`` (a method's own, e.g. dedup's ``similarity`` and ``method``)."""

    id: str
    reason: str
    detail: str
    record: dict[str, Any] | None = None
    # ``field`` names a dataclass field here, so the helper is spelled out in full.
    step: str | None = dataclasses.field(default=None, kw_only=True)
    field: str | None = dataclasses.field(default=None, kw_only=True)
    lost_to: str | None = dataclasses.field(default=None, kw_only=True)
    extra: dict[str, Any] = dataclasses.field(default_factory=dict, kw_only=True)

    @classmethod
    def of(cls, record: Record, reason: str, detail: str, **where: Any) -> Rejection:
        """The rejection of ``record`` (its id and JSON); ``where``: step, field, lost_to."""
        return cls(record.id, reason, detail, record.to_json(), **where)

    def to_json(self, *, record: bool = True, step: bool = True) -> dict[str, Any]:
        """The rejects-file line. ``record=False`` leaves the ``record`` key out, for a
        set step that never held the records (streaming dedup keeps only their ids);
        ``step=False`` leaves ``step`` out where the line names it otherwise (dedup's
        ``method``). The defaults give the line every other step writes."""
        data: dict[str, Any] = {"id": self.id, "reason": self.reason, "detail": self.detail}
        if record:
            data["record"] = self.record
        for key in ("step", "field", "lost_to") if step else ("field", "lost_to"):
            value = getattr(self, key)
            if value is not None:
                data[key] = value
        data.update(self.extra)
        return data


@dataclass
class Result:
    """What one record step produced: accepted records and rejections, each with a reason."""

    records: list[Record] = field(default_factory=list)
    rejections: list[Rejection] = field(default_factory=list)

    @classmethod
    def accept(cls, *records: Record) -> Result:
        return cls(records=list(records))

    @classmethod
    def reject(cls, record: Record, reason: str, detail: str, **where: Any) -> Result:
        return cls(rejections=[Rejection.of(record, reason, detail, **where)])


class StepContext(Protocol):
    """What a record step may use: the model (through the engine), its RNG, lineage.

    ``engine.runner.RecordContext`` is the one the engine passes."""

    client: Any
    run_seed: int
    record_id: str
    seq: int

    def rng(self, round_: int = 0) -> random.Random: ...

    def step(self, op: str, template: Any = None, round_: int = 0) -> dict[str, Any]: ...

    async def ask(self, template: Any, *, op: str, round_: int = 0, **values: Any) -> Any: ...


@runtime_checkable
class RecordStep(Protocol):
    """``async step(record, ctx) -> Result``."""

    async def __call__(self, record: Record, ctx: StepContext) -> Result: ...


@dataclass
class SetResult:
    """What a set step kept (in input order, as it was given them: dicts, or
    ``Record``s for the selectors) and what it rejected, with reasons."""

    kept: list[Any] = field(default_factory=list)
    rejected: list[Rejection] = field(default_factory=list)


@runtime_checkable
class SetStep(Protocol):
    """``step.run(records) -> SetResult``: sees the whole stream or set at once."""

    def run(self, records: Iterable[dict[str, Any]]) -> SetResult: ...
