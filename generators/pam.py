"""PAM self-correction data (Han et al., 2024, "Small Language Model Can Self-Correct",
AAAI 2024, arXiv 2401.07301): partial answer masking.

Per QA seed (``question``, optional ``reference``):

1. the student model writes an initial answer to the question alone;
2. the teacher verifies it in one structured call (``prompts/pam_verify.yaml``):
   ``{"verdict": "correct" | "incorrect", "rationale"}``;
3. on ``incorrect``, the teacher writes the corrected answer (``prompts/pam_correct.yaml``).

The ``pam`` record's user turn is the question plus a self-check trigger; its assistant
turn is the initial answer, the verification and (when incorrect) the correction, one
after another, separated by a blank line. ``segments`` give each part's character span
in the assistant turn, and whether it is trained: the initial answer is trained only when
it is correct (the paper masks the loss on a wrong initial answer, so the model learns to
verify and correct without learning the wrong answer); the verification and correction
always are. ``evoforge export --to tokens`` turns the spans into token labels.

Rejections: ``empty_answer`` (the student's or the correction), ``truncated``; at the
final write, ``--balance correct=SHARE`` drops the ``surplus`` of the larger side.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.final_write import RecordSelector
from evoforge.engine.runner import RecordContext, Result
from evoforge.llm.base import ChatModel, Completion, Message
from evoforge.options_training import DEFAULT_PAM_TRIGGER
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.heuristics import empty_answer

SEPARATOR = "\n\n"
STEP = "generator.pam"
STUDENT = {"route": "student"}  # the request param PairedModel routes on


class PairedModel:
    """Two models behind one engine client: requests whose params say
    ``route="student"`` go to ``student``, all others to ``teacher``. One client keeps
    one cache, one journal and one budget over both; ``route`` is part of the cache key."""

    def __init__(self, teacher: ChatModel, student: ChatModel) -> None:
        self.teacher = teacher
        self.student = student

    @property
    def identity(self) -> dict[str, str]:
        teacher = self.teacher.identity
        return {
            "backend": "pam",
            "model": teacher.get("model", teacher.get("backend", "?")),
            "teacher": json.dumps(teacher, sort_keys=True),
            "student": json.dumps(self.student.identity, sort_keys=True),
        }

    async def complete(
        self, messages: list[Message], *, schema: dict[str, Any] | None = None, **params: Any
    ) -> Completion:
        model = self.student if params.pop("route", None) == "student" else self.teacher
        return await model.complete(messages, schema=schema, **params)

    async def aclose(self) -> None:
        await self.teacher.aclose()
        if self.student is not self.teacher:
            await self.student.aclose()


def verification_text(verdict: str, rationale: str) -> str:
    """The verification segment as the student will learn to write it."""
    rationale = rationale.strip()
    text = f"Checking my answer: it is {verdict}."
    return f"{text} {rationale}" if rationale else text


def correction_text(answer: str) -> str:
    return f"Corrected answer: {answer.strip()}"


def assemble(parts: list[tuple[str, str, bool]]) -> tuple[str, list[dict[str, Any]]]:
    """The assistant turn from ``(name, text, trained)`` parts, and each part's span."""
    content = ""
    segments: list[dict[str, Any]] = []
    for name, text, trained in parts:
        if content:
            content += SEPARATOR
        segments.append(
            {"name": name, "start": len(content), "end": len(content) + len(text),
             "trained": trained}
        )  # fmt: skip
        content += text
    return content, segments


@dataclass
class PamTask:
    """One QA seed in, one ``pam`` record out (or a rejection with a reason)."""

    trigger: str = DEFAULT_PAM_TRIGGER
    allow_truncated: bool = False
    answer: PromptTemplate = field(default_factory=lambda: builtin_template("pam_answer"))
    verify: PromptTemplate = field(default_factory=lambda: builtin_template("pam_verify"))
    correct: PromptTemplate = field(default_factory=lambda: builtin_template("pam_correct"))

    def templates(self) -> list[PromptTemplate]:
        return [self.answer, self.verify, self.correct]

    def _cut(self, record: Record, completion: Completion, what: str, where: str) -> Result | None:
        text = completion.text.strip()
        verdict = empty_answer(text)
        if not verdict.ok:
            return Result.reject(record, "empty_answer", f"{what}: {verdict.detail}",
                                 step=STEP, field=where)  # fmt: skip
        if completion.finish_reason == "length" and not self.allow_truncated:
            return Result.reject(record, "truncated", f"{what} cut at max_tokens "
                                 f"({len(text)} chars)", step=STEP, field=where)  # fmt: skip
        return None

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        question = record["question"]
        reference = record.get("reference") or ""
        first = await ctx.ask(self.answer, op="pam_answer", params=dict(STUDENT), question=question)
        cut = self._cut(record, first, "the student's answer", "$.initial_answer")
        if cut is not None:
            return cut
        initial = first.text.strip()
        checked = await ctx.ask(
            self.verify, op="pam_verify", question=question, answer=initial, reference=reference
        )
        verdict = checked.parsed["verdict"]
        rationale = str(checked.parsed.get("rationale", ""))
        parts = [
            ("initial_answer", initial, verdict == "correct"),
            ("verification", verification_text(verdict, rationale), True),
        ]
        lineage = [*record.lineage, ctx.step("pam_answer", self.answer),
                   ctx.step("pam_verify", self.verify)]  # fmt: skip
        if verdict == "incorrect":
            fixed = await ctx.ask(
                self.correct, op="pam_correct", question=question, answer=initial,
                rationale=rationale, reference=reference,
            )  # fmt: skip
            cut = self._cut(record, fixed, "the correction", "$.correction")
            if cut is not None:
                return cut
            parts.append(("correction", correction_text(fixed.text), True))
            lineage.append(ctx.step("pam_correct", self.correct))
        content, segments = assemble(parts)
        fields: dict[str, Any] = {"question": question}
        if reference:
            fields["reference"] = reference
        fields["messages"] = [
            {"role": "user", "content": f"{question}{SEPARATOR}{self.trigger}".strip()},
            {"role": "assistant", "content": content},
        ]
        fields.update({name: text for name, text, _ in parts})
        fields["verdict"] = verdict
        fields["segments"] = segments
        meta = {**record.meta, "pam": {"verdict": verdict, "rationale": rationale}}
        made = Record(kind="pam", fields=fields, id=record.id, parent_id=record.parent_id,
                      lineage=lineage, meta=meta)  # fmt: skip
        return Result.accept(made)


def balance_quota(counts: dict[str, int], share: float) -> dict[str, int]:
    """How many correct and incorrect records to keep so that ``share`` of them are
    correct, dropping as few as possible (the surplus of the larger side)."""
    correct, incorrect = counts.get("correct", 0), counts.get("incorrect", 0)
    if share >= 1:
        return {"correct": correct, "incorrect": 0}
    if share <= 0:
        return {"correct": 0, "incorrect": incorrect}
    if correct * (1 - share) > incorrect * share:  # too many correct ones
        return {"correct": int(incorrect * share / (1 - share) + 1e-9), "incorrect": incorrect}
    return {"correct": correct, "incorrect": int(correct * (1 - share) / share + 1e-9)}


class BalanceSelector(RecordSelector):
    """Keeps the first records of each verdict, in input order, up to
    :func:`balance_quota`; the rest are dropped as ``surplus``."""

    def __init__(self, records: Iterable[dict[str, Any]], share: float) -> None:
        counts = {"correct": 0, "incorrect": 0}
        for record in records:
            counts[record.get("verdict", "correct")] += 1
        self.share = share
        self.counts = counts
        self.quota = balance_quota(counts, share)
        self.kept = {"correct": 0, "incorrect": 0}

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | None:
        verdict = record.get("verdict", "correct")
        if self.kept[verdict] < self.quota[verdict]:
            self.kept[verdict] += 1
            return None
        return ("surplus", f"--balance correct={self.share:g}: {self.quota[verdict]} "
                f"{verdict} records kept of {self.counts[verdict]}")  # fmt: skip
