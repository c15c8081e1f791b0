"""What the DEITA and AlpaGasus judges answer: the JSON Schemas asked for, and the
parsers that read a reply (also the papers' plain-text forms, from a server that
ignores the schema) and turn token logprobs into DEITA's expected score.

An unreadable reply gives None here; the scorers reject the record as
``unparseable_score`` with the reply's first line, never a made-up score.
"""

from __future__ import annotations

import math
import re
from collections.abc import Sequence
from typing import Any

from evoforge.llm.base import TokenLogprob

__all__ = [
    "ALPAGASUS_SCHEMA",
    "DEITA_SCHEMA",
    "DEITA_SCORE",
    "SCORE_TOKENS",
    "deita_chain_schema",
    "expected_score",
    "parse_alpagasus_score",
    "parse_deita_chain",
    "parse_deita_score",
]

# The replies' JSON Schemas. They go to the backend with each request (an OpenAI-style
# ``response_format``; the local model writes them by construction, choosing each
# score among the enum's options), and the reply is read by the parsers below, which
# also take the plain-text forms from a server that ignores the schema.
DEITA_SCORE = {"type": "integer", "enum": [1, 2, 3, 4, 5, 6]}
DEITA_SCHEMA = {
    "type": "object",
    "properties": {"score": DEITA_SCORE},
    "required": ["score"],
    "additionalProperties": False,
}
# AlpaGasus scores 0-5; half points, so that the 4.5 threshold can be met exactly.
ALPAGASUS_SCHEMA = {
    "type": "object",
    "properties": {
        "score": {"type": "number", "enum": [k / 2 for k in range(11)]},
        "explanation": {"type": "string"},
    },
    "required": ["score", "explanation"],
    "additionalProperties": False,
}


def deita_chain_schema(n: int) -> dict[str, Any]:
    """``{"scores": [...]}``: exactly ``n`` scores of 1-6, one per variant, in order."""
    return {
        "type": "object",
        "properties": {
            "scores": {"type": "array", "items": DEITA_SCORE, "minItems": n, "maxItems": n}
        },
        "required": ["scores"],
        "additionalProperties": False,
    }


def _first_line(text: str) -> str:
    for line in text.strip().splitlines():
        if line.strip():
            return line.strip()[:200]
    return ""


_NUMBER = r"([0-9]+(?:\.[0-9]+)?)"


def parse_deita_score(text: str, aspect: str) -> float | None:
    """A DEITA judge's 1-6 score, or None.

    Read in order: the JSON reply asked for, ``{"score": N}`` (also
    ``{"complexity": N}`` / ``{"quality": N}``, the number quoted or not); the last
    ``##Complexity: N`` / ``##Quality: N`` line (the DEITA scorer's own format;
    ``#``s and case optional); a reply that is a bare number. This is the parsed
    number; :class:`DeitaScorer` turns it into the expected value when the reply
    carries token logprobs.
    """
    found = _deita_score_at(text, aspect)
    return None if found is None else found[0]


def _in_scale(value: Any) -> float | None:
    try:
        score = float(value)
    except (TypeError, ValueError):
        return None
    return score if 1.0 <= score <= 6.0 else None


def _json_number_at(text: str, keys: str) -> tuple[str, int] | None:
    """The first ``"key": N`` (``"N"`` too) of a JSON reply, ``keys`` a regex
    alternation: (the number's text, its offset in ``text``), or None."""
    match = re.search(rf'"(?:{keys})"\s*:\s*"?{_NUMBER}"?\s*[,}}]', text, re.I)
    return None if match is None else (match.group(1), match.start(1))


def _deita_score_at(text: str, aspect: str) -> tuple[float, int] | None:
    """(score, offset of its number in ``text``) or None."""
    found_json = _json_number_at(text, f"score|{aspect}")
    if found_json is not None:
        score = _in_scale(found_json[0])
        return None if score is None else (score, found_json[1])
    found = list(re.finditer(rf"#*\s*{aspect}\s*(?:score)?\s*[:：]\s*\**\s*{_NUMBER}", text, re.I))
    if found:
        score = _in_scale(found[-1].group(1))
        return None if score is None else (score, found[-1].start(1))
    bare = re.fullmatch(rf"\s*{_NUMBER}\s*\.?\s*", text)
    if bare is None:
        return None
    score = _in_scale(bare.group(1))
    return None if score is None else (score, bare.start(1))


def parse_deita_chain(text: str, n: int) -> list[float] | None:
    """The 1-6 scores of a rank-scoring reply over ``n`` variants, in order, or None.

    The JSON reply asked for, ``{"scores": [N, ...]}`` with exactly ``n`` numbers;
    failing that, one score per variant read from a ``[Score k]: N`` line (also
    ``[Instruction k] Score: N`` / ``[Response k] Score: N``, the paper's own
    format), the last line for a ``k`` winning. None unless all ``n`` are there.
    """
    found = _deita_chain_at(text, n)
    return None if found is None else [score for score, _ in found]


_CHAIN_LINE = re.compile(
    rf"\[\s*(?:score\s*(\d+)\s*\]|(?:instruction|response|query)\s*(\d+)\s*\]\s*score)"
    rf"\s*[:：=]?\s*\**\s*{_NUMBER}",
    re.I,
)


_JSON_SCORES = re.compile(r'"scores"\s*:\s*\[([^\]]*)\]', re.I)
_JSON_ITEM = re.compile(rf'\s*"?{_NUMBER}"?\s*')


def _deita_json_chain_at(text: str, n: int) -> list[tuple[float, int]] | None:
    """The ``{"scores": [...]}`` form: (score, offset) per item, or None."""
    match = _JSON_SCORES.search(text)
    if match is None:
        return None
    found = []
    for item in re.finditer(r"[^,]+", match.group(1)):
        number = _JSON_ITEM.fullmatch(item.group(0))
        score = None if number is None else _in_scale(number.group(1))
        if number is None or score is None:
            return None
        found.append((score, match.start(1) + item.start() + number.start(1)))
    return found if len(found) == n else None


def _deita_chain_at(text: str, n: int) -> list[tuple[float, int]] | None:
    if _JSON_SCORES.search(text):
        return _deita_json_chain_at(text, n)
    scores: dict[int, tuple[float, int]] = {}
    for match in _CHAIN_LINE.finditer(text):
        position = int(match.group(1) or match.group(2))
        score = _in_scale(match.group(3))
        if 1 <= position <= n and score is not None:
            scores[position] = (score, match.start(3))
    if len(scores) != n:
        return None
    return [scores[k] for k in range(1, n + 1)]


SCORE_TOKENS = {str(k): k for k in range(1, 7)}


def expected_score(
    logprobs: Sequence[TokenLogprob] | None, text: str, offset: int | None, parsed: float
) -> float:
    """DEITA's expected score sum p(k) * k over the score tokens "1".."6".

    ``offset`` is where the parsed number starts in ``text``; the token there must
    be the score digit alone (spaces aside). Its top alternatives that are score
    tokens (" 4" and "4" are one) are renormalised to probabilities. Without
    logprobs, when the tokens do not spell ``text``, or when no alternative is a
    score token, the parsed number is returned.
    """
    if not logprobs or offset is None:
        return parsed
    joined = "".join(entry.token for entry in logprobs)
    if joined.strip() != text.strip():
        return parsed
    offset += (len(joined) - len(joined.lstrip())) - (len(text) - len(text.lstrip()))
    start = 0
    for entry in logprobs:
        end = start + len(entry.token)
        if start <= offset < end:
            if entry.token.strip() not in SCORE_TOKENS:
                return parsed
            mass: dict[int, float] = {}
            for token, logprob in entry.top.items():
                k = SCORE_TOKENS.get(token.strip())
                if k is not None:
                    mass[k] = mass.get(k, 0.0) + math.exp(logprob)
            total = sum(mass.values())
            if total <= 0:
                return parsed
            return sum(k * p for k, p in mass.items()) / total
        start = end
    return parsed


def parse_alpagasus_score(text: str) -> float | None:
    """An AlpaGasus judge's 0-5 score, or None.

    The JSON reply asked for, ``{"score": N, "explanation": "..."}``; failing that
    (a server that wrote text), the paper's form: the first non-empty line is the
    score alone (``4.5``; ``4.5/5`` and a trailing period are accepted), else the
    first ``score: N`` anywhere.
    """
    found = _json_number_at(text, "score")
    if found is not None:
        value = found[0]
    else:
        first = _first_line(text)
        match = re.fullmatch(rf"\**{_NUMBER}\**\s*(?:/\s*5(?:\.0)?)?\s*\.?", first)
        if match is None:
            match = re.search(rf"score\s*(?:is|of)?\s*[:：=]?\s*\**\s*{_NUMBER}", text, re.I)
        if match is None:
            return None
        value = match.group(1)
    score = float(value)
    return score if 0.0 <= score <= 5.0 else None
