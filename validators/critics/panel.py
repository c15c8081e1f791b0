"""The critic panel: run the critics on a sample, repair a failing one once, reject
what still fails.

Ragas v0.1 regenerates a question until its critics pass; here a retry is bounded
(one rewrite, never more) and nothing is dropped silently: a failing sample becomes
a ``Rejection`` with a reason code and the critic's own words.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import ClassVar

from evoforge.engine.runner import RecordContext, Rejection, Result
from evoforge.errors import ConfigError, RequestRejected
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators import heuristics
from evoforge.validators.base import Verdict
from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.grounding import Answerable, Grounded, InformationGain
from evoforge.validators.critics.sample import (
    Question,
    contexts_of,
    last_user_index,
    numbered_contexts,
    parts_of,
    question_of,
    question_prompt_text,
    reference_of,
    require_variables,
)
from evoforge.validators.critics.screens import SelfContained, WellFormed
from evoforge.validators.critics.verdicts import Verdicts


def default_critics() -> list[Critic]:
    """Cheapest first: the lexical checks screen before any judge is asked."""
    return [WellFormed(), SelfContained(), Grounded(), Answerable(), InformationGain()]


# A rewrite of the question cannot supply missing contexts, nor fix a judge's reply.
UNFIXABLE = frozenset({"no_context", "unparseable_rating"})


@dataclass
class CriticPanel:
    """Run the critics on a sample; repair a failing one once; reject what still fails.

    ``review(record, ctx) -> Record | Rejection``. The critics run in two passes:
    every ``screen`` (no model call) in order, then every ``judge`` in order;
    the first failure stops the pass, so a sample that fails a lexical check
    costs no judge call.

    On a failure, with ``rewrite_once``, the model is asked once
    (``prompts/rag_fix.yaml``, op ``critic_fix``) to rewrite the question and
    reference, quoting the failure's detail as feedback. A conversation keeps
    its earlier turns; only the last user turn is replaced. The fixed record
    (id ``<id>/fix``, lineage step ``critic_fix``, ``meta["critic_fix"] =
    {"reason", "feedback"}``) goes through every critic again. Still failing:
    ``Rejection(<id>/fix, reason, detail + " (after one rewrite)", fixed)``.
    There is never a second rewrite. Without ``rewrite_once``, or for
    ``no_context``, the first failure is the rejection.

    A failed model call (``RequestRejected``: ``invalid_json`` after the
    engine's one re-ask, ``http_400``, ...) becomes a rejection with its own
    reason. A passing record gets ``meta["critics"] = {"passed": [names],
    "verdicts": {name: {"ok", "score", "reason"}}}`` (see :class:`.verdicts.Verdicts`).
    Also a Task (``__call__(record, ctx) -> Result``) for ``Run`` and ``Chain``.
    """

    critics: Sequence[Critic] = field(default_factory=default_critics)
    rewrite_once: bool = True
    fix_template: PromptTemplate | None = None
    name: ClassVar[str] = "critics"

    def __post_init__(self) -> None:
        if not self.critics:
            raise ConfigError("CriticPanel: give at least one critic")
        if self.fix_template is None:
            self.fix_template = builtin_template("rag_fix")
        require_variables(
            self.fix_template, {"question", "reference", "contexts", "feedback"}, "CriticPanel"
        )
        if self.fix_template.output_schema is None:
            raise ConfigError(
                f"{self.fix_template.source}: the fix template needs an output_schema "
                '({"question", "reference"})'
            )

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        outcome = await self.review(record, ctx)
        if isinstance(outcome, Rejection):
            return Result(rejections=[outcome])
        return Result.accept(outcome)

    async def review(self, record: Record, ctx: RecordContext) -> Record | Rejection:
        seen = Verdicts()
        try:
            failure = await self.first_failure(record, ctx, seen)
        except RequestRejected as exc:
            return Rejection(record.id, exc.reason, f"{exc} (critics)", record.to_json())
        if failure is None:
            return self._passed(record, seen)
        if not self.rewrite_once or failure.reason in UNFIXABLE:
            return Rejection(record.id, str(failure.reason), failure.detail, record.to_json())

        try:
            fixed = await self._fix(record, ctx, failure)
        except RequestRejected as exc:
            detail = f"{exc} (critic_fix, after {failure.reason}: {failure.detail})"
            return Rejection(record.id, exc.reason, detail, record.to_json())
        after = " (after one rewrite)"
        drift = heuristics.language_drift(
            question_prompt_text(question_of(record)), question_prompt_text(question_of(fixed))
        )
        if not drift.ok:
            return Rejection(fixed.id, str(drift.reason), drift.detail + after, fixed.to_json())
        seen = Verdicts()
        try:
            again = await self.first_failure(fixed, ctx, seen)
        except RequestRejected as exc:
            return Rejection(fixed.id, exc.reason, f"{exc} (critics){after}", fixed.to_json())
        if again is None:
            return self._passed(fixed, seen)
        return Rejection(fixed.id, str(again.reason), again.detail + after, fixed.to_json())

    async def first_failure(
        self, record: Record, ctx: RecordContext, seen: Verdicts | None = None
    ) -> Verdict | None:
        """The first failing verdict (screens, then judges), or ``None`` when all pass;
        ``seen`` collects each critic's verdicts on the way."""
        for critic in self.critics:
            verdict = critic.screen(record)
            if seen is not None:
                seen.add(critic.name, verdict)
            if not verdict.ok:
                return verdict
        for critic in self.critics:
            verdict = await critic.judge(record, ctx)
            if seen is not None:
                seen.add(critic.name, verdict)
            if not verdict.ok:
                return verdict
        return None

    def _passed(self, record: Record, seen: Verdicts) -> Record:
        passed = [critic.name for critic in self.critics]
        meta = {**record.meta, "critics": {"passed": passed, "verdicts": seen.compact()}}
        return dataclasses.replace(record, fields=dict(record.fields), meta=meta)

    async def _fix(self, record: Record, ctx: RecordContext, failure: Verdict) -> Record:
        template = self.fix_template
        assert template is not None
        parts = parts_of(record)
        question = question_of(record)
        reply = await ctx.ask(
            template,
            op="critic_fix",
            question=question_prompt_text(question),
            reference=reference_of(record),
            contexts=numbered_contexts(contexts_of(record)),
            feedback=failure.detail,
        )
        parsed = reply.parsed if isinstance(reply.parsed, dict) else {}
        new_text = _without_role_label(str(parsed.get("question", "")))
        new_reference = str(parsed.get("reference", "")).strip()
        if not new_text or not new_reference:
            raise RequestRejected(
                "schema_mismatch", f"{template.id}: the rewrite has an empty question or reference"
            )
        new_question: Question = new_text
        if not isinstance(question, str):
            turns = [dict(turn) for turn in question]
            last = last_user_index(turns)
            if last is None:
                turns.append({"role": "user", "content": new_text})
            else:
                turns[last] = {**turns[last], "content": new_text}
            new_question = turns
        fixed = record.derive(
            ctx.step("critic_fix", template),
            suffix="fix",
            **{parts.question: new_question, parts.answer: new_reference},
        )
        fixed.meta.pop("critics", None)
        fixed.meta["critic_fix"] = {"reason": failure.reason, "feedback": failure.detail}
        return fixed


def _without_role_label(text: str) -> str:
    """The new last user turn without a "user:" label a model may copy from the prompt."""
    text = text.strip()
    return re.sub(r"^(?:user|用户)\s*[:：]\s*", "", text, flags=re.IGNORECASE).strip()
