"""The VaL probing metrics: one score between 0 and 1 per answer, by task.

An et al., 2024, "Make Your LLM Fully Utilize the Context" (arXiv 2404.16811, §4.1):

- ``document``: word-level recall of the gold sentence,
  ``|gold words & predicted words| / |gold words|`` over lower-cased words (the
  paper's metric; surrounding punctuation is also stripped from each word here, so
  ``fox,`` counts as ``fox``);
- ``code``: exact match of the function name after stripping whitespace, backticks,
  quotes, ``def`` and a trailing ``(...)`` (the paper counts the name anywhere in the
  reply; the question asks for the name only, so the two agree);
- ``database``: relaxed match, 1 when the reply contains the gold label or the gold
  description (case-insensitive, whitespace-normalised, trailing full stop ignored).
"""

from __future__ import annotations

import re
import string
from collections.abc import Callable
from typing import Any

from evoforge.errors import ConfigError


def _words(text: str) -> set[str]:
    stripped = (word.strip(string.punctuation + "“”‘’«»") for word in text.lower().split())
    return {word for word in stripped if word}


def sentence_recall(prediction: str, gold: str) -> float:
    """Share of the gold sentence's distinct words that the prediction contains."""
    gold_words = _words(gold)
    if not gold_words:
        return 0.0
    return len(gold_words & _words(prediction)) / len(gold_words)


def _function_name(text: str) -> str:
    name = text.strip().strip("`'\"").strip()
    name = re.sub(r"^(?:async\s+)?def\s+", "", name)
    name = re.sub(r"\s*\(.*\)\s*:?$", "", name, flags=re.S)
    name = name.strip().rstrip(".:").strip("`'\" ")
    if re.fullmatch(r"[\w.]+", name):
        name = name.rsplit(".", 1)[-1]  # Ledger.receive_goods names receive_goods
    return name


def function_name_match(prediction: str, gold: str) -> float:
    """1.0 when the prediction is the gold function name (``foo()``, `` `foo` `` allowed)."""
    return float(_function_name(prediction) == gold.strip())


def _normalised(text: str) -> str:
    return " ".join(text.lower().split())


def entity_match(prediction: str, gold: dict[str, str]) -> float:
    """1.0 when the prediction contains the gold label or the gold description."""
    said = _normalised(prediction)
    for field in ("label", "description"):
        expected = _normalised(str(gold.get(field, ""))).rstrip(".")
        if expected and expected in said:
            return 1.0
    return 0.0


# The metric of each task, in the order the tasks are listed.
METRICS: dict[str, Callable[[str, Any], float]] = {
    "document": sentence_recall,
    "code": function_name_match,
    "database": entity_match,
}


def metric(task: str) -> Callable[[str, Any], float]:
    """``task``'s metric; an unknown task raises :class:`ConfigError` naming the tasks."""
    try:
        return METRICS[task]
    except KeyError:
        raise ConfigError(f"probe task {task!r}: use one of {', '.join(METRICS)}") from None


def score_prediction(task: str, prediction: str, gold: Any) -> float:
    """The score of one answer under ``task``'s metric, between 0 and 1."""
    return float(metric(task)(prediction, gold))
