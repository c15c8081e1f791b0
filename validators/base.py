"""The validator contract: ``check(record) -> Verdict``.

A verdict is data: a failed check carries a reason code (``refusal``,
``prompt_leak``, ...) and a detail a person can read, so a dropped record is
never silent. Plain functions of text live in ``heuristics``; classes here
adapt them to records.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

from evoforge.records import Record


@dataclass(frozen=True)
class Verdict:
    ok: bool
    reason: str | None = None
    detail: str = ""
    score: float | None = None

    @classmethod
    def passed(cls, score: float | None = None) -> Verdict:
        return cls(True, score=score)

    @classmethod
    def failed(cls, reason: str, detail: str) -> Verdict:
        return cls(False, reason, detail)


PASS = Verdict(True)


class Validator(Protocol):
    def check(self, record: Record) -> Verdict: ...
