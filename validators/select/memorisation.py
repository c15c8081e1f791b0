"""Memorisation-level probing ("Empirical Insights on Fine-Tuning Large Language
Models for Question-Answering", Ye et al., FudanNLP, 2024, arXiv 2409.15825).

The article finds that a few SFT samples (60) drawn from facts the model already
knows well fine-tune QA better than many drawn at random. A fact's memorisation
level is the share of K prompts (templates) under which the model's greedy
completion contains the answer.

- A fact is a record's (question, answer) -- ``qa``, ``instruction``, any kind with
  a question/answer pair -- or its ``subject`` / ``relation`` / ``object`` fields,
  turned into the question "What is the RELATION of SUBJECT?".
- :data:`TEMPLATES` holds ten fixed completion prompts (K = 10 by default; the
  article used more prompts per fact, so levels here are coarser: steps of 0.1).
  Extra templates, e.g. LLM paraphrases of the question, can be passed in.
- The answer and the completion are normalised (lower case, no punctuation, no
  articles, spaces collapsed) and the answer must appear in the completion.

:class:`MemorisationScorer` writes ``meta.memorisation = {score, level, hits,
templates, model}``; :func:`select_memorisation` keeps ``budget`` (default 60)
records from a level band (default: the highest levels first), dropping the others
``outside_band`` or ``over_budget``; :func:`level_histogram` counts levels for the
report.
"""

from __future__ import annotations

import re
import string
from collections import Counter
from collections.abc import Iterable, Sequence
from typing import Any

from evoforge.engine.runner import Rejection
from evoforge.errors import ConfigError
from evoforge.llm.losses import LossModel
from evoforge.records import Record
from evoforge.validators.select.ifd import last_pair
from evoforge.validators.select.ranking import score_of, select_by_signal
from evoforge.validators.select.score_cache import digest
from evoforge.validators.select.texts import RecordLike, _as_record

__all__ = [
    "DEFAULT_FACTS",
    "DEFAULT_TEMPLATES",
    "TEMPLATES",
    "MemorisationScorer",
    "fact_of",
    "level_histogram",
    "normalise",
    "parse_band",
    "select_memorisation",
]

DEFAULT_TEMPLATES = 10
DEFAULT_FACTS = 60  # the article's "60 samples"
MEMORISATION_VERSION = 1

# Raw completion prompts (no chat template): each ends where the answer would start.
TEMPLATES = (
    "Question: {question}\nAnswer:",
    "Q: {question}\nA:",
    "{question}\nThe answer is",
    "Answer the question in a few words.\nQuestion: {question}\nAnswer:",
    "{question} Answer:",
    "Quiz time! {question}\nCorrect answer:",
    "Here is a trivia question. {question}\nThe correct answer is",
    'Someone asked: "{question}" The right answer is',
    "Fact check. {question}\nShort answer:",
    "Trivia\nQ: {question}\nA (in one or two words):",
)

_ARTICLES = re.compile(r"\b(a|an|the)\b")
_PUNCT = str.maketrans({ch: " " for ch in string.punctuation})


def normalise(text: str) -> str:
    """Lower case, punctuation and articles removed, spaces collapsed (SQuAD-style)."""
    return " ".join(_ARTICLES.sub(" ", text.lower().translate(_PUNCT)).split())


def fact_of(record: RecordLike) -> tuple[str, str]:
    """(question, answer) of a fact record."""
    record = _as_record(record)
    subject, relation, obj = (record.get(k) for k in ("subject", "relation", "object"))
    if subject and relation and obj:
        return f"What is the {relation} of {subject}?", str(obj)
    question, answer = last_pair(record)
    return question, answer


def parse_band(band: str | None) -> tuple[float, float] | None:
    """``"0.7:1"`` -> (0.7, 1.0); ``None``/``"top"`` -> None (the highest levels first)."""
    if band is None or band in ("", "top"):
        return None
    low, sep, high = band.partition(":")
    try:
        bounds = (float(low), float(high)) if sep else (float(low), 1.0)
    except ValueError:
        raise ConfigError(f"--band {band!r}: use LOW:HIGH levels in 0..1, e.g. 0.7:1") from None
    if not 0 <= bounds[0] <= bounds[1] <= 1:
        raise ConfigError(f"--band {band!r}: use LOW:HIGH with 0 <= LOW <= HIGH <= 1")
    return bounds


class MemorisationScorer:
    """The memorisation level of each fact under ``model``'s greedy completions."""

    method = "memorisation"

    def __init__(
        self,
        model: LossModel,
        *,
        templates: int = DEFAULT_TEMPLATES,
        extra_templates: Sequence[str] = (),
        max_new_tokens: int = 12,
    ) -> None:
        if templates < 1:
            raise ConfigError(f"--templates must be >= 1 (got {templates})")
        fixed = list(TEMPLATES[: min(templates, len(TEMPLATES))])
        self.templates = tuple(fixed + list(extra_templates)[: max(0, templates - len(fixed))])
        self.model = model
        self.max_new_tokens = max_new_tokens
        self.batch_size = int(getattr(model, "batch_size", 8))
        self.identity = (
            f"memorisation/v{MEMORISATION_VERSION}/{model.identity}/"
            f"{digest(*self.templates)[:12]}/new{max_new_tokens}"
        )

    def key(self, record: Any) -> str:
        return digest(*fact_of(record))

    def score_batch(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        facts = [fact_of(record) for record in records]
        prompts = [t.format(question=q) for q, _ in facts for t in self.templates]
        completions = self.model.greedy(prompts, max_new_tokens=self.max_new_tokens)
        k = len(self.templates)
        blocks: list[dict[str, Any]] = []
        for n, (question, answer) in enumerate(facts):
            target = normalise(answer)
            if not question.strip() or not target:
                blocks.append({"error": "no question or answer", "model": self.model.identity})
                continue
            said = completions[n * k : (n + 1) * k]
            hits = sum(1 for text in said if f" {target} " in f" {normalise(text)} ")
            level = round(hits / k, 6)
            blocks.append(
                {
                    "score": level,
                    "level": level,
                    "hits": hits,
                    "templates": k,
                    "model": self.model.identity,
                }
            )
        return blocks


def band_accept(band: tuple[float, float] | None):
    def accept(block: dict[str, Any]) -> tuple[str, str] | None:
        if band is None:
            return None
        level = float(block["score"])
        if band[0] <= level <= band[1]:
            return None
        return "outside_band", f"memorisation level {level:g} outside {band[0]:g}:{band[1]:g}"

    return accept


def select_memorisation(
    records: Sequence[RecordLike], budget: int | None = DEFAULT_FACTS, *, band: str | None = None
) -> tuple[list[Record], list[Rejection]]:
    """``budget`` (60) records with the highest ``meta.memorisation.score`` inside
    ``band`` (``LOW:HIGH``; default none: the highest levels). Dropped:
    ``outside_band``, ``over_budget``, ``unscored``."""
    return select_by_signal(
        records,
        method="memorisation",
        budget=DEFAULT_FACTS if budget is None else budget,
        descending=True,
        accept=band_accept(parse_band(band)),
    )


def level_histogram(blocks: Iterable[Any]) -> dict[str, int]:
    """How many facts at each level (``"0.3": 12``), lowest level first."""
    counts = Counter(f"{score:g}" for score in (score_of(b) for b in blocks) if score is not None)
    return {key: counts[key] for key in sorted(counts, key=float)}
