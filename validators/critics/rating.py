"""A judge's reply read as a score on a scale, from a number or a verdict word.

Every LLM judge of the critics replies either JSON (``{"score": N, "reason": ...}`` or
``{"verdict": "yes", "reason": ...}``) or plain text; :func:`read_rating` turns both into
a score and a reason. A binary rubric is the scale 0-1 with the pass threshold 1, its
verdict words mapped onto it (``YES_NO``; Evol-Instruct's equality judge:
``EQUAL_VERDICTS``, Xu et al., 2023, arXiv 2304.12244).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from evoforge.llm.base import Completion

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
