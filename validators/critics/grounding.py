"""Critics that hold a sample to its contexts: answerable from them, a reference they
support, and a question that asks more than its seed.

Ragas v0.1's question and evolution critics (``testset/prompts.py``) plus a check of
the reference answer against the contexts, which Ragas does not make. Each screens
without a model call first, then asks a binary judge (:func:`.rubric.binary_judge`).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import ClassVar

from evoforge.engine.runner import RecordContext
from evoforge.errors import ConfigError
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Verdict
from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.rubric import ask_equal_judge, binary_judge, binary_verdict
from evoforge.validators.critics.sample import (
    contexts_of,
    has_context,
    numbered_contexts,
    parts_of,
    question_of,
    question_prompt_text,
    reference_of,
    require_variables,
    same_words,
)


@dataclass(frozen=True)
class Answerable(Critic):
    """Can the question be answered fully, and only, from the sample's contexts?

    The answerability half of Ragas' question critic (independence and clear
    intent): a question the contexts cannot answer measures the model's memory,
    not retrieval. The judge (``prompts/critic_answerable.yaml``, op
    ``critic_answerable``, ``VERDICT_PARAMS``) sees the question (turns as
    ``user: ...`` lines; it judges the last user turn) and every context,
    numbered; it replies ``{"verdict": "yes" | "no", "reason": ...}``.

    Reason codes: ``no_context`` (no context text; no call), ``unanswerable``
    (verdict "no"; the detail is the judge's reason).
    """

    template: PromptTemplate | None = None
    name: ClassVar[str] = "answerable"

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", builtin_template("critic_answerable"))
        assert self.template is not None
        require_variables(self.template, {"question", "contexts"}, "Answerable")

    def screen(self, record: Record) -> Verdict:
        return has_context(record)

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        assert self.template is not None
        rating = await binary_judge(self.template, op="critic_answerable").rate(
            ctx,
            question=question_prompt_text(question_of(record)),
            contexts=numbered_contexts(contexts_of(record)),
        )
        return binary_verdict(
            rating, self.template, "unanswerable", "the contexts do not answer the question fully"
        )


def content_words(text: str) -> list[str]:
    """Lowercased words minus stop words; CJK characters count one by one."""
    return [
        w for w in (t.lower() for t in heuristics.words(text)) if w not in heuristics.STOP_WORDS
    ]


def _stem(word: str) -> str:
    """A plural "s" aside, so "forests" in a reference matches "forest" in a context."""
    if len(word) > 3 and word.endswith("s") and not word.endswith("ss"):
        return word[:-1]
    return word


@dataclass(frozen=True)
class Grounded(Critic):
    """The reference answer must be supported by the contexts.

    Ragas' critics check the question and the context but never the answer, so
    a reference the generator made up from its own knowledge passes them. This
    critic checks it twice:

    1. lexically, with no model call: the share of the reference's distinct
       content words (``content_words``; a plural "s" aside) found among the
       contexts' words must be at least ``min_overlap`` (default 0.5, our
       choice: references paraphrase, and a made-up one shares little);
    2. then the judge (``prompts/critic_grounded.yaml``, op
       ``critic_grounded``, ``VERDICT_PARAMS``): is every claim supported?

    Reason codes: ``no_context`` (no context text), ``empty_answer`` (a
    reference of stop words only), ``ungrounded_reference`` (the share, with
    the missing words, or the judge's reason).
    """

    min_overlap: float = 0.5
    template: PromptTemplate | None = None
    name: ClassVar[str] = "grounded"

    def __post_init__(self) -> None:
        if not 0.0 <= self.min_overlap <= 1.0:
            raise ConfigError(f"Grounded: min_overlap must be in [0, 1], got {self.min_overlap}")
        if self.template is None:
            object.__setattr__(self, "template", builtin_template("critic_grounded"))
        assert self.template is not None
        require_variables(self.template, {"question", "reference", "contexts"}, "Grounded")

    def overlap(self, record: Record) -> tuple[float, list[str]]:
        """(share of the reference's content words in the contexts, the missing ones)."""
        wanted = list(dict.fromkeys(_stem(w) for w in content_words(reference_of(record))))
        have = {_stem(w.lower()) for text in contexts_of(record) for w in heuristics.words(text)}
        missing = [w for w in wanted if w not in have]
        share = (len(wanted) - len(missing)) / len(wanted) if wanted else 0.0
        return share, missing

    def screen(self, record: Record) -> Verdict:
        no_context = has_context(record)
        if not no_context.ok:
            return no_context
        reference = reference_of(record)
        empty = heuristics.empty_answer(reference)
        if not empty.ok:
            return Verdict.failed(
                "empty_answer", f"the reference has no content words: {empty.detail}"
            )
        share, missing = self.overlap(record)
        if share >= self.min_overlap:
            return Verdict(True, score=share)
        shown = ", ".join(repr(w) for w in missing[:8]) + (", ..." if len(missing) > 8 else "")
        return Verdict(
            False,
            "ungrounded_reference",
            f"only {share:.0%} of the reference's content words occur in the contexts "
            f"(at least {self.min_overlap:.0%} needed); not found: {shown}",
            score=share,
        )

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        assert self.template is not None
        rating = await binary_judge(self.template, op="critic_grounded").rate(
            ctx,
            question=question_prompt_text(question_of(record)),
            reference=reference_of(record),
            contexts=numbered_contexts(contexts_of(record)),
        )
        return binary_verdict(
            rating,
            self.template,
            "ungrounded_reference",
            "the contexts do not support the reference",
        )


@dataclass(frozen=True)
class InformationGain(Critic):
    """A rewritten question must ask more than its seed did.

    Ragas' evolution critic, and rule 1 of Evol-Instruct's elimination (Xu et
    al., 2023, arXiv 2304.12244): a rewrite equal to its seed adds a duplicate,
    not a harder sample. Runs only when ``meta.seed_question`` is present and
    the sample is not the seed itself (``synthesizer_name`` "simple", Ragas'
    name for an unevolved question); otherwise it passes with no call.

    The same words (case, spacing and punctuation aside) fail without a call;
    otherwise the Evol-Instruct judge (``prompts/evol_equal.yaml``, first = the
    seed question, second = the rewrite, op ``critic_information_gain``,
    ``EQUAL_JUDGE_PARAMS``) decides, and "Equal" fails. A reply that is neither
    counts as not equal, as in ``EvolInstruct``. Reason code:
    ``no_information_gain``.
    """

    template: PromptTemplate | None = None
    name: ClassVar[str] = "information_gain"

    def __post_init__(self) -> None:
        if self.template is None:
            object.__setattr__(self, "template", builtin_template("evol_equal"))
        assert self.template is not None
        require_variables(self.template, {"first", "second"}, "InformationGain")

    def _pair(self, record: Record) -> tuple[str, str] | None:
        seed = record.meta.get("seed_question")
        synthesizer = parts_of(record).synthesizer
        if not seed or (synthesizer and record.get(synthesizer) == "simple"):
            return None
        return question_prompt_text(seed), question_prompt_text(question_of(record))

    def screen(self, record: Record) -> Verdict:
        pair = self._pair(record)
        if pair is not None and same_words(*pair):
            return Verdict.failed(
                "no_information_gain", f"the question repeats its seed: {pair[0][:80]!r}"
            )
        return PASS

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        pair = self._pair(record)
        if pair is None:
            return PASS
        assert self.template is not None
        equal, said = await ask_equal_judge(
            ctx,
            self.template,
            op="critic_information_gain",
            round_=0,
            first=pair[0],
            second=pair[1],
        )
        return self.equal_verdict(pair, equal, said)

    def pair(self, record: Record) -> tuple[str, str] | None:
        """(seed question, question) to compare, or ``None`` when there is no seed."""
        return self._pair(record)

    def equal_verdict(self, pair: tuple[str, str], equal: bool | None, said: str) -> Verdict:
        """The judge's answer (``equal``: True, False, or None for neither) as a verdict;
        also read from a merged judge's reply (``merged.MergedJudge``)."""
        if equal:
            return Verdict.failed(
                "no_information_gain",
                f"the judge found the question equal to its seed {pair[0][:80]!r}: {said[:40]!r}",
            )
        if equal is None:  # neither word: counted as not equal, as in EvolInstruct
            return Verdict(
                True, detail=f"the judge said neither Equal nor Not Equal: {said[:80]!r}"
            )
        return Verdict(True, detail=f"the judge: {said[:40]!r}")
