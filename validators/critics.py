"""Critics for RAG evaluation samples, and a panel that repairs a failing sample once.

Ragas v0.1 test-set generation (``testset/prompts.py``, its "critic" prompts)
keeps a generated question only when an LLM critic finds its context good
enough, the question independent with a clear intent, and an evolved question
different from its seed. The critics here keep those checks and fix what the
METHODS notes list as Ragas' weaknesses:

- nothing is dropped silently: a failing sample becomes a ``Rejection`` with a
  reason code and the critic's own words;
- retries are bounded: ``CriticPanel`` asks for one rewrite, never more;
- the reference answer is checked against the contexts (``Grounded``), a check
  Ragas does not make.

Input: a ``rag`` record (``user_input``, ``reference``, ``reference_contexts``,
optionally ``synthesizer_name`` and ``meta.seed_question``) or a ``qa`` record
(``question``, ``answer``, ``contexts``). ``user_input`` is a string or a list
of ``{role, content}`` turns; for turns the last user turn is the question,
read in the light of the earlier turns.

Every LLM judge here goes through one code path, :class:`RubricCritic`: render
a template, ask, read a score (a number on the scale, or a verdict word such as
"yes"/"no" or "Equal"/"Not Equal" mapped onto it) and a reason, compare with
the pass threshold. On its own it scores any record against a rubric you write
(``prompts/critic_rubric.yaml``; ``evoforge validate --checks rubric``); the
checks below are binary rubrics with prompts of their own.

Critics, cheapest first, with their reason codes:

- ``SelfContained`` (no model call): ``not_self_contained``;
- ``Grounded``: a lexical overlap check (no model call), then an LLM judge
  (``prompts/critic_grounded.yaml``): ``ungrounded_reference``, or
  ``empty_answer`` for a reference of stop words only, or ``no_context``;
- ``Answerable`` (LLM judge, ``prompts/critic_answerable.yaml``):
  ``unanswerable``, or ``no_context`` when the record has no context text;
- ``InformationGain`` (the Evol-Instruct equality judge,
  ``prompts/evol_equal.yaml``): ``no_information_gain``;
- ``RubricCritic`` (a rubric, a scale and a pass threshold): ``low_rating``, or
  ``unparseable_rating`` when the reply holds no score.

``CriticPanel`` adds ``language_drift`` (a repair that left the question's
script); a failed model call keeps the engine's reason (``invalid_json``,
``schema_mismatch``, ``http_400``, ...).
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from evoforge.engine.runner import RecordContext, Rejection, Result
from evoforge.errors import ConfigError, RequestRejected
from evoforge.llm.base import Completion
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record, SampleFields, sample_fields
from evoforge.validators import heuristics
from evoforge.validators.base import PASS, Verdict

# A yes/no verdict or a score, with a one-sentence reason, greedy.
VERDICT_PARAMS = {"max_tokens": 120, "temperature": 0.0}
# The equality judge's verdict is "Equal" or "Not Equal": a few tokens, greedy.
EQUAL_JUDGE_PARAMS = {"max_tokens": 8, "temperature": 0.0}

Question = str | list[dict[str, str]]


# --- the parts of a sample -------------------------------------------------------------


def _parts_of(record: Record) -> SampleFields:
    return sample_fields(record.kind, who=f"critics ({record.id})")


def question_of(record: Record) -> Question:
    """The sample's question: a string, or its ``{role, content}`` turns."""
    return record[_parts_of(record).question]


def reference_of(record: Record) -> str:
    return str(record.get(_parts_of(record).answer) or "")


def contexts_of(record: Record) -> list[str]:
    return [str(text) for text in record.get(_parts_of(record).contexts) or []]


def question_prompt_text(question: Question) -> str:
    """A question for a prompt; turns read ``user: ...\\nassistant: ...``."""
    if isinstance(question, str):
        return question
    return "\n".join(f"{turn['role']}: {turn['content']}" for turn in question)


def numbered_contexts(contexts: Sequence[str]) -> str:
    """``[1] first``, blank line, ``[2] second``: the contexts as judges see them."""
    return "\n\n".join(f"[{i}] {text.strip()}" for i, text in enumerate(contexts, start=1))


def _last_user_index(turns: list[dict[str, str]]) -> int | None:
    for i in range(len(turns) - 1, -1, -1):
        if turns[i].get("role") == "user":
            return i
    return None


def _user_texts(question: Question) -> list[str]:
    if isinstance(question, str):
        return [question]
    return [turn["content"] for turn in question if turn.get("role") == "user"]


def _same_words(first: str, second: str) -> bool:
    """Equal once case, spacing and punctuation are set aside."""
    return [w.lower() for w in heuristics.words(first)] == [
        w.lower() for w in heuristics.words(second)
    ]


def _has_context(record: Record) -> Verdict:
    if any(text.strip() for text in contexts_of(record)):
        return PASS
    field_name = _parts_of(record).contexts
    return Verdict.failed("no_context", f"field {field_name!r} holds no context text")


def _require_variables(template: PromptTemplate, names: set[str], what: str) -> None:
    if set(template.variables) != names:
        raise ConfigError(
            f"{what}: template {template.id} ({template.source}) must use exactly the "
            f"variables {sorted(names)}; it declares {sorted(template.variables)}"
        )


# --- the critic contract ---------------------------------------------------------------


class Critic:
    """One check of a sample, split by cost.

    ``screen(record)`` makes no model call; ``judge(record, ctx)`` may make
    one and runs only after the screen passed. ``review`` runs both. A failed
    model call raises ``RequestRejected``; ``CriticPanel`` turns it into a
    rejection.
    """

    name: ClassVar[str] = "critic"

    def screen(self, record: Record) -> Verdict:
        return PASS

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        return PASS

    async def review(self, record: Record, ctx: RecordContext) -> Verdict:
        verdict = self.screen(record)
        if not verdict.ok:
            return verdict
        return await self.judge(record, ctx)


# --- the rubric critic: the one path of every LLM judge --------------------------------

# Verdict words and the score each stands for, first match wins. A binary rubric is
# the scale 0-1 with the pass threshold 1.
YES_NO: tuple[tuple[str, float], ...] = (("yes", 1.0), ("no", 0.0))
# Evol-Instruct's equality judge: "Not Equal" (information gained) passes.
EQUAL_VERDICTS: tuple[tuple[str, float], ...] = (
    ("not equal", 1.0),
    ("unequal", 1.0),
    ("不相等", 1.0),
    ("不等", 1.0),
    ("equal", 0.0),
    ("相等", 0.0),
)
BINARY_SCALE = (0.0, 1.0)

DEFAULT_RUBRIC = (
    "The response answers the prompt fully and correctly; it follows every instruction "
    "and constraint the prompt gives; it states nothing false or unsupported; it is clear "
    "and in the prompt's language."
)


@dataclass(frozen=True)
class Rating:
    """A judge's score (``None``: the reply held none) and reason; ``passed`` when the
    score reaches the critic's threshold."""

    score: float | None
    reason: str
    passed: bool


def verdict_score(text: str, verdicts: Sequence[tuple[str, float]]) -> float | None:
    """The score of the first verdict word found in ``text`` (whole words, case and
    punctuation aside; CJK words as substrings), or ``None``."""
    lowered = " ".join(re.sub(r"[^\w\s]", " ", text.casefold()).split())
    for word, score in verdicts:
        if word.isascii():
            if re.search(rf"(?<!\w){re.escape(word)}(?!\w)", lowered):
                return score
        elif word in text:
            return score
    return None


def _on_scale(value: Any, scale: tuple[float, float]) -> float | None:
    if isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if scale[0] <= number <= scale[1] else None


def read_rating(
    reply: Completion, scale: tuple[float, float], verdicts: Sequence[tuple[str, float]]
) -> tuple[float | None, str]:
    """(score, reason) of a judge's reply.

    A JSON reply (``reply.parsed``): ``score`` on the scale, else its ``verdict``
    word; the reason is its ``reason``. A plain-text reply (a template without an
    output schema): the first verdict word in it, else a number on the scale at
    the start of its first line; the reason is the reply itself.
    """
    parsed = reply.parsed
    if isinstance(parsed, dict):
        reason = " ".join(str(parsed.get("reason") or "").split())
        score = _on_scale(parsed.get("score"), scale)
        if score is None and "verdict" in parsed:
            word = " ".join(str(parsed["verdict"]).casefold().split())
            score = dict(verdicts).get(word)
        return score, reason
    text = reply.text.strip()
    score = verdict_score(text, verdicts) if verdicts else None
    if score is None:
        first = text.splitlines()[0] if text else ""
        match = re.match(r"\W*([0-9]+(?:\.[0-9]+)?)", first)
        score = _on_scale(match.group(1), scale) if match else None
    return score, text


def sample_text(record: Record) -> str:
    """A record as a judge reads it: its fields as labelled sections (question or
    instruction, input, contexts numbered, answer), turns as ``role: content`` lines."""
    if record.kind in ("qa", "rag"):
        sections = [
            ("Question", question_prompt_text(question_of(record))),
            ("Contexts", numbered_contexts(contexts_of(record))),
            ("Answer", reference_of(record)),
        ]
    elif isinstance(record.get("messages"), list):
        sections = [("Conversation", question_prompt_text(record["messages"]))]
    else:
        sections = [
            ("Instruction", str(record.get("instruction") or record.get("question") or "")),
            ("Input", str(record.get("input") or "")),
            ("Response", str(record.get("output") or record.get("answer") or "")),
        ]
    return "\n\n".join(f"{label}:\n{text.strip()}" for label, text in sections if text.strip())


@dataclass(frozen=True)
class RubricCritic(Critic):
    """A judge scores a sample against a rubric, on a scale, and gives its reason.

    The generic LLM critic (the rubric critic of issue 6, in the spirit of
    LLM-as-a-judge rubric grading): ``prompts/critic_rubric.yaml`` shows the
    ``rubric``, the ``scale`` and the sample (:func:`sample_text`); the reply is
    JSON ``{"score": N, "reason": ...}`` (op ``critic_rubric``,
    ``VERDICT_PARAMS``). A score at or above ``threshold`` passes (the verdict
    carries it as ``score``); below fails with ``reason`` (default ``low_rating``)
    and the judge's words; a reply without a score on the scale fails
    ``unparseable_rating``, quoting it.

    ``rate(ctx, **values)`` is the one code path of every judge in this module:
    any ``template`` (its variables are filled from ``values``, plus ``rubric``,
    ``scale_min`` and ``scale_max`` when it declares them), replies read by
    :func:`read_rating`, where a verdict word counts as the score ``verdicts``
    gives it (a binary rubric: ``BINARY_SCALE``, threshold 1). Defaults: scale
    1-5, threshold 4, the rubric ``DEFAULT_RUBRIC``.
    """

    rubric: str = DEFAULT_RUBRIC
    scale: tuple[float, float] = (1.0, 5.0)
    threshold: float = 4.0
    reason: str = "low_rating"
    template: PromptTemplate | None = None
    verdicts: tuple[tuple[str, float], ...] = YES_NO
    op: str = "critic_rubric"
    params: Mapping[str, Any] = field(default_factory=lambda: dict(VERDICT_PARAMS))
    name: ClassVar[str] = "rubric"

    def __post_init__(self) -> None:
        low, high = (float(end) for end in self.scale)
        if not low < high:
            raise ConfigError(f"RubricCritic: the scale {self.scale} must run from low to high")
        if not low <= self.threshold <= high:
            raise ConfigError(
                f"RubricCritic: the pass threshold {self.threshold:g} is off the scale "
                f"{low:g}-{high:g}"
            )
        if not self.rubric.strip():
            raise ConfigError("RubricCritic: the rubric is empty")
        object.__setattr__(self, "scale", (low, high))
        if self.template is None:
            object.__setattr__(self, "template", builtin_template("critic_rubric"))

    async def rate(
        self, ctx: RecordContext, *, op: str | None = None, round_: int = 0, **values: Any
    ) -> Rating:
        """Ask the judge about ``values``; its score, reason and pass/fail."""
        template = self.template
        assert template is not None
        given = {
            "rubric": self.rubric,
            "scale_min": f"{self.scale[0]:g}",
            "scale_max": f"{self.scale[1]:g}",
            **values,
        }
        reply = await ctx.ask(
            template,
            op=op or self.op,
            round_=round_,
            params=dict(self.params),
            **{name: value for name, value in given.items() if name in template.variables},
        )
        score, reason = read_rating(reply, self.scale, self.verdicts)
        passed = score is not None and score >= self.threshold
        return Rating(score, reason or "the judge gave no reason", passed)

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        rating = await self.rate(ctx, sample=sample_text(record))
        low, high = self.scale
        if rating.score is None:
            return Verdict.failed(
                "unparseable_rating",
                f"{self.op}: no score from {low:g} to {high:g} in the reply: "
                f"{rating.reason[:200]!r}",
            )
        if rating.passed:
            return Verdict(True, detail=rating.reason, score=rating.score)
        return Verdict(
            False,
            self.reason,
            f"score {rating.score:g} < {self.threshold:g} (scale {low:g}-{high:g}): "
            f"{rating.reason}",
            score=rating.score,
        )


_RUBRIC_KEYS = {"rubric", "scale", "threshold", "reason"}


def load_rubric(path: str | Path) -> RubricCritic:
    """A :class:`RubricCritic` from a file: plain text is the rubric; a YAML mapping
    gives ``rubric`` and optionally ``scale: [low, high]``, ``threshold``, ``reason``."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as exc:
        raise ConfigError(f"--rubric {path}: cannot read it ({exc.strerror})") from None
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError:
        data = None
    if not isinstance(data, dict):
        return RubricCritic(rubric=text.strip())
    unknown = sorted(set(data) - _RUBRIC_KEYS)
    if unknown or "rubric" not in data:
        raise ConfigError(
            f"{path}: a rubric file is plain text, or YAML with the keys "
            f"{', '.join(sorted(_RUBRIC_KEYS))} (rubric required)"
            + (f"; unknown: {', '.join(unknown)}" if unknown else "")
        )
    scale = data.get("scale", (1, 5))
    if not isinstance(scale, list | tuple) or len(scale) != 2:
        raise ConfigError(f'{path}: "scale" is [low, high], e.g. [1, 5]; got {scale!r}')
    try:
        return RubricCritic(
            rubric=str(data["rubric"]),
            scale=(float(scale[0]), float(scale[1])),
            threshold=float(data.get("threshold", 4)),
            reason=str(data.get("reason", "low_rating")),
        )
    except (TypeError, ValueError) as exc:
        raise ConfigError(f"{path}: scale and threshold must be numbers ({exc})") from None


def binary_judge(
    template: PromptTemplate,
    *,
    op: str,
    verdicts: tuple[tuple[str, float], ...] = YES_NO,
    params: Mapping[str, Any] = VERDICT_PARAMS,
) -> RubricCritic:
    """A yes/no check as a rubric: its own prompt, scale 0-1, pass at 1."""
    return RubricCritic(
        scale=BINARY_SCALE,
        threshold=1.0,
        template=template,
        verdicts=verdicts,
        op=op,
        params=dict(params),
    )


def _binary_verdict(rating: Rating, template: PromptTemplate, reason: str, lead: str) -> Verdict:
    if rating.score is None:
        raise RequestRejected(
            "schema_mismatch", f'{template.id}: no "yes"/"no" verdict in the reply: {rating.reason}'
        )
    return PASS if rating.passed else Verdict.failed(reason, f"{lead}: {rating.reason}")


async def ask_equal_judge(
    ctx: RecordContext,
    template: PromptTemplate,
    *,
    op: str,
    round_: int,
    first: str,
    second: str,
) -> tuple[bool | None, str]:
    """Ask the equality judge (Evol-Instruct's elimination rule 1; Xu et al., 2023, arXiv
    2304.12244) whether ``first`` and ``second`` are equal: ``(True`` for "Equal",
    ``False`` for "Not Equal", ``None`` for neither``, the reply text)``."""
    judge = binary_judge(template, op=op, verdicts=EQUAL_VERDICTS, params=EQUAL_JUDGE_PARAMS)
    rating = await judge.rate(ctx, round_=round_, first=first, second=second)
    return (None if rating.score is None else not rating.passed), rating.reason


# --- SelfContained ---------------------------------------------------------------------

_NOUNS = (
    r"contexts?|passages?|texts?|documents?|articles?|excerpts?|paragraphs?|sections?|"
    r"tables?|figures?|charts?|diagrams?|speakers?|snippets?|chunks?"
)
_TIME_WORDS = (
    r"day|days|week|weeks|month|months|year|years|season|seasons|decade|century|morning|"
    r"evening|night|spring|summer|autumn|fall|winter|game|match|round|election|generation"
)
# Word-boundary aware, case-insensitive. A phrase followed by "of" names what it means
# ("in the context of the Cold War", "the text of the treaty"), so it is allowed.
_LATIN_PATTERNS = (
    rf"\b(?:the|this|that|these|those|said)\s+(?:(?:given|provided|above|following|previous|"
    rf"preceding|first|second|third|last|other|same)\s+)?(?:{_NOUNS})\b(?!\s+of\b)"
    r"(?!\s+(?:message|messages|messaging|tennis|skating|skater|skaters|salt)\b)",
    r"\b(?:the|this)\s+author'?s?\b(?!\s+of\b)",
    r"\bthe\s+above\b",
    r"\b(?:mentioned|shown|listed|stated|described|given|cited|quoted)\s+(?:above|below)\b",
    r"\babove[-\s]mentioned\b",
    rf"\bthe\s+following\b(?!\s+(?:{_TIME_WORDS})\b)",
    r"\b(?:context|passage|document|excerpt|chunk|snippet)\s*#?\s*\d+\b",
)
_AUTHOR = re.compile(r"\b(?:the|this)\s+author'?s?\b", re.IGNORECASE)
_LATIN = [re.compile(p, re.IGNORECASE) for p in _LATIN_PATTERNS]

# Chinese has no spaces, so each phrase carries guards against the words it hides in:
# 本文 in 日本文化, 文中 in 中文中 ("in Chinese"), 表中 in 代表中国, 上文 in 网上文章.
_CJK_PATTERNS = {
    "上文": r"(?<![网线晚早])上文(?![章化件学字])",
    "下文": r"下文",
    "上下文": r"上下文",
    "文中": r"(?<![中英日韩法德俄外汉译语])文中",
    "本文": r"(?<![日基根资版剧样课书脚])本文(?!化)",
    "该文": r"(?<!应)该文(?![明化])",
    "原文": r"原文",
    "上述": r"上述",
    "下列": r"下列",
    "以下": r"以下(?:内容|材料|文字|段落|信息)",
    "这段": r"这段(?:话|文字|材料|内容|描述|文本)",
    "段落": r"(?:这个|这一|该|本|此)段落",
    "文章": r"(?:这篇|该|本|此)文章",
    "材料": r"(?:所给|给定|上述|该|这段|根据)材料|材料中",
    "图表": r"(?<![试企意地])图中|(?<![代发外])表中|上图|下图|上表|下表",
    "说话人": r"说话人",
    "作者": r"作者",
}
_CJK = {name: re.compile(pattern) for name, pattern in _CJK_PATTERNS.items()}

# Capitalised words that are not names ("I" inside a sentence).
_NOT_NAMES = frozenset("i i'm i've i'd i'll".split())


def _names_someone(text: str) -> bool:
    """A capitalised word that does not start a sentence, or a title in 《》: a name."""
    if re.search(r"《[^》]+》", text):
        return True
    for match in re.finditer(r"[A-Z][\w'’-]*", text):
        start = match.start()
        if start > 0 and text[start - 1].isalnum():  # inside a word, e.g. "McD"
            continue
        before = text[:start].rstrip()
        if not before or before[-1] in '.?!:;"“(':  # a sentence starts here
            continue
        if match.group().lower() not in _NOT_NAMES:
            return True
    return False


def _latin_reference(text: str, named: bool) -> str | None:
    for pattern in _LATIN:
        for match in pattern.finditer(text):
            if named and _AUTHOR.fullmatch(match.group()):
                continue
            return match.group()
    return None


def _cjk_reference(text: str, named: bool) -> str | None:
    for name, pattern in _CJK.items():
        match = pattern.search(text)
        if match is None or (name == "作者" and named):
            continue
        return match.group()
    return None


def _bounded_context_phrase(text: str) -> str | None:
    """The phrase ``heuristics.context_reference`` flags, if it stands as whole words.

    That check matches substrings ("in the text" inside "in the textile
    industry"); it runs first, and its phrases are then confirmed at word
    boundaries (CJK phrases through the guarded patterns above).
    """
    if heuristics.context_reference(text).ok:
        return None
    lowered = text.lower()
    for phrase in heuristics.CONTEXT_PHRASES:
        if phrase.isascii():
            if re.search(rf"(?<!\w){re.escape(phrase)}(?!\w)", lowered):
                return phrase
        elif phrase in _CJK:
            if _CJK[phrase].search(text):
                return phrase
        elif phrase in text:
            return phrase
    return None


@dataclass(frozen=True)
class SelfContained(Critic):
    """The question must not point at material its reader cannot see (no model call).

    Ragas' question critic asks for "independence": a test question is put to a
    RAG system without its contexts, so "What does the passage say about X?"
    cannot be answered. Fails ``not_self_contained`` on phrases such as "the
    context", "this passage", "the text", "the document", "the article", "the
    author" (unless the question names someone: "What did Tolkien write..."),
    "the above", "mentioned above", "the following" (not "the following year"),
    "this section", "the table", "the figure", "the speaker", "context 1", and
    Chinese ones (上文, 文中, 本文, 该文, 这段话, 作者 ...), besides everything
    ``heuristics.context_reference`` flags. Matching is case-insensitive and
    word-boundary aware ("contextual", "textile" pass); a phrase followed by
    "of" names its referent and passes ("in the context of the Cold War").

    Every user turn of a conversation is checked (the reader sees them all); a
    name in any turn excuses "the author".
    """

    name: ClassVar[str] = "self_contained"

    def check(self, record: Record) -> Verdict:
        """The ``Validator`` protocol: the same as ``screen``."""
        return self.screen(record)

    def screen(self, record: Record) -> Verdict:
        question = question_of(record)
        user_turns = _user_texts(question)
        shown = [question] if isinstance(question, str) else [t["content"] for t in question]
        named = any(_names_someone(text) for text in shown)
        for number, text in enumerate(user_turns, start=1):
            phrase = (
                _bounded_context_phrase(text)
                or _latin_reference(text, named)
                or _cjk_reference(text, named)
            )
            if phrase is not None:
                where = "" if isinstance(question, str) else f"user turn {number}: "
                return Verdict.failed(
                    "not_self_contained",
                    f"{where}the question says {phrase!r}, which points at material the "
                    "reader cannot see; name what it refers to instead",
                )
        return PASS


# --- LLM judges ------------------------------------------------------------------------


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
        _require_variables(self.template, {"question", "contexts"}, "Answerable")

    def screen(self, record: Record) -> Verdict:
        return _has_context(record)

    async def judge(self, record: Record, ctx: RecordContext) -> Verdict:
        assert self.template is not None
        rating = await binary_judge(self.template, op="critic_answerable").rate(
            ctx,
            question=question_prompt_text(question_of(record)),
            contexts=numbered_contexts(contexts_of(record)),
        )
        return _binary_verdict(
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
        _require_variables(self.template, {"question", "reference", "contexts"}, "Grounded")

    def overlap(self, record: Record) -> tuple[float, list[str]]:
        """(share of the reference's content words in the contexts, the missing ones)."""
        wanted = list(dict.fromkeys(_stem(w) for w in content_words(reference_of(record))))
        have = {_stem(w.lower()) for text in contexts_of(record) for w in heuristics.words(text)}
        missing = [w for w in wanted if w not in have]
        share = (len(wanted) - len(missing)) / len(wanted) if wanted else 0.0
        return share, missing

    def screen(self, record: Record) -> Verdict:
        no_context = _has_context(record)
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
        return _binary_verdict(
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
        _require_variables(self.template, {"first", "second"}, "InformationGain")

    def _pair(self, record: Record) -> tuple[str, str] | None:
        seed = record.meta.get("seed_question")
        synthesizer = _parts_of(record).synthesizer
        if not seed or (synthesizer and record.get(synthesizer) == "simple"):
            return None
        return question_prompt_text(seed), question_prompt_text(question_of(record))

    def screen(self, record: Record) -> Verdict:
        pair = self._pair(record)
        if pair is not None and _same_words(*pair):
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
        if equal:
            return Verdict.failed(
                "no_information_gain",
                f"the judge found the question equal to its seed {pair[0][:80]!r}: {said[:40]!r}",
            )
        return PASS


class WellFormed(Critic):
    """The question must be a question a person could ask (no model call).

    Small models sometimes return a title ("The Printing Press") or echo the
    answer as the question, and judges of the same size wave it through. Fails
    ``not_a_question`` when the (last user) question has fewer than
    ``min_words`` words, or has the same words as the reference.
    """

    name: ClassVar[str] = "well_formed"

    def __init__(self, min_words: int = 4) -> None:
        self.min_words = min_words

    def check(self, record: Record) -> Verdict:
        return self.screen(record)

    def screen(self, record: Record) -> Verdict:
        texts = _user_texts(question_of(record))
        question = texts[-1] if texts else ""
        count = heuristics.word_count(question)
        if count < self.min_words:
            return Verdict.failed(
                "not_a_question",
                f"{question!r} has {count} words; a question needs {self.min_words}",
            )
        if _same_words(question, reference_of(record)):
            return Verdict.failed("not_a_question", "the question only repeats the reference")
        return PASS


def default_critics() -> list[Critic]:
    """Cheapest first: the lexical checks screen before any judge is asked."""
    return [WellFormed(), SelfContained(), Grounded(), Answerable(), InformationGain()]


# --- the panel -------------------------------------------------------------------------

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
    reason. A passing record gets ``meta["critics"] = {"passed": [names]}``.
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
        _require_variables(
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
        try:
            failure = await self.first_failure(record, ctx)
        except RequestRejected as exc:
            return Rejection(record.id, exc.reason, f"{exc} (critics)", record.to_json())
        if failure is None:
            return self._passed(record)
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
        try:
            again = await self.first_failure(fixed, ctx)
        except RequestRejected as exc:
            return Rejection(fixed.id, exc.reason, f"{exc} (critics){after}", fixed.to_json())
        if again is None:
            return self._passed(fixed)
        return Rejection(fixed.id, str(again.reason), again.detail + after, fixed.to_json())

    async def first_failure(self, record: Record, ctx: RecordContext) -> Verdict | None:
        """The first failing verdict (screens, then judges), or ``None`` when all pass."""
        for critic in self.critics:
            verdict = critic.screen(record)
            if not verdict.ok:
                return verdict
        for critic in self.critics:
            verdict = await critic.judge(record, ctx)
            if not verdict.ok:
                return verdict
        return None

    def _passed(self, record: Record) -> Record:
        meta = {**record.meta, "critics": {"passed": [critic.name for critic in self.critics]}}
        return dataclasses.replace(record, fields=dict(record.fields), meta=meta)

    async def _fix(self, record: Record, ctx: RecordContext, failure: Verdict) -> Record:
        template = self.fix_template
        assert template is not None
        parts = _parts_of(record)
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
            last = _last_user_index(turns)
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
