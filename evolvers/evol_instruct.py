"""Evol-Instruct: rewrite instructions into harder (in-depth) or new (in-breadth) ones.

Xu et al., 2023, "WizardLM: Empowering Large Language Models to Follow Complex
Instructions", arXiv 2304.12244. Each round, each record gets one operation,
drawn from its own RNG:

- in-depth ("act as a prompt rewriter", 10 to 20 words more): ``constraints``
  (add one constraint or requirement), ``deepen`` (more depth and breadth of
  inquiry), ``concretize`` (specific concepts for general ones), ``reasoning``
  (ask for explicit multiple-step reasoning), ``complicate_input`` (add a table,
  code, JSON or XML the instruction must use; in the paper, not its code);
- in-breadth ("act as a prompt creator"): ``breadth``, a brand-new, rarer
  instruction in the same domain, of similar length and difficulty.

The prompts are ``prompts/evol_<op>.yaml``; the equality judge is
``prompts/evol_equal.yaml``. Each op is an ``InstructionOp`` registered by name
(kind ``evolver``, family ``evol_instruct``), so a plugin's op joins the mix
(``--ops shorten=1``); the model-free elimination rules are the check
``evol_instruct`` (``ELIMINATION``).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator, Mapping, Sequence
from collections.abc import Set as AbstractSet
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evoforge.engine.runner import RecordContext, Rejection
from evoforge.errors import ConfigError, RequestRejected
from evoforge.evolvers.base import OpNames, choose_op, family_op, parse_weights
from evoforge.prompting import PromptTemplate, builtin_template, resolve_template
from evoforge.records import Record
from evoforge.validators.base import PASS, Check, Verdict
from evoforge.validators.critics import EQUAL_JUDGE_PARAMS, ask_equal_judge
from evoforge.validators.heuristics import (
    answer_not_instruction,
    empty_answer,
    language_drift,
    meta_comment,
    prompt_leak,
    refusal,
)

IN_DEPTH_OPS = ("constraints", "deepen", "concretize", "reasoning", "complicate_input")
IN_BREADTH_OPS = ("breadth",)
OPS = OpNames("evol_instruct", IN_DEPTH_OPS + IN_BREADTH_OPS)
# The verdict is "Equal" or "Not Equal": a few tokens, greedy. The judge is the
# rubric critic's binary path (``validators.critics.ask_equal_judge``), shared with
# the RAG critics.
JUDGE_PARAMS = EQUAL_JUDGE_PARAMS


@dataclass(frozen=True)
class InstructionOp:
    """One Evol-Instruct op: its name, its prompt, and whether it deepens the instruction.

    ``template``: a ``PromptTemplate`` or the path of a prompt YAML file (variables
    ``instruction`` and, optionally, ``input``; the reply is the new instruction);
    ``None`` is ``prompts/evol_<name>.yaml``. ``depth="in-breadth"`` ops write a new
    instruction that stands on its own (the record's ``input`` is dropped, and the
    chain DEITA scores starts afresh). ``EvolInstruct`` runs it, with every
    elimination rule, when ``--ops`` names it."""

    name: str
    template: PromptTemplate | str | Path | None = None
    depth: str = "in-depth"
    family: ClassVar[str] = "evol_instruct"

    def __post_init__(self) -> None:
        if self.depth not in ("in-depth", "in-breadth"):
            raise ConfigError(f"op {self.name!r}: depth must be in-depth or in-breadth")

    def prompt(self) -> PromptTemplate:
        return resolve_template(self.template, f"evol_{self.name}")


CONSTRAINTS = InstructionOp("constraints")
DEEPEN = InstructionOp("deepen")
CONCRETIZE = InstructionOp("concretize")
REASONING = InstructionOp("reasoning")
COMPLICATE_INPUT = InstructionOp("complicate_input")
BREADTH = InstructionOp("breadth", depth="in-breadth")


@dataclass
class EvolInstruct:
    """One Evol-Instruct evolution of an ``instruction`` record (an Evolver).

    Input: a record with ``instruction`` and an optional ``input``. Output: the
    evolved record ``<id>/r<round>`` (``parent_id`` = the input's id) with the new
    ``instruction``, lineage step ``evolve_<op>`` (and ``answer`` when
    ``answers``), ``meta["evol"] = {"op", "round", "depth"}`` and, for in-depth
    ops, ``meta["instruction_chain"]``: the earlier instructions, oldest first,
    which DEITA's scorer rank-scores with this one (``breadth`` starts afresh); or a
    ``Rejection`` of that would-be record. ``input`` is kept by the in-depth ops
    and dropped by ``breadth``, whose new instruction stands on its own. A stale
    ``output`` is dropped (an old answer does not fit a new instruction) unless
    ``answers`` writes a new one.

    Elimination (the paper's four rules, checked in this order), reason codes:

    - ``empty_instruction``: the model returned nothing;
    - ``prompt_leak`` (rule 4): the instruction copies words of the evolving
      prompt ("#Rewritten Prompt#", "given prompt", ...);
    - ``answer_not_instruction`` / ``meta_comment``: a weak model's "evolution" that
      is an answer ("Here's a solution: ...") or a comment on the task ("This task
      requires ..."), not an instruction (``validators.heuristics``);
    - ``language_drift``: the instruction left the seed's script (a Chinese seed
      must evolve into Chinese);
    - ``no_information_gain`` (rule 1): old and new are the same text (case and
      whitespace aside; no model call), or the judge (``prompts/evol_equal.yaml``,
      op ``evolve_judge``) answers "Equal". A judge reply that is neither counts
      as not equal and is kept in ``meta["judge"]`` as ``"unparsed: ..."``. The
      judge's reply on a candidate it keeps is ``meta["evol"]["judge"]``;
    - with ``answers``, on the answer (``prompts/answer.yaml``): ``refusal``
      (rule 2: "sorry" or another refusal phrase in fewer than 80 words),
      ``empty_answer`` (rule 3: only punctuation and stop words) and
      ``language_drift`` (the answer is not in the instruction's script).

    A failed request (``RequestRejected``) is a rejection with its own reason, so
    one round's failure never loses the rounds before it. ``EvolutionRounds``
    runs the paper's loop: M = 4 rounds by default, and a rejected evolution
    keeps the previous version for the next round.

    Defaults kept from the paper: ops chosen uniformly (``weights`` changes the
    mix, e.g. ``{"constraints": 2, "breadth": 1}``; unnamed ops get 0), the LLM
    equality judge on (``judge=False`` keeps only the exact-equality check), and
    the 80-word refusal rule. ``templates`` overrides the prompt of any op
    (variables ``instruction`` and, optionally, ``input``). ``answers`` is False
    here, for callers that answer later; ``evoforge evolve`` and
    :class:`~evoforge.options.EvolveOptions` answer by default (``--no-answers`` opts
    out), as the paper's rules 2 and 3 need answers.
    """

    weights: dict[str, float] | None = None
    answers: bool = False
    judge: bool = True
    templates: dict[str, PromptTemplate] | None = None
    judge_template: PromptTemplate | None = None
    answer_template: PromptTemplate | None = None
    name: str = field(default="evol_instruct", init=False)
    _ops: dict[str, PromptTemplate] = field(default_factory=dict, init=False, repr=False)
    _breadth: frozenset[str] = field(default=frozenset(IN_BREADTH_OPS), init=False, repr=False)

    def __post_init__(self) -> None:
        self.weights = resolve_weights(self.weights, OPS)
        plugins = {n: family_op(OPS.family, n) for n in self.weights if n not in OPS}
        self._ops = resolve_templates(self.templates, OPS, prefix="evol_", plugins=plugins)
        self._breadth = frozenset(IN_BREADTH_OPS) | {
            n for n, op in plugins.items() if op.depth == "in-breadth"
        }
        for op, template in self._ops.items():
            check_variables(template, f"op {op!r}", required={"instruction"}, allowed={"input"})
        self.judge_template = self.judge_template or builtin_template("evol_equal")
        check_variables(self.judge_template, "judge_template", required={"first", "second"})
        self.answer_template = self.answer_template or builtin_template("answer")
        check_variables(
            self.answer_template, "answer_template", required={"instruction"}, allowed={"input"}
        )

    async def evolve(self, record: Record, ctx: RecordContext, round_: int) -> Record | Rejection:
        assert self.weights is not None
        op = choose_op(ctx.rng(round_), self.weights)
        try:
            return await self._evolve(record, ctx, round_, op)
        except RequestRejected as exc:
            return Rejection(
                f"{record.id}/r{round_}",
                exc.reason,
                f"{exc} (round {round_}, op {op})",
                record.to_json(),
                step=f"evolver.{op}",
            )

    async def _evolve(
        self, record: Record, ctx: RecordContext, round_: int, op: str
    ) -> Record | Rejection:
        template = self._ops[op]
        old = record["instruction"]
        source_input = record.get("input") or ""
        completion = await ctx.ask(
            template,
            op=f"evolve_{op}",
            round_=round_,
            **only_declared(template, instruction=old, input=source_input),
        )
        new = clean_reply(completion.text)
        breadth = op in self._breadth
        child_input = "" if breadth else source_input
        candidate = record.derive(
            ctx.step(f"evolve_{op}", template, round_), suffix=f"r{round_}", instruction=new
        )
        candidate.fields.pop("output", None)
        if breadth:
            candidate.fields.pop("input", None)
        candidate.meta.pop("judge", None)  # the parent's verdict is not this one's
        candidate.meta["evol"] = {
            "op": op,
            "round": round_,
            "depth": "in-breadth" if breadth else "in-depth",
        }
        # DEITA rank-scores an in-depth chain; a breadth instruction starts a new one,
        # and earlier responses answered another instruction.
        candidate.meta.pop("response_chain", None)
        if breadth:
            candidate.meta.pop("instruction_chain", None)
        else:
            keep_earlier(candidate, "instruction_chain", old)

        def reject(reason: str, detail: str, where: str = "$.instruction") -> Rejection:
            return Rejection(
                candidate.id,
                reason,
                f"{detail} (round {round_}, op {op})",
                candidate.to_json(),
                step=f"evolver.{op}",
                field=where,
            )

        if not new:
            return reject("empty_instruction", "the model returned an empty instruction")
        for verdict in instruction_rules(old, new):
            if not verdict.ok:
                return reject(verdict.reason or "invalid", verdict.detail)
        if self.judge:
            assert self.judge_template is not None
            equal, said = await ask_equal_judge(
                ctx, self.judge_template, op="evolve_judge", round_=round_, first=old, second=new
            )
            if equal:
                return reject(
                    "no_information_gain", f"the judge found both instructions equal: {said[:80]!r}"
                )
            if equal is None:
                candidate.meta["judge"] = f"unparsed: {said[:200]}"
            candidate.meta["evol"]["judge"] = said[:200]  # its reply, for the report
        if self.answers:
            assert self.answer_template is not None
            answered = await ctx.ask(
                self.answer_template,
                op="answer",
                round_=round_,
                **only_declared(self.answer_template, instruction=new, input=child_input),
            )
            answer = answered.text.strip()
            candidate.fields["output"] = answer
            candidate.lineage.append(ctx.step("answer", self.answer_template, round_))
            for verdict in answer_rules(new, answer):
                if not verdict.ok:
                    return reject(verdict.reason or "invalid", verdict.detail, "$.output")
        return candidate


def instruction_rules(old: str, new: str) -> Iterator[Verdict]:
    """Rule 4 (``prompt_leak``), ``language_drift`` and the exact half of rule 1
    (``no_information_gain``), in the order a rejection reports them."""
    yield prompt_leak(new)
    yield answer_not_instruction(new)  # a weak model's answer or comment (issue 14)
    yield meta_comment(new)
    yield language_drift(old, new)
    if same_text(old, new):
        yield Verdict.failed("no_information_gain", "the evolved instruction is the original one")


def answer_rules(instruction: str, answer: str) -> Iterator[Verdict]:
    """Rules 2 and 3 (``refusal``, ``empty_answer``) and ``language_drift`` on the answer."""
    yield refusal(answer)
    yield empty_answer(answer)
    yield language_drift(instruction, answer)


def _eliminated(record: dict[str, Any], settings: Any = None) -> Verdict:
    """Evol-Instruct's elimination rules that need no model, on a written record: the
    instruction against the one it evolved from (the last of ``meta.instruction_chain``,
    when there is one), then the ``output``, when there is one."""
    new = str(record.get("instruction") or "").strip()
    if not new:
        return Verdict.failed(
            "empty_instruction", "the instruction is empty", field="$.instruction"
        )
    chain = (record.get("meta") or {}).get("instruction_chain")
    old = chain[-1] if isinstance(chain, list) and chain else None
    rules = (
        instruction_rules(old, new)
        if isinstance(old, str)
        else iter([prompt_leak(new), answer_not_instruction(new), meta_comment(new)])
    )
    for verdict in rules:
        if not verdict.ok:
            return Verdict.failed(
                verdict.reason or "invalid", verdict.detail, field="$.instruction"
            )
    answer = record.get("output")
    if isinstance(answer, str):
        for verdict in answer_rules(new, answer):
            if not verdict.ok:
                return Verdict.failed(verdict.reason or "invalid", verdict.detail, field="$.output")
    return PASS


ELIMINATION = Check("evol_instruct", _eliminated)


# Shared with Evol-Quality.

_QUOTES = {'"': '"', "'": "'", "\u201c": "\u201d", "\u2018": "\u2019", "\u300c": "\u300d"}


def clean_reply(text: str) -> str:
    """The reply without surrounding whitespace and one pair of surrounding quotes.

    Labels such as "#Rewritten Prompt#:" are kept: leaking them is what the
    ``prompt_leak`` rule catches.
    """
    text = text.strip()
    if len(text) >= 2 and _QUOTES.get(text[0]) == text[-1]:
        inner = text[1:-1]
        if text[0] not in inner and text[-1] not in inner:  # '"a" and "b"' is not quoted
            return inner.strip()
    return text


def keep_earlier(candidate: Record, key: str, earlier: str) -> None:
    """Append the version ``candidate`` evolved from to its ``meta[key]`` chain (oldest
    first), so DEITA can rank-score the whole chain in one prompt."""
    chain = candidate.meta.get(key)
    candidate.meta[key] = [*(chain if isinstance(chain, list) else []), earlier]


def same_text(first: str, second: str) -> bool:
    """Equal once case and whitespace are normalised."""
    return " ".join(first.casefold().split()) == " ".join(second.casefold().split())


def resolve_weights(
    weights: Mapping[str, float] | None, names: Sequence[str], *, flag: str = "weights"
) -> dict[str, float]:
    """Weights for every op in ``names``, checked by ``parse_weights`` (hints included)."""
    if weights is None:
        return parse_weights(None, names, flag=flag)
    if not isinstance(weights, Mapping) or not weights:
        raise ConfigError(f"{flag}: give a mapping of op to weight, e.g. {{{names[0]!r}: 1}}")
    parts = []
    for name, weight in weights.items():
        if not isinstance(name, str) or "," in name or "=" in name:
            raise ConfigError(f"{flag}: unknown op {name!r}; ops: {', '.join(names)}")
        if isinstance(weight, bool) or not isinstance(weight, (int, float)):
            raise ConfigError(f"{flag}: {name!r}: the weight must be a number, got {weight!r}")
        parts.append(f"{name}={float(weight)!r}")
    return parse_weights(",".join(parts), names, flag=flag)


def resolve_templates(
    overrides: Mapping[str, PromptTemplate] | None,
    names: Iterable[str],
    *,
    prefix: str,
    plugins: Mapping[str, Any] | None = None,
) -> dict[str, PromptTemplate]:
    """The template of each op: the override where given, else ``prompts/<prefix><op>``;
    for a plugin's op (``plugins``: name -> op), the op's own ``prompt()``."""
    plugins = dict(plugins or {})
    names = [*names, *plugins]
    overrides = dict(overrides or {})
    unknown = sorted(set(overrides) - set(names))
    if unknown:
        import difflib

        hint = difflib.get_close_matches(unknown[0], names, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(
            f"templates: unknown op {unknown[0]!r}{suggestion}; ops: {', '.join(names)}"
        )
    return {
        name: overrides.get(name)
        or (plugins[name].prompt() if name in plugins else builtin_template(f"{prefix}{name}"))
        for name in names
    }


def check_variables(
    template: PromptTemplate,
    what: str,
    *,
    required: AbstractSet[str],
    allowed: AbstractSet[str] = frozenset(),
) -> None:
    """A template must use the ``required`` variables and nothing beyond ``allowed``."""
    declared = set(template.variables)
    missing, extra = required - declared, declared - required - allowed
    if missing or extra:
        raise ConfigError(
            f"{what}: template {template.id} ({template.source}) must use the variables "
            f"{sorted(required)}"
            + (f" and may use {sorted(allowed)}" if allowed else "")
            + f"; it declares {sorted(declared)}"
        )


def only_declared(template: PromptTemplate, **values: Any) -> dict[str, Any]:
    """The values a template declares (an override may leave ``input`` out)."""
    return {name: value for name, value in values.items() if name in template.variables}
