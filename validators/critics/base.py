"""The critic contract: a cheap screen with no model call, then a judge that may ask one."""

from __future__ import annotations

from typing import ClassVar

from evoforge.engine.runner import RecordContext
from evoforge.records import Record
from evoforge.validators.base import PASS, Verdict


class Critic:
    """One check of a sample, split by cost.

    ``screen(record)`` makes no model call; ``judge(record, ctx)`` may make
    one and runs only after the screen passed. ``review`` runs both. A failed
    model call raises ``RequestRejected``; ``CriticPanel`` turns it into a
    rejection.
    """

    name: ClassVar[str] = "critic"

    def screen(self, record: Record) -> Verdict:
        return PASS

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        return PASS

    async def review(self, record: Record, ctx: RecordContext) -> Verdict:
        verdict = self.screen(record)
        if not verdict.ok:
            return verdict
        return await self.judge(record, ctx)
