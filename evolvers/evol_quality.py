"""Evol-Quality: rewrite a record's answer into a better one.

Liu et al., 2024, "What Makes Good Data for Alignment? A Comprehensive Study of
Automatic Data Selection in Instruction Tuning" (DEITA), ICLR 2024, arXiv
2312.15685. Each round, one of five rewrites of the response, each adding only
10 to 20 words: more ``helpfulness``, more ``relevance`` to the prompt, more
``depth``, more ``creativity``, more ``details``. The prompts are
``prompts/evol_quality_<op>.yaml``. Each op is a ``QualityOp`` registered by
name (kind ``evolver``, family ``evol_quality``), so a plugin's op joins the mix
(``--quality-ops``); the model-free rules are the check ``evol_quality``
(``ELIMINATION``).
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evoforge.engine.runner import RecordContext, Rejection
from evoforge.errors import RequestRejected
from evoforge.evolvers.base import OpNames, choose_op, family_op
from evoforge.evolvers.evol_instruct import (
    ask_equal_judge,
    check_variables,
    clean_reply,
    keep_earlier,
    only_declared,
    resolve_templates,
    resolve_weights,
    same_text,
)
from evoforge.prompting import PromptTemplate, builtin_template, resolve_template
from evoforge.records import Record
from evoforge.validators.base import PASS, Check, Verdict
from evoforge.validators.heuristics import empty_answer, language_drift, prompt_leak, refusal

QUALITY_OPS = OpNames(
    "evol_quality", ("helpfulness", "relevance", "depth", "creativity", "details")
)

# Evol-Quality draws its op from ctx.rng(round_ + OP_STREAM): a stream of its own, so
# chaining it after Evol-Instruct (same record, same round numbers) does not tie the
# quality op to the instruction op.
OP_STREAM = 1000


@dataclass(frozen=True)
class QualityOp:
    """One Evol-Quality op: its name and its prompt (a ``PromptTemplate`` or a YAML path;
    variables ``instruction``, ``response`` and, optionally, ``input``; the reply is the
    new response). ``None`` is ``prompts/evol_quality_<name>.yaml``."""

    name: str
    template: PromptTemplate | str | Path | None = None
    family: ClassVar[str] = "evol_quality"

    def prompt(self) -> PromptTemplate:
        return resolve_template(self.template, f"evol_quality_{self.name}")


HELPFULNESS = QualityOp("helpfulness")
RELEVANCE = QualityOp("relevance")
DEPTH = QualityOp("depth")
CREATIVITY = QualityOp("creativity")
DETAILS = QualityOp("details")


@dataclass
class EvolQuality:
    """One Evol-Quality rewrite of an answered ``instruction`` record (an Evolver).

    Input: a record with a non-empty ``output`` (and its ``instruction``, optional
    ``input``). Output: the record ``<id>/q<round>`` with the new ``output``, the
    ``instruction`` and ``input`` unchanged, lineage step ``quality_<op>`` and
    ``meta["evol_quality"] = {"op", "round"}`` and ``meta["response_chain"]`` (the
    earlier responses, oldest first, for DEITA's rank-scoring); or a ``Rejection``.

    Reason codes, checked in this order (Evol-Instruct's elimination rules,
    applied to the response):

    - ``no_answer``: the record has no ``output`` to rewrite (no model call);
    - ``empty_answer``: the new response is only punctuation and stop words;
    - ``prompt_leak``: it copies words of the rewriting prompt ("#Rewritten
      Response#", "given response", ...);
    - ``refusal``: "sorry" or another refusal phrase in fewer than 80 words;
    - ``language_drift``: it left the old response's script;
    - ``no_information_gain``: it is the old response (case and whitespace
      aside), or, with ``judge=True``, the judge answers "Equal".

    Defaults: ops chosen uniformly (``weights`` changes the mix), and no LLM
    equality judge, as in DEITA. With ``judge=True`` the judge is
    ``prompts/evol_equal.yaml`` (written for prompts; it gets the two responses)
    unless ``judge_template`` is given; its reply on a rewrite it keeps is
    ``meta["evol_quality"]["judge"]``. ``templates`` overrides the prompt of any
    op (variables ``instruction``, ``response`` and, optionally, ``input``).
    """

    weights: dict[str, float] | None = None
    judge: bool = False
    templates: dict[str, PromptTemplate] | None = None
    judge_template: PromptTemplate | None = None
    name: str = field(default="evol_quality", init=False)
    _ops: dict[str, PromptTemplate] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        self.weights = resolve_weights(self.weights, QUALITY_OPS)
        plugins = {
            n: family_op(QUALITY_OPS.family, n) for n in self.weights if n not in QUALITY_OPS
        }
        self._ops = resolve_templates(
            self.templates, QUALITY_OPS, prefix="evol_quality_", plugins=plugins
        )
        for op, template in self._ops.items():
            check_variables(
                template, f"op {op!r}", required={"instruction", "response"}, allowed={"input"}
            )
        self.judge_template = self.judge_template or builtin_template("evol_equal")
        check_variables(self.judge_template, "judge_template", required={"first", "second"})

    async def evolve(self, record: Record, ctx: RecordContext, round_: int) -> Record | Rejection:
        assert self.weights is not None
        op = choose_op(ctx.rng(round_ + OP_STREAM), self.weights)
        old = record.get("output")
        if not isinstance(old, str) or not old.strip():
            return Rejection(
                f"{record.id}/q{round_}",
                "no_answer",
                f"the record has no output to rewrite (round {round_}, op {op})",
                record.to_json(),
                step=f"evolver.{op}",
                field="$.output",
            )
        try:
            return await self._evolve(record, ctx, round_, op, old)
        except RequestRejected as exc:
            return Rejection(
                f"{record.id}/q{round_}",
                exc.reason,
                f"{exc} (round {round_}, op {op})",
                record.to_json(),
                step=f"evolver.{op}",
            )

    async def _evolve(
        self, record: Record, ctx: RecordContext, round_: int, op: str, old: str
    ) -> Record | Rejection:
        template = self._ops[op]
        completion = await ctx.ask(
            template,
            op=f"quality_{op}",
            round_=round_,
            **only_declared(
                template,
                instruction=record["instruction"],
                input=record.get("input") or "",
                response=old,
            ),
        )
        new = clean_reply(completion.text)
        candidate = record.derive(
            ctx.step(f"quality_{op}", template, round_), suffix=f"q{round_}", output=new
        )
        candidate.meta.pop("judge", None)  # the parent's verdict is not this one's
        candidate.meta["evol_quality"] = {"op": op, "round": round_}
        keep_earlier(candidate, "response_chain", old)  # DEITA rank-scores the chain

        def reject(reason: str, detail: str) -> Rejection:
            return Rejection(
                candidate.id,
                reason,
                f"{detail} (round {round_}, op {op})",
                candidate.to_json(),
                step=f"evolver.{op}",
                field="$.output",
            )

        for verdict in response_rules(old, new):
            if not verdict.ok:
                return reject(verdict.reason or "invalid", verdict.detail)
        if self.judge:
            assert self.judge_template is not None
            equal, said = await ask_equal_judge(
                ctx, self.judge_template, op="quality_judge", round_=round_, first=old, second=new
            )
            if equal:
                return reject(
                    "no_information_gain", f"the judge found both responses equal: {said[:80]!r}"
                )
            if equal is None:
                candidate.meta["judge"] = f"unparsed: {said[:200]}"
            candidate.meta["evol_quality"]["judge"] = said[:200]  # its reply, for the report
        return candidate


def response_rules(old: str | None, new: str) -> Iterator[Verdict]:
    """Evol-Instruct's elimination rules on a rewritten response, in the order a rejection
    reports them; ``old`` ``None`` (not known) skips the two that compare with it."""
    yield empty_answer(new)
    yield prompt_leak(new)
    yield refusal(new)
    if old is None:
        return
    yield language_drift(old, new)
    if same_text(old, new):
        yield Verdict.failed("no_information_gain", "the rewritten response is the original one")


def _eliminated(record: dict[str, Any], settings: Any = None) -> Verdict:
    """The rules on a written record: its ``output`` against the response it was rewritten
    from (the last of ``meta.response_chain``, when there is one)."""
    new = record.get("output")
    if not isinstance(new, str) or not new.strip():
        return Verdict.failed("no_answer", "the record has no output", field="$.output")
    chain = (record.get("meta") or {}).get("response_chain")
    old = chain[-1] if isinstance(chain, list) and chain and isinstance(chain[-1], str) else None
    for verdict in response_rules(old, new):
        if not verdict.ok:
            return Verdict.failed(verdict.reason or "invalid", verdict.detail, field="$.output")
    return PASS


ELIMINATION = Check("evol_quality", _eliminated)
