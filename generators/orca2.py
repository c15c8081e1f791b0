"""Orca 2 prompt erasure (Mitra et al., 2023, "Orca 2: Teaching Small Language Models
How to Reason", arXiv 2311.11045).

The teacher answers each instruction under a detailed system prompt for one reasoning
strategy (``step_by_step``, ``recall_then_generate``, ``recall_reason_generate``,
``extract_generate``, ``direct_answer``; prompts ``prompts/orca2_<strategy>.yaml``,
written for evoforge). The training record keeps only a generic system message, the
user turn and the teacher's answer: the strategy prompt is *erased*, so the student
learns to pick and run the strategy without being told. ``meta.orca2`` names the
strategy and the prompt's id and hash, for audit.

Where the strategy comes from: ``strategy_map`` (a seed's ``task`` field -> strategy,
as Orca 2 assigns strategies per task); a seed whose task the map does not cover is
routed by one structured call (``prompts/orca2_classify.yaml``) that picks a strategy
with a reason. The per-seed classifier is evoforge's extension: the paper assigns
strategies per task by hand.

Rejections: ``empty_answer``, ``truncated`` (the answer hit max tokens) and
``strategy_leak``: a record in which any turn the student sees in training (system,
user or the answer it learns to write) shares a run of 8 words (lowercase ``\\w+``
tokens) with the strategy prompt it was answered under. The property: no strategy text
reaches the student's training data.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.runner import RecordContext, Result
from evoforge.options_training import DEFAULT_STUDENT_SYSTEM
from evoforge.options_training import ORCA2_STRATEGIES as STRATEGIES
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.base import PASS, Check, Verdict
from evoforge.validators.heuristics import empty_answer

LEAK_WORDS = 8
_WORD = re.compile(r"\w+")
STEP = "generator.orca2"


def strategy_template(strategy: str) -> PromptTemplate:
    """The teacher's prompt for ``strategy`` (``prompts/orca2_<strategy>.yaml``)."""
    return builtin_template(f"orca2_{strategy}")


def word_runs(text: str, n: int = LEAK_WORDS) -> set[tuple[str, ...]]:
    """Every run of ``n`` consecutive words of ``text`` (lowercase ``\\w+`` tokens)."""
    words = _WORD.findall(text.lower())
    return {tuple(words[i : i + n]) for i in range(len(words) - n + 1)}


def shared_run(text: str, prompt_runs: set[tuple[str, ...]]) -> str | None:
    """The first run of :data:`LEAK_WORDS` words of ``text`` that is also in ``prompt_runs``."""
    words = _WORD.findall(text.lower())
    for i in range(len(words) - LEAK_WORDS + 1):
        run = tuple(words[i : i + LEAK_WORDS])
        if run in prompt_runs:
            return " ".join(run)
    return None


def teacher_prompt_text(template: PromptTemplate) -> str:
    """The strategy text a teacher prompt adds: its system message(s)."""
    return "\n".join(m["content"] for m in template.messages if m["role"] == "system")


def strategy_leak(record: dict[str, Any], settings: Any = None) -> Verdict:
    """``strategy_leak`` when a turn of a ``chat`` record shares an 8-word run with the
    strategy prompt named in its ``meta.orca2``; records without one pass."""
    info = (record.get("meta") or {}).get("orca2")
    if not isinstance(info, dict) or info.get("strategy") not in STRATEGIES:
        return PASS
    runs = word_runs(teacher_prompt_text(strategy_template(info["strategy"])))
    for index, turn in enumerate(record.get("messages") or []):
        run = shared_run(str(turn.get("content", "")), runs)
        if run is not None:
            return Verdict.failed(
                "strategy_leak",
                f"the {turn.get('role')} turn repeats the {info['strategy']} prompt: {run!r}",
                field=f"$.messages[{index}].content",
            )
    return PASS


STRATEGY_LEAK = Check("strategy_leak", strategy_leak, field="$.messages")


@dataclass
class Orca2Task:
    """One instruction seed in, one ``chat`` record out (or a rejection with a reason).

    ``strategy_map``: task name -> strategy (``"*"`` covers every other task); seeds it
    does not cover go to the classifier. ``student_system``: the system message the
    record keeps in place of the strategy prompt.
    """

    strategy_map: dict[str, str] = field(default_factory=dict)
    student_system: str = DEFAULT_STUDENT_SYSTEM
    allow_truncated: bool = False
    classifier: PromptTemplate | None = None

    def __post_init__(self) -> None:
        if self.classifier is None:
            self.classifier = builtin_template("orca2_classify")

    def templates(self) -> list[PromptTemplate]:
        assert self.classifier is not None
        return [self.classifier, *(strategy_template(s) for s in STRATEGIES)]

    async def choose(self, record: Record, ctx: RecordContext) -> dict[str, Any]:
        task = record.get("task")
        mapped = self.strategy_map.get(str(task)) if task else None
        mapped = mapped or self.strategy_map.get("*")
        if mapped is not None:
            return {"strategy": mapped, "source": "map", "task": task}
        assert self.classifier is not None
        completion = await ctx.ask(
            self.classifier,
            op="orca2_classify",
            instruction=record["instruction"],
            input=record.get("input", ""),
        )
        parsed = completion.parsed or {}
        return {
            "strategy": parsed["strategy"],
            "source": "classifier",
            "reason": str(parsed.get("reason", "")),
            **({"task": task} if task else {}),
        }

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        chosen = await self.choose(record, ctx)
        strategy = chosen["strategy"]
        template = strategy_template(strategy)
        op = f"orca2_{strategy}"
        completion = await ctx.ask(
            template, op=op, instruction=record["instruction"], input=record.get("input", "")
        )
        answer = completion.text.strip()
        user = record["instruction"]
        if record.get("input"):
            user = f"{user}\n\n{record['input']}"
        meta = {
            **record.meta,
            "orca2": {**chosen, **template.ref},
            "finish_reason": completion.finish_reason,
        }
        chat = Record(
            kind="chat",
            fields={
                "messages": [
                    {"role": "system", "content": self.student_system},
                    {"role": "user", "content": user},
                    {"role": "assistant", "content": answer or " "},
                ]
            },
            id=record.id,
            parent_id=record.parent_id,
            lineage=[*record.lineage, ctx.step(op, template)],
            meta=meta,
        )
        verdict = empty_answer(answer)
        if not verdict.ok:
            return Result.reject(
                chat, "empty_answer", verdict.detail, step=STEP, field="$.messages[2].content"
            )
        if completion.finish_reason == "length" and not self.allow_truncated:
            detail = f"answer cut at max_tokens ({len(answer)} chars)"
            return Result.reject(
                chat, "truncated", detail, step=STEP, field="$.messages[2].content"
            )
        rejection = STRATEGY_LEAK.rejection(chat.to_json())
        if rejection is not None:
            rejection.step = "check.strategy_leak"
            rejection.record = chat.to_json()
            return Result(rejections=[rejection])
        return Result.accept(chat)
