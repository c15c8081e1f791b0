"""The validator contract: a named ``Check`` step over a record's JSON, and ``Verdict``.

A check is a small function ``test(record, settings) -> Verdict`` (as jsonschema's
keyword functions are): a failed verdict carries a reason code (``refusal``,
``prompt_leak``, ...), a detail a person can read and, where the function knows
it, the JSON path it is about. ``Check`` turns that into the step contract: the
record, or a ``Rejection`` with ``step = "check.NAME"`` and ``field`` the JSON path
(``"$.output"``), so a dropped record is never silent. Plain functions of text
live in ``heuristics``; ``checks`` names them for records.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Protocol

from evoforge.records import Record
from evoforge.steps import Rejection, Result


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None
    detail: str = ""
    score: float | None = None
    field: str | None = None  # the JSON path the failure is about, when the test knows it

    @classmethod
    def passed(cls, score: float | None = None) -> Verdict:
        return cls(True, score=score)

    @classmethod
    def failed(cls, reason: str, detail: str, *, field: str | None = None) -> Verdict:
        return cls(False, reason, detail, field=field)


PASS = Verdict(True)


class Validator(Protocol):
    def check(self, record: Record) -> Verdict: ...


Test = Callable[[dict[str, Any], Any], Verdict]
Where = Callable[[dict[str, Any], Any], str]


@dataclass(frozen=True)
class Check:
    """A named per-record check as a record step.

    ``test(record_json, settings) -> Verdict``; ``field`` is the JSON path a failure
    is about (a string, or a function of the record and settings, e.g. the answer
    field of the record's kind), unless the verdict names its own. ``settings`` are
    what ``__call__`` passes (``validate`` passes its own ``CheckSettings``)."""

    name: str
    test: Test
    field: str | Where = "$"
    settings: Any = None

    def verdict(self, record: dict[str, Any], settings: Any = None) -> Verdict:
        return self.test(record, self.settings if settings is None else settings)

    def rejection(self, record: dict[str, Any], settings: Any = None) -> Rejection | None:
        """``None`` when the record passes; else its ``Rejection`` (step, field set)."""
        settings = self.settings if settings is None else settings
        verdict = self.test(record, settings)
        if verdict.ok:
            return None
        return self.reject(record, verdict, settings)

    def reject(self, record: dict[str, Any], verdict: Verdict, settings: Any = None) -> Rejection:
        where = verdict.field
        if where is None:
            where = self.field if isinstance(self.field, str) else self.field(record, settings)
        return Rejection(
            str(record.get("id")),
            verdict.reason or self.name,
            verdict.detail,
            record,
            step=f"check.{self.name}",
            field=where,
        )

    async def __call__(self, record: Record, ctx: Any = None) -> Result:
        rejection = self.rejection(record.to_json())
        return Result(rejections=[rejection]) if rejection else Result.accept(record)


def as_check(name: str, target: Any) -> Check:
    """A registered check as a ``Check``: itself, or a plain ``test`` function wrapped."""
    if isinstance(target, Check):
        return target
    if callable(target):
        return Check(name, target)
    raise TypeError(f"check {name!r}: expected a Check or a function, got {target!r}")
