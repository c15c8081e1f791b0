"""The RAG critics' LLM judges in one call: grounded, answerable and information gain.

Each of the three judges reads the same sample (its contexts, question and reference;
the information-gain judge its seed question too) and gives an independent yes/no
verdict, so one structured call can judge all three (issue 19: a third to half of a
``rag`` run's calls were critic calls). :class:`MergedJudge` asks
``prompts/critic_rag_judge_evolved.yaml`` (a rewritten question) or
``prompts/critic_rag_judge.yaml`` (no seed question to compare with: the "simple"
scenario), op ``critic_merged``, and hands each critic its own verdict.

The critics stay separate in the panel (:func:`merged_critics`): each keeps its name,
its screen (no model call, run before any judge) and its reason codes, and the panel
still reads the judges in order (grounded, answerable, information gain) and stops at
the first failure. So a judge that answers each criterion the same way merged and
separately gives the same verdicts, reason codes and details
(``tests/test_merged_judges.py``). What changes is the prompt each judge reads: all
criteria at once. Agreement of merged and separate judges with the embedded model on a
labelled fixture is in ``docs/cost.md``.

Ragas v0.1 already judges two criteria (independence, clear intent) in one question
critic call; groundedness is evoforge's own check. Evol-Instruct's elimination judge in
``evolve`` stays a call of its own (its published form).
"""

from __future__ import annotations

import asyncio
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.runner import RecordContext
from evoforge.errors import RequestRejected
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.base import PASS, Verdict
from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.grounding import Answerable, Grounded, InformationGain
from evoforge.validators.critics.panel import default_critics
from evoforge.validators.critics.rating import EQUAL_VERDICTS, YES_NO, Rating
from evoforge.validators.critics.rubric import VERDICT_PARAMS, binary_verdict
from evoforge.validators.critics.sample import (
    contexts_of,
    numbered_contexts,
    question_of,
    question_prompt_text,
    reference_of,
    require_variables,
)
from evoforge.validators.critics.screens import SelfContained, WellFormed

# Three verdicts with a sentence each: room for three VERDICT_PARAMS replies.
MERGED_PARAMS = {**VERDICT_PARAMS, "max_tokens": 3 * int(VERDICT_PARAMS["max_tokens"])}
CRITIC_CALLS = ("auto", "merged", "separate")


def _rating(reply: Any, key: str, verdicts: tuple[tuple[str, float], ...]) -> Rating:
    """One criterion of the merged reply (``key`` and ``key_reason``), read as its own
    judge's reply would be."""
    said = reply.get(key) if isinstance(reply, dict) else None
    if said is None:
        return Rating(None, f"no {key!r} verdict in the reply", False)
    reason = " ".join(str(reply.get(f"{key}_reason") or "").split()) or "the judge gave no reason"
    score = dict(verdicts).get(" ".join(str(said).casefold().split()))
    return Rating(score, reason, score is not None and score >= 1.0)


@dataclass
class MergedJudge:
    """One call judges grounded, answerable and (for a rewrite) information gain.

    ``members()`` are the three critics as the panel runs them (:class:`JudgedTogether`);
    the first member asked about a record makes the call, the others read its verdicts.
    A reply without a yes/no for grounded or answerable fails ``schema_mismatch``, as
    their own judges do; an information-gain verdict that is neither "Equal" nor "Not
    Equal" counts as not equal, as in ``InformationGain``.
    """

    grounded: Grounded = field(default_factory=Grounded)
    answerable: Answerable = field(default_factory=Answerable)
    information_gain: InformationGain = field(default_factory=InformationGain)
    template: PromptTemplate = field(default_factory=lambda: builtin_template("critic_rag_judge"))
    evolved_template: PromptTemplate = field(
        default_factory=lambda: builtin_template("critic_rag_judge_evolved")
    )
    _pending: dict[
        int, tuple[Record, asyncio.Future[dict[str, Verdict | RequestRejected]], set[str]]
    ] = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        names = {"question", "reference", "contexts"}
        require_variables(self.template, names, "MergedJudge")
        require_variables(self.evolved_template, names | {"seed_question"}, "MergedJudge")

    def __getstate__(self) -> dict[str, Any]:  # futures stay in their process (Ray)
        return {**self.__dict__, "_pending": {}}

    def members(self) -> list[Critic]:
        return [JudgedTogether(c, self) for c in (self.grounded, self.answerable,
                                                   self.information_gain)]  # fmt: skip

    async def verdict(
        self, name: str, record: Record, ctx: RecordContext
    ) -> Verdict | RequestRejected:
        """``name``'s verdict on ``record``: from the one call, made on the first ask."""
        entry = self._pending.get(id(record))
        if entry is None or entry[0] is not record:
            future: asyncio.Future[dict[str, Verdict | RequestRejected]] = (
                asyncio.get_running_loop().create_future()
            )
            entry = (record, future, {"grounded", "answerable", "information_gain"})
            self._pending[id(record)] = entry
            try:
                future.set_result(await self.judge_all(record, ctx))
            except BaseException as exc:
                self._pending.pop(id(record), None)
                future.cancel() if isinstance(exc, asyncio.CancelledError) else None
                raise
        verdicts = await entry[1]
        entry[2].discard(name)
        mine = verdicts[name]
        if not entry[2] or not isinstance(mine, Verdict) or not mine.ok:
            self._pending.pop(id(record), None)  # the panel asks no further member
        return mine

    async def judge_all(
        self, record: Record, ctx: RecordContext
    ) -> dict[str, Verdict | RequestRejected]:
        """Every criterion's verdict on ``record`` from one call (an unreadable one: the
        error its own judge would raise, kept as the value)."""
        pair = self.information_gain.pair(record)
        values = {
            "question": question_prompt_text(question_of(record)),
            "reference": reference_of(record),
            "contexts": numbered_contexts(contexts_of(record)),
        }
        template = self.template if pair is None else self.evolved_template
        if pair is not None:
            values["seed_question"] = pair[0]
        reply = await ctx.ask(template, op="critic_merged", params=dict(MERGED_PARAMS), **values)
        parsed = reply.parsed
        grounded = self.grounded.template
        answerable = self.answerable.template
        assert grounded is not None and answerable is not None
        verdicts = {
            "grounded": _binary(parsed, "grounded", grounded, "ungrounded_reference",
                                "the contexts do not support the reference"),
            "answerable": _binary(parsed, "answerable", answerable, "unanswerable",
                                  "the contexts do not answer the question fully"),
            "information_gain": PASS,
        }  # fmt: skip
        if pair is not None:
            rating = _rating(parsed, "information_gain", EQUAL_VERDICTS)
            equal = None if rating.score is None else not rating.passed
            # What the separate judge's reply says: its verdict ("Equal" / "Not Equal").
            said = str(parsed.get("information_gain") or "") if isinstance(parsed, dict) else ""
            verdicts["information_gain"] = self.information_gain.equal_verdict(
                pair, equal, said or rating.reason
            )
        return verdicts


def _binary(
    parsed: Any, key: str, template: PromptTemplate, reason: str, lead: str
) -> Verdict | RequestRejected:
    """A yes/no criterion as its own judge's verdict, or the error its judge would raise
    (raised only when the panel reads it, so a failure earlier in the order wins)."""
    try:
        return binary_verdict(_rating(parsed, key, YES_NO), template, reason, lead)
    except RequestRejected as exc:
        return exc


class JudgedTogether(Critic):
    """A critic whose judge is one criterion of a :class:`MergedJudge` call; its name,
    screen and reason codes are the critic's own."""

    def __init__(self, critic: Critic, merged: MergedJudge) -> None:
        self.critic = critic
        self.merged = merged
        self.name = critic.name  # type: ignore[misc]

    def screen(self, record: Record) -> Verdict:
        return self.critic.screen(record)

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        verdict = await self.merged.verdict(self.name, record, ctx)
        if isinstance(verdict, RequestRejected):
            raise verdict
        return verdict


def merged_critics() -> list[Critic]:
    """The default critics (``panel.default_critics``), their judges in one call."""
    return [WellFormed(), SelfContained(), *MergedJudge().members()]


def critics_for(critic_calls: str) -> list[Critic]:
    """The RAG critics for ``--critic-calls merged|separate``."""
    return merged_critics() if critic_calls == "merged" else default_critics()


def merged_prompts(critic_calls: str) -> list[str]:
    """The prompt ids a run's manifest lists for ``--critic-calls``."""
    return ["critic_rag_judge", "critic_rag_judge_evolved"] if critic_calls == "merged" else []


def resolve_critic_calls(critic_calls: str, llm: str, model: Any = None) -> str:
    """``auto`` (the default): ``separate`` on the embedded model, ``merged`` elsewhere.

    On the embedded 135M model the merged reply copies its format rather than judging
    each criterion (``bench/merged_judges_agreement.py``; figures in
    ``docs/cheapest-first.md``), so there each judge keeps its own short prompt."""
    if critic_calls != "auto":
        return critic_calls
    identity = getattr(model, "identity", None) if model is not None else None
    backend = identity.get("backend") if isinstance(identity, dict) else None
    if model is None or backend == "counting":  # a dry run plans for the --llm given
        backend = str(llm).split(":", 1)[0].strip()
    return "separate" if backend == "local" else "merged"
