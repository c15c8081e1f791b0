"""Ragas-style question rewrites for QA and RAG evaluation samples.

The test-set evolutions of Ragas v0.1 (``testset/prompts.py``; deepeval's
Synthesizer has the same family). Each op rewrites a sample's question with its
own prompt, ``prompts/rewrite_{op}.yaml``, and the model writes the new answer:

- ``reasoning``: answering needs several inference steps over the same context;
- ``multi_context``: answering needs context 1 and context 2 together (the
  record's second context, or one the caller supplies);
- ``conditional``: a condition or scenario changes or complicates what is asked;
- ``conversational``: a two-turn exchange on sub-aspects (user asks, assistant
  answers briefly, user follows up); the reply names its parts
  (``first_question``, ``assistant_reply``, ``follow_up``: an object whose
  properties are all required, ``additionalProperties: false``), so any model that
  follows the schema writes the turns in order; the question becomes the list of
  ``{role, content}`` turns user, assistant, user, and the answer answers the
  follow-up;
- ``compress``: shorter and more indirect, same intent, same answer.

Ragas v0.1 (``ComplexEvolution``) compresses every reasoning, multi_context and
conditional question (``COMPRESSED_OPS``) and runs its evolution filter on the seed
versus the compressed question: :func:`compress_question` is that step (``evoforge
rag`` and ``RewriteMix``, so ``evoforge evolve --kind qa|rag``, run it unless
``--no-compress``; in ``rag`` the critics' ``InformationGain`` is the evolution
filter, and the step's own rules compare with the seed in both).

Every new question must be answerable from its contexts alone, in the seed's
language, without "based on the context" phrasing.

Word limits (``DEFAULT_MAX_WORDS``): Ragas v0.1 keeps reasoning questions to
15 words and conditional ones to 25; multi_context 25, conversational 25 (per
user turn) and compress 15 are our defaults. All are configurable. Words are
counted by ``heuristics.word_count`` (a CJK character is a word).

Reason codes of the rejections (each carries the candidate record):
``no_context``, ``no_second_context`` (before any call), ``bad_turns``
(turns that do not alternate user/assistant and end with the user: only from a
plugin template that still answers with a ``turns`` list, or a written record
under ``validate``; the built-in prompt cannot produce them),
``no_information_gain`` (same question up to case, spacing and punctuation),
``empty_answer`` (no word in it), ``context_reference``, ``prompt_leak``,
``language_drift``, ``too_long``; ``over_plan`` from ``RewriteMix`` for a seed
past the requested count; the engine adds
``invalid_json`` and ``schema_mismatch`` for unusable replies.

Each op is a ``RewriteOp`` registered as ``rewrite_<op>`` (kind ``evolver``,
family ``rewrite``; Evol-Instruct has a ``reasoning`` op too), so a plugin's
rewrite joins ``--mix`` here and in ``evoforge rag`` (a new scenario); the
model-free rules are the check ``rewrite`` (``ELIMINATION``).

Weaknesses of other tools this avoids: rows that fail a rewrite are not
silently dropped (every rejection is written with its reason), and a mix over
N samples gives exact largest-remainder counts summing to N (not ``ceil`` per
op, which asks for more samples than requested).
"""

from __future__ import annotations

import difflib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

from evoforge.engine.runner import RecordContext, Rejection, Result
from evoforge.errors import ConfigError
from evoforge.evolvers.base import MixPlan, OpNames, family_op, family_ops, parse_weights
from evoforge.prompting import PromptTemplate, builtin_template, resolve_template
from evoforge.records import SAMPLE_FIELDS, Record, SampleFields, sample_fields
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Check, Verdict

REWRITE_OPS = OpNames(
    "rewrite", ("reasoning", "multi_context", "conditional", "conversational", "compress")
)

# Ragas v0.1: reasoning <= 15 words, conditional <= 25; the rest are our defaults.
DEFAULT_MAX_WORDS = {
    "reasoning": 15,
    "multi_context": 25,
    "conditional": 25,
    "conversational": 25,
    "compress": 15,
}

# Ragas v0.1's ComplexEvolution: these questions are compressed after the rewrite.
COMPRESSED_OPS = ("reasoning", "multi_context", "conditional")
# The named parts of a conversational reply, in the order of the turns they become.
CONVERSATION_PARTS = (("first_question", "user"), ("assistant_reply", "assistant"),
                      ("follow_up", "user"))  # fmt: skip

SecondContext = Callable[[Record], str | None]
Question = str | list[dict[str, str]]


@dataclass(frozen=True)
class RewriteOp:
    """One question rewrite: its name, its word limit and its prompt.

    ``template``: a ``PromptTemplate`` or the path of a prompt YAML file (variables
    ``question``, ``answer``, ``context``, ``max_words`` and, for two contexts,
    ``second_context``; an ``output_schema`` of ``{"question", "answer"}``,
    ``{"first_question", "assistant_reply", "follow_up", "answer"}`` or, read as
    before, ``{"turns", "answer"}``); ``None`` is ``prompts/rewrite_<name>.yaml``. A plugin
    registers it under its ``name``; ``--mix NAME=w`` then plans it, in ``evolve``
    for qa/rag seeds and as a scenario of ``evoforge rag``."""

    name: str
    max_words: int
    template: PromptTemplate | str | Path | None = None
    family: ClassVar[str] = "rewrite"

    def prompt(self) -> PromptTemplate:
        return resolve_template(self.template, f"rewrite_{self.name}")


REASONING = RewriteOp("reasoning", DEFAULT_MAX_WORDS["reasoning"])
MULTI_CONTEXT = RewriteOp("multi_context", DEFAULT_MAX_WORDS["multi_context"])
CONDITIONAL = RewriteOp("conditional", DEFAULT_MAX_WORDS["conditional"])
CONVERSATIONAL = RewriteOp("conversational", DEFAULT_MAX_WORDS["conversational"])
COMPRESS = RewriteOp("compress", DEFAULT_MAX_WORDS["compress"])


def _fields_of(record: Record) -> SampleFields:
    return sample_fields(record.kind, who="question rewrites")


def _check_op(op: str, flag: str = "op") -> None:
    if op not in REWRITE_OPS and family_op(REWRITE_OPS.family, op) is None:
        known = [*REWRITE_OPS, *family_ops(REWRITE_OPS.family)]
        hint = difflib.get_close_matches(op, known, n=1)
        suggestion = f" (did you mean {hint[0]!r}?)" if hint else ""
        raise ConfigError(f"{flag}: unknown rewrite op {op!r}{suggestion}; ops: {', '.join(known)}")


def rewrite_template(op: str) -> PromptTemplate:
    """The prompt of rewrite ``op``: ``prompts/rewrite_<op>.yaml``, or a plugin op's own."""
    _check_op(op)
    plugin = None if op in REWRITE_OPS else family_op(REWRITE_OPS.family, op)
    return plugin.prompt() if plugin else builtin_template(f"rewrite_{op}")


def rewrite_prompt_hashes(ops: Iterable[str]) -> dict[str, str]:
    """``{prompt id: content hash}`` of each op's prompt, for a manifest."""
    return {t.id: t.content_hash for t in map(rewrite_template, ops)}


def record_second_context(record: Record) -> str | None:
    """The default second context of ``multi_context``: the record's own second one."""
    contexts = record.get(_fields_of(record).contexts) or []
    return contexts[1] if len(contexts) >= 2 else None


def _as_prompt_text(question: Question) -> str:
    """A question for the prompt; turns keep their roles."""
    if isinstance(question, str):
        return question
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in question)


def _as_text(question: Question) -> str:
    if isinstance(question, str):
        return question
    return "\n".join(turn["content"] for turn in question)


def _user_texts(question: Question) -> list[str]:
    if isinstance(question, str):
        return [question]
    return [turn["content"] for turn in question if turn["role"] == "user"]


def _read_reply(reply: dict[str, Any]) -> tuple[Question, str]:
    """(question or turns, answer) from a reply that passed the template's schema: a
    question, the named parts of a conversation, or (a plugin's template) turns."""
    answer = str(reply.get("answer", "")).strip()
    if all(part in reply for part, _ in CONVERSATION_PARTS):
        turns = [
            {"role": role, "content": str(reply[part]).strip()} for part, role in CONVERSATION_PARTS
        ]
        return turns, answer
    if "turns" in reply:
        turns = [{"role": t["role"], "content": t["content"].strip()} for t in reply["turns"]]
        return turns, answer
    return str(reply["question"]).strip(), answer


def _turn_order(question: Question) -> Verdict:
    """Turns alternate user/assistant, starting and ending with the user."""
    if isinstance(question, str):
        return PASS
    roles = [turn["role"] for turn in question]
    expected = ["user" if i % 2 == 0 else "assistant" for i in range(len(roles))]
    if roles == expected and roles[-1] == "user":
        return PASS
    return Verdict.failed(
        "bad_turns", f"roles {roles}: they must alternate user/assistant and end with the user"
    )


def _information_gain(old: str, new: str) -> Verdict:
    if [w.lower() for w in heuristics.words(old)] != [w.lower() for w in heuristics.words(new)]:
        return PASS
    return Verdict.failed("no_information_gain", f"the rewrite repeats the question: {new[:80]!r}")


def _answer_present(answer: str) -> Verdict:
    if heuristics.words(answer):
        return PASS
    return Verdict.failed("empty_answer", f"the answer has no words: {answer[:80]!r}")


@dataclass
class QuestionRewrite:
    """One Ragas-style rewrite op on ``qa`` and ``rag`` records (an ``Evolver``).

    Input: a record with a question (a string or turns), an answer and contexts.
    Output: a child record (id ``{parent}/{op}``) with the new question, the
    model's answer, the contexts the rewrite used, ``meta.rewrite = {op,
    max_words}`` and, for ``rag``, ``synthesizer_name = op``; or a
    ``Rejection`` carrying a reason code (see the module docstring).

    ``max_words`` defaults to ``DEFAULT_MAX_WORDS[op]`` (per user turn for
    conversational). ``second_context`` gives ``multi_context`` its second
    context (default: the record's second context, when it has two or more).
    ``template`` replaces the built-in ``rewrite_{op}`` prompt.
    """

    name: ClassVar[str] = "rewrite"

    op: str
    max_words: int | None = None
    second_context: SecondContext | None = None
    template: PromptTemplate | None = None

    def __post_init__(self) -> None:
        _check_op(self.op)
        plugin = None if self.op in REWRITE_OPS else family_op(REWRITE_OPS.family, self.op)
        if self.max_words is None:
            self.max_words = plugin.max_words if plugin else DEFAULT_MAX_WORDS[self.op]
        if self.max_words < 1:
            raise ConfigError(f"{self.op}: max_words must be 1 or more, got {self.max_words}")
        if self.template is None:
            self.template = rewrite_template(self.op)
        if self.template.output_schema is None:
            raise ConfigError(
                f"{self.template.source}: a rewrite template needs an output_schema "
                '({"question", "answer"} or {"first_question", "assistant_reply", '
                '"follow_up", "answer"})'
            )

    async def evolve(
        self, record: Record, ctx: RecordContext, round_: int, *, baseline: Question | None = None
    ) -> Record | Rejection:
        """The rewrite of ``record``'s question, or a rejection. The rules that compare
        with the question before the rewrite (information gain, language drift) compare
        with ``baseline`` when it is given (the seed, for :func:`compress_question`)."""
        template = self.template
        assert template is not None and self.max_words is not None
        fields = _fields_of(record)
        contexts = list(record.get(fields.contexts) or [])
        if not any(text.strip() for text in contexts):
            detail = f"field {fields.contexts!r} holds no context"
            return Rejection(
                record.id, "no_context", detail, record.to_json(), step=self.step,
                field=f"$.{fields.contexts}",
            )  # fmt: skip
        if self.op == "multi_context":
            second = (self.second_context or record_second_context)(record)
            if not second or not second.strip():
                detail = (
                    "second_context gave no context for this record"
                    if self.second_context
                    else f"multi_context needs two contexts in {fields.contexts!r}, "
                    f"the record has {len(contexts)}; or supply second_context"
                )
                return Rejection(
                    record.id, "no_second_context", detail, record.to_json(), step=self.step,
                    field=f"$.{fields.contexts}",
                )  # fmt: skip
            values = {"context": contexts[0], "second_context": second}
            used = [contexts[0], second]
        else:
            values = {"context": "\n\n".join(contexts)}
            used = contexts

        op_name = f"rewrite_{self.op}"
        original = record[fields.question]
        completion = await ctx.ask(
            template,
            op=op_name,
            round_=round_,
            question=_as_prompt_text(original),
            answer=record.get(fields.answer, ""),
            max_words=self.max_words,
            **values,
        )
        question, answer = _read_reply(completion.parsed)

        changes: dict[str, Any] = {
            fields.question: question,
            fields.answer: answer,
            fields.contexts: used,
        }
        if fields.synthesizer:
            changes[fields.synthesizer] = self.op
        candidate = record.derive(ctx.step(op_name, template, round_), suffix=self.op, **changes)
        candidate.meta["rewrite"] = {"op": self.op, "max_words": self.max_words}
        self._keep_context_ids(candidate, fields)

        compared = _as_text(original if baseline is None else baseline)
        failed = next((v for v in self._verdicts(compared, question, answer) if not v.ok), None)
        if failed is not None:
            where = fields.answer if failed.reason == "empty_answer" else fields.question
            return Rejection(
                candidate.id, str(failed.reason), failed.detail, candidate.to_json(),
                step=self.step, field=f"$.{where}",
            )  # fmt: skip
        return candidate

    @property
    def step(self) -> str:
        """``evolver.<registered name>``: built-in rewrites are ``rewrite_<op>``."""
        return f"evolver.rewrite_{self.op}" if self.op in REWRITE_OPS else f"evolver.{self.op}"

    def _verdicts(self, original: str, question: Question, answer: str) -> Iterator[Verdict]:
        """The checks, in the order a rejection reports them; evaluated lazily."""
        assert self.max_words is not None
        return rewrite_rules(original, question, answer, self.max_words)

    def _keep_context_ids(self, candidate: Record, fields: SampleFields) -> None:
        """Keep context provenance parallel to the contexts a multi_context rewrite used."""
        if self.op != "multi_context" or fields.context_ids not in candidate.fields:
            return
        if self.second_context is None:  # the record's own first two contexts
            candidate.fields[fields.context_ids] = candidate.fields[fields.context_ids][:2]
        else:  # a caller's context has no known provenance
            del candidate.fields[fields.context_ids]


@dataclass
class RewriteMix:
    """A Task: the seed at input position ``ctx.seq`` gets op ``plan.op_for(ctx.seq)``.

    The plan's counts are exact (largest remainder), so over N seeds each op is
    used exactly its planned number of times; seeds past the plan are rejected
    ``over_plan`` rather than rewritten, so the output never exceeds the
    request. Each seed is rewritten once (round 1). ``max_words`` overrides
    ``DEFAULT_MAX_WORDS`` per op. ``compress`` (default, as Ragas v0.1): a
    reasoning, multi_context or conditional rewrite then goes through
    :func:`compress_question`, the same step as ``evoforge rag``'s, whose rules
    compare with the seed (the evolution filter without critics).
    """

    plan: MixPlan
    max_words: dict[str, int] | None = None
    second_context: SecondContext | None = None
    compress: bool = True
    rewrites: dict[str, QuestionRewrite] = field(init=False, repr=False)

    def __post_init__(self) -> None:
        for op in self.plan.counts:
            _check_op(op, "--mix")
        limits = dict(self.max_words or {})
        for op in limits:
            _check_op(op, "max_words")
        self.rewrites = {
            op: QuestionRewrite(op, limits.get(op), self.second_context)
            for op, count in self.plan.counts.items()
            if count
        }

    def config(self) -> dict[str, Any]:
        """What shapes the output, for the run's manifest and journal fingerprint."""
        return {
            "mix": dict(self.plan.counts),
            "max_words": {op: rewrite.max_words for op, rewrite in self.rewrites.items()},
            "compress": self.compress,
            "prompts": {
                rewrite.template.id: rewrite.template.content_hash
                for rewrite in self.rewrites.values()
                if rewrite.template is not None
            },
        }

    async def __call__(self, record: Record, ctx: RecordContext) -> Result:
        op = self.plan.op_for(ctx.seq)
        if op is None:
            return Result.reject(
                record, "over_plan", f"seed #{ctx.seq + 1} is past the {self.plan.n} planned"
            )
        outcome = await self.rewrites[op].evolve(record, ctx, 1)
        if self.compress and op in COMPRESSED_OPS and not isinstance(outcome, Rejection):
            seed = record[_fields_of(record).question]
            outcome = await compress_question(outcome, ctx, seed=seed)
        if isinstance(outcome, Rejection):
            return Result(rejections=[outcome])
        return Result.accept(outcome)


async def compress_question(
    record: Record, ctx: RecordContext, *, seed: Question, round_: int = 1
) -> Record | Rejection:
    """Ragas v0.1's ``compress_question`` step on an evolved question (``ComplexEvolution``:
    reasoning, multi_context and conditional; ``COMPRESSED_OPS``): shorter and more
    indirect, same intent (``prompts/rewrite_compress.yaml``), within the evolved op's
    word limit (``meta.rewrite.max_words``). The rules compare with the ``seed``
    question, not the evolved one, as v0.1's evolution filter does: a compression that
    leaves the evolved question as it was is kept; one that gives the seed back is
    ``no_information_gain``. The child (id ``<id>/compress``) keeps the evolved op as
    its ``synthesizer_name`` and ``meta.rewrite`` (with ``compressed: true``)."""
    fields = _fields_of(record)
    rewrite = dict(record.meta.get("rewrite") or {})
    outcome = await QuestionRewrite("compress", max_words=rewrite.get("max_words")).evolve(
        record, ctx, round_, baseline=seed
    )
    if isinstance(outcome, Rejection):
        return outcome
    if fields.synthesizer and fields.synthesizer in record.fields:
        outcome.fields[fields.synthesizer] = record.fields[fields.synthesizer]
    outcome.meta["rewrite"] = {**rewrite, "compressed": True}
    return outcome


def mix_from_spec(spec: str, n: int, seed: int = 0) -> MixPlan:
    """``"reasoning=0.5,compress=0.5"`` over ``n`` seeds -> an exact ``MixPlan``."""
    return MixPlan(n, parse_weights(spec, REWRITE_OPS, flag="--mix"), seed)


def rewrite_rules(
    original: str | None, question: Question, answer: str, max_words: int | None
) -> Iterator[Verdict]:
    """A rewrite's checks, in the order a rejection reports them, evaluated lazily;
    ``original`` ``None`` (not known) skips the two that compare with it, and
    ``max_words`` ``None`` the length rule."""
    text = _as_text(question)
    shown = [text] if isinstance(question, str) else [t["content"] for t in question]
    yield _turn_order(question)
    if original is not None:
        yield _information_gain(original, text)
    yield _answer_present(answer)
    for part in shown:
        yield heuristics.context_reference(part)
    for part in (*shown, answer):
        yield heuristics.prompt_leak(part)
    if original is not None:
        yield heuristics.language_drift(original, text)
    if max_words is None:
        return
    for number, part in enumerate(_user_texts(question), start=1):
        verdict = heuristics.too_long(part, max_words=max_words)
        if not verdict.ok and not isinstance(question, str):
            verdict = Verdict.failed("too_long", f"user turn {number}: {verdict.detail}")
        yield verdict


def _eliminated(record: dict[str, Any], settings: Any = None) -> Verdict:
    """The rules on a written qa or rag record: against ``meta.seed_question`` when it
    is there, within ``meta.rewrite.max_words`` (else the op's default) when known."""
    kind = getattr(settings, "kind", None) or record.get("kind", "")
    fields = SAMPLE_FIELDS.get(kind)
    if fields is None:
        return Verdict.failed("wrong_kind", f"rewrite checks qa and rag records, not {kind!r}")
    meta = record.get("meta") or {}
    seed = meta.get("seed_question")
    original = _as_text(seed) if isinstance(seed, (str, list)) else None
    rewrite = meta.get("rewrite") if isinstance(meta.get("rewrite"), dict) else {}
    op = rewrite.get("op") or (record.get(fields.synthesizer) if fields.synthesizer else None)
    max_words = rewrite.get("max_words") or DEFAULT_MAX_WORDS.get(op or "")
    question = record.get(fields.question) or ""
    answer = str(record.get(fields.answer) or "")
    answer_reasons = {"empty_answer"}
    for verdict in rewrite_rules(original, question, answer, max_words):
        if not verdict.ok:
            where = fields.answer if verdict.reason in answer_reasons else fields.question
            return Verdict.failed(verdict.reason or "invalid", verdict.detail, field=f"$.{where}")
    return PASS


ELIMINATION = Check("rewrite", _eliminated)
