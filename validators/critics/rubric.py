"""The rubric critic: the one code path of every LLM judge among the critics.

Render a template, ask, read a score (a number on the scale, or a verdict word such
as "yes"/"no" or "Equal"/"Not Equal" mapped onto it, see :mod:`.rating`) and a
reason, compare with the pass threshold. On its own it scores any record against a
rubric you write (``prompts/critic_rubric.yaml``; ``evoforge validate --checks
rubric``), in the spirit of LLM-as-a-judge rubric grading; the binary judges
(:func:`binary_judge`) and Evol-Instruct's equality judge (:func:`ask_equal_judge`;
Xu et al., 2023, arXiv 2304.12244) are rubrics with prompts of their own.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, ClassVar

import yaml

from evoforge.engine.runner import RecordContext
from evoforge.errors import ConfigError, RequestRejected
from evoforge.prompting import PromptTemplate, builtin_template
from evoforge.records import Record
from evoforge.validators.base import Verdict
from evoforge.validators.critics.base import Critic
from evoforge.validators.critics.rating import (
    BINARY_SCALE,
    EQUAL_VERDICTS,
    YES_NO,
    Rating,
    read_rating,
)
from evoforge.validators.critics.sample import (
    contexts_of,
    numbered_contexts,
    question_of,
    question_prompt_text,
    reference_of,
)

# A yes/no verdict or a score, with a one-sentence reason, greedy.
VERDICT_PARAMS = {"max_tokens": 120, "temperature": 0.0}
# The equality judge's verdict is "Equal" or "Not Equal": a few tokens, greedy.
EQUAL_JUDGE_PARAMS = {"max_tokens": 8, "temperature": 0.0}

DEFAULT_RUBRIC = (
    "The response answers the prompt fully and correctly; it follows every instruction "
    "and constraint the prompt gives; it states nothing false or unsupported; it is clear "
    "and in the prompt's language."
)


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


def binary_verdict(rating: Rating, template: PromptTemplate, reason: str, lead: str) -> Verdict:
    """A binary judge's rating as a verdict: failed with ``reason`` on "no"; a reply with
    neither "yes" nor "no" raises ``RequestRejected("schema_mismatch")``."""
    if rating.score is None:
        raise RequestRejected(
            "schema_mismatch", f'{template.id}: no "yes"/"no" verdict in the reply: {rating.reason}'
        )
    if rating.passed:  # the judge's reason is kept: a kept record shows it (meta.critics)
        return Verdict(True, detail=rating.reason)
    return Verdict.failed(reason, f"{lead}: {rating.reason}")


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
