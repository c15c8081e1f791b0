"""Instruction-set generators. ``AnswerInstructions`` writes the ``output`` of each
instruction seed: the answer step of Evol-Instruct (Xu et al., 2023), also used on
its own to answer an existing instruction set with a stronger model.
"""

from __future__ import annotations

from dataclasses import dataclass

from evoforge.engine.runner import RecordContext, Result
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.heuristics import empty_answer


@dataclass
class AnswerInstructions:
    """Answer every instruction record; a record in, the same record with ``output`` out.

    Rejections: ``empty_answer`` (only punctuation and stop words) and
    ``truncated`` (the model hit ``max_tokens``; pass ``allow_truncated=True`` to
    keep those, marked in ``meta.finish_reason``).
    """

    template: PromptTemplate | None = None
    allow_truncated: bool = False
    op: str = "answer"

    def __post_init__(self) -> None:
        if self.template is None:
            self.template = builtin_template("answer")

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        template = self.template
        assert template is not None
        completion = await ctx.ask(
            template,
            op=self.op,
            instruction=record["instruction"],
            input=record.get("input", ""),
        )
        text = completion.text.strip()
        verdict = empty_answer(text)
        if not verdict.ok:
            return Result.reject(
                record, "empty_answer", verdict.detail, step="generator.answer", field="$.output"
            )
        if completion.finish_reason == "length" and not self.allow_truncated:
            return Result.reject(
                record,
                "truncated",
                f"answer cut at max_tokens ({len(text)} chars)",
                step="generator.answer",
                field="$.output",
            )
        answered = Record(
            kind=record.kind,
            fields={**record.fields, "output": text},
            id=record.id,
            parent_id=record.parent_id,
            lineage=[*record.lineage, ctx.step(self.op, template)],
            meta={
                **record.meta,
                "finish_reason": completion.finish_reason,
                "usage": {
                    "prompt_tokens": completion.usage.prompt_tokens,
                    "completion_tokens": completion.usage.completion_tokens,
                },
            },
        )
        return Result.accept(answered)
