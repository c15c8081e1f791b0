"""Instruction Mining's UniEval indicators from an LLM judge (Cao et al., 2023, arXiv
2307.06290 took naturalness, coherence and understandability from UniEval).

:class:`MiningJudge` asks the run's ``--llm`` one question per record (op
``mining_judge``, prompt ``prompts/mining_judge.yaml``) through the engine (cache,
retries, journal) and writes ``meta.judge = {naturalness, coherence,
understandability}`` (each 1-5), which :class:`~.mining.MiningScorer` reads.
Rejections: ``missing_response``, ``unparseable_rating``.
"""

from __future__ import annotations

import dataclasses
import json
import re
from typing import Any

from evoforge.engine.runner import RecordContext, Result
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.select.ifd import last_pair
from evoforge.validators.select.mining import JUDGE_INDICATORS

__all__ = ["MiningJudge", "parse_judge_reply"]

_NUMBER = re.compile(r"(naturalness|coherence|understandability)\D{0,20}?([1-5])", re.I)


def parse_judge_reply(text: str) -> dict[str, int] | None:
    """The three 1-5 ratings from a JSON reply, or from ``name: n`` text; else None."""
    found: dict[str, int] = {}
    try:
        data = json.loads(text)
    except ValueError:
        data = None
    if isinstance(data, dict):
        for name in JUDGE_INDICATORS:
            value = data.get(name)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found[name] = int(round(min(5, max(1, value))))
    if len(found) < len(JUDGE_INDICATORS):
        for name, value in _NUMBER.findall(text):
            found.setdefault(name.lower(), int(value))
    return found if len(found) == len(JUDGE_INDICATORS) else None


class MiningJudge:
    """An engine task: one judge call per record, ratings into ``meta.judge``."""

    def __init__(self, *, template: PromptTemplate | None = None) -> None:
        self.template = template or builtin_template("mining_judge")
        self.params: dict[str, Any] = {"temperature": 0.0, "max_tokens": 64}

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        instruction, response = last_pair(record)
        if not response.strip():
            return Result.reject(record, "missing_response", "the response is empty")
        reply = await ctx.ask(
            self.template,
            op="mining_judge",
            params=self.params,
            schema=self.template.output_schema,
            validate=False,
            instruction=instruction,
            response=response,
        )
        ratings = parse_judge_reply(reply.text)
        if ratings is None:
            first = (reply.text or "").strip().splitlines()[:1]
            return Result.reject(record, "unparseable_rating",
                                 f"mining judge: no three 1-5 ratings in {first!r}")  # fmt: skip
        meta = {**record.meta, "judge": ratings}
        return Result.accept(dataclasses.replace(record, meta=meta))
