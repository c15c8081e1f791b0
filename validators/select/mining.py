"""Instruction Mining (Cao et al., 2023, "Instruction Mining: When Data Mining Meets
Large Language Model Finetuning", arXiv 2307.06290).

Quality indicators of a record are combined by a linear rule that predicts the
evaluation loss a model fine-tuned on such data would reach; lower is better, and
selection keeps the lowest predicted loss.

Indicators (``meta.mining.indicators``):

- ``ppl``: perplexity of the response given the instruction under the scorer model
  (``exp`` of the mean answer-token loss; IFD's conditioned loss);
- ``length``: the response's length in words (the paper counts tokens);
- ``mtld``: MTLD lexical diversity (McCarthy & Jarvis, 2010; factor threshold 0.72,
  the mean of a forward and a backward pass);
- ``knn6``: Euclidean distance to the 6th nearest neighbour among the set's
  L2-normalised embeddings (``--embedder``); computed over the whole set;
- ``reward``: a reward or judge score read from a record field (``--reward-field``,
  e.g. ``meta.alpagasus.score``); the paper used a trained reward model;
- ``naturalness``, ``coherence``, ``understandability``: an LLM judge's 1-5 ratings
  in ``meta.judge`` (the paper used UniEval).

:data:`PUBLISHED_RULES` are the paper's two published least-squares rules, both for
LLaMA-2-7B fine-tuned on subsets of instruction data: ``v1`` (arXiv 2307.06290v1),
``log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len - 0.9350 Knn6``, and ``v3`` (the revised
paper, R^2 = 0.522), ``log L = 0.0274 - 0.0078 Rew + 0.4421 Und - 0.3212 Nat - 0.1520
Coh``, whose Und/Nat/Coh are UniEval scores in [0, 1] (our judge's 1-5 ratings are mapped
onto [0, 1] first). Their indicators came from a specific reward model, UniEval and LLaMA
tokens, so the coefficients do not carry over exactly to an LLM judge, word counts or
SmolLM2; each is labelled "approximate" and a warning is printed when one is used.
:func:`fit_rule` fits your own coefficients by least squares from ``(indicators,
measured loss)`` pairs (``--fit LABELS.jsonl``).
"""

from __future__ import annotations

import json
import math
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from evoforge.engine.runner import Rejection
from evoforge.errors import ConfigError, InputError
from evoforge.llm.losses import DEFAULT_MAX_ANSWER_TOKENS, LossModel
from evoforge.records import Record
from evoforge.validators.heuristics import words
from evoforge.validators.select.ifd import last_pair
from evoforge.validators.select.ranking import select_by_signal
from evoforge.validators.select.score_cache import digest
from evoforge.validators.select.texts import RecordLike, _as_record

__all__ = [
    "APPROXIMATE_RULE",
    "INDICATORS",
    "JUDGE_INDICATORS",
    "MiningRule",
    "MiningScorer",
    "PUBLISHED_RULES",
    "fit_rule",
    "knn_distances",
    "mtld",
    "published_rule",
    "select_mining",
]

INDICATORS = (
    "ppl",
    "length",
    "mtld",
    "knn6",
    "reward",
    "naturalness",
    "coherence",
    "understandability",
)
JUDGE_INDICATORS = ("naturalness", "coherence", "understandability")


@dataclass(frozen=True)
class MiningRule:
    """``predicted loss = intercept + sum(coefficients[name] * indicator[name])``, an
    indicator named in ``unit`` first mapped from its (low, high) range onto [0, 1]."""

    name: str
    intercept: float
    coefficients: dict[str, float] = field(default_factory=dict)
    approximate: bool = False
    source: str = ""
    fit: dict[str, Any] = field(default_factory=dict)
    unit: dict[str, tuple[float, float]] = field(default_factory=dict)

    def predict(self, indicators: dict[str, float]) -> float | None:
        total = self.intercept
        for name, weight in self.coefficients.items():
            value = indicators.get(name)
            if value is None or (isinstance(value, float) and math.isnan(value)):
                return None
            low, high = self.unit.get(name, (0.0, 1.0))
            total += weight * (float(value) - low) / (high - low)
        return total

    def to_json(self) -> dict[str, Any]:
        data = {
            "name": self.name,
            "intercept": self.intercept,
            "coefficients": dict(self.coefficients),
            "approximate": self.approximate,
            "source": self.source,
        }
        if self.unit:
            data["unit"] = {name: list(bounds) for name, bounds in self.unit.items()}
        return {**data, **({"fit": self.fit} if self.fit else {})}


_TRANSCRIBED = (
    "transcribed from the paper, not refitted (cross-checked against public transcriptions; "
    "the paper itself could not be re-read offline)"
)
PUBLISHED_RULES = {
    "v1": MiningRule(
        name="cao2023-v1-approximate",
        intercept=1.0694,
        coefficients={"reward": -0.1498, "length": 8.257e-5, "knn6": -0.9350},
        approximate=True,
        source=(
            "Cao et al. 2023, arXiv 2307.06290v1: log L = 1.0694 - 0.1498 Rew + 8.257e-5 Len "
            "- 0.9350 Knn6 for LLaMA-2-7B, Rew from a trained reward model, Len in LLaMA "
            f"tokens, Knn6 in SentenceBERT space; {_TRANSCRIBED}"
        ),
    ),
    "v3": MiningRule(
        name="cao2023-v3-approximate",
        intercept=0.0274,
        coefficients={
            "reward": -0.0078,
            "understandability": 0.4421,
            "naturalness": -0.3212,
            "coherence": -0.1520,
        },  # fmt: skip
        approximate=True,
        unit={name: (1.0, 5.0) for name in ("understandability", "naturalness", "coherence")},
        source=(
            "Cao et al. 2023, arXiv 2307.06290 (revised, v3): log L = 0.0274 - 0.0078 Rew + "
            "0.4421 Und - 0.3212 Nat - 0.1520 Coh (R^2 0.522) for LLaMA-2-7B, Und/Nat/Coh "
            "UniEval scores in [0, 1] (here the judge's 1-5 ratings, mapped onto [0, 1]); "
            f"{_TRANSCRIBED}"
        ),
    ),
}
APPROXIMATE_RULE = PUBLISHED_RULES["v1"]
APPROXIMATE_WARNING = (
    "select --method mining: using the paper's published rule {name} (approximate: its "
    "coefficients come from a specific reward model, UniEval and LLaMA tokens, not from "
    "this judge or model); fit your own with --fit LABELS.jsonl"
)


def published_rule(version: str) -> MiningRule:
    """The paper's rule ``v1`` or ``v3`` (``--mining-rule``)."""
    try:
        return PUBLISHED_RULES[version]
    except KeyError:
        raise ConfigError(
            f"--mining-rule {version!r}: use one of {', '.join(PUBLISHED_RULES)}"
        ) from None


def mtld(text: str, threshold: float = 0.72) -> float:
    """MTLD (McCarthy & Jarvis, 2010): the mean length of word runs whose type-token
    ratio stays above ``threshold``, averaged over a forward and a backward pass."""
    tokens = [w.lower() for w in words(text)]
    if not tokens:
        return 0.0

    def one_way(seq: list[str]) -> float:
        factors, types, count = 0.0, set(), 0
        for token in seq:
            count += 1
            types.add(token)
            if len(types) / count <= threshold:
                factors += 1
                types, count = set(), 0
        if count:
            ttr = len(types) / count
            factors += (1 - ttr) / (1 - threshold) if ttr < 1 else 0.0
        return len(seq) / factors if factors else float(len(seq))

    return (one_way(tokens) + one_way(tokens[::-1])) / 2


def knn_distances(vectors: np.ndarray, k: int = 6, *, chunk: int = 2048) -> np.ndarray:
    """Euclidean distance of each L2-normalised row to its ``k``-th nearest other row
    (the farthest available when the set is smaller), in chunks of rows."""
    n = len(vectors)
    if n < 2:
        return np.zeros(n, dtype=np.float32)
    norms = np.linalg.norm(vectors, axis=1, keepdims=True)
    unit = np.divide(vectors, norms, out=np.zeros_like(vectors), where=norms > 0)
    kth = min(k, n - 1)
    out = np.empty(n, dtype=np.float32)
    for start in range(0, n, chunk):
        sims = unit[start : start + chunk] @ unit.T
        rows = np.arange(sims.shape[0])
        sims[rows, rows + start] = -np.inf  # not its own neighbour
        part = -np.partition(-sims, kth - 1, axis=1)[:, kth - 1]
        out[start : start + chunk] = np.sqrt(np.clip(2.0 - 2.0 * part, 0.0, None))
    return out


def _field(record: Record, path: str) -> Any:
    value: Any = record.to_json()
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    return value


class MiningScorer:
    """The per-record indicators a rule needs (``knn6`` is added over the whole set)."""

    method = "mining"

    def __init__(
        self,
        rule: MiningRule,
        model: LossModel | None = None,
        *,
        reward_field: str | None = None,
        max_answer_tokens: int = DEFAULT_MAX_ANSWER_TOKENS,
    ) -> None:
        self.rule = rule
        self.needs = set(rule.coefficients)
        if "ppl" in self.needs and model is None:
            raise ConfigError("the mining rule uses ppl: it needs a scorer model")
        self.model = model if "ppl" in self.needs else None
        self.reward_field = reward_field
        self.max_answer_tokens = max_answer_tokens
        self.batch_size = int(getattr(model, "batch_size", 8)) if model is not None else 64
        model_id = self.model.identity if self.model is not None else "no-model"
        self.identity = f"mining/v1/{model_id}/answer{max_answer_tokens}"

    def key(self, record: Any) -> str:
        return digest(*last_pair(record))

    def score_batch(self, records: Sequence[Any]) -> list[dict[str, Any]]:
        pairs = [last_pair(r) for r in records]
        losses: list[Any] = [None] * len(records)
        if self.model is not None:
            losses = self.model.pair_losses(pairs, max_answer_tokens=self.max_answer_tokens)
        blocks = []
        for (_, answer), loss in zip(pairs, losses, strict=True):
            indicators: dict[str, float] = {
                "length": float(len(words(answer))),
                "mtld": round(mtld(answer), 4),
            }
            if loss is not None:
                indicators["ppl"] = round(math.exp(min(loss.conditioned, 50.0)), 4)
            block: dict[str, Any] = {"indicators": indicators}
            if self.model is not None:
                block["model"] = self.model.identity
            blocks.append(block)
        return blocks

    def record_indicators(self, record: Any) -> dict[str, float]:
        """Indicators read from the record itself (not cached: they are its own fields)."""
        record = _as_record(record)
        found: dict[str, float] = {}
        if self.reward_field:
            value = _field(record, self.reward_field)
            if isinstance(value, (int, float)) and not isinstance(value, bool):
                found["reward"] = float(value)
        judge = record.meta.get("judge")
        if isinstance(judge, dict):
            for name in JUDGE_INDICATORS:
                value = judge.get(name)
                if isinstance(value, (int, float)) and not isinstance(value, bool):
                    found[name] = float(value)
        return found

    def finish(self, block: dict[str, Any], extra: dict[str, float]) -> dict[str, Any]:
        """The block with the record's own indicators and the rule's prediction."""
        if "error" in block:
            return block
        indicators = {**block["indicators"], **extra}
        predicted = self.rule.predict(indicators)
        done = {**block, "indicators": indicators, "rule": self.rule.name}
        if predicted is None:
            missing = sorted(n for n in self.rule.coefficients if n not in indicators)
            return {**done, "error": f"missing indicator(s) {', '.join(missing)}"}
        return {**done, "score": round(predicted, 6)}


def fit_rule(path: str | Path, *, indicators: Sequence[str] | None = None) -> MiningRule:
    """Least-squares coefficients (with an intercept) from ``path``: JSON lines of
    ``{"indicators": {name: value, ...}, "loss": measured}`` (or the indicators at the
    top level beside ``loss``). ``indicators`` limits the columns used; by default,
    every known indicator present on every line."""
    rows: list[tuple[dict[str, float], float]] = []
    try:
        lines = Path(path).read_text(encoding="utf-8").splitlines()
    except OSError as exc:
        raise ConfigError(f"--fit {path}: cannot read it ({exc.strerror})") from exc
    for line_no, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except ValueError:
            raise InputError("is not valid JSON", path=str(path), line=line_no) from None
        loss = data.get("loss") if isinstance(data, dict) else None
        if isinstance(loss, bool) or not isinstance(loss, (int, float)):
            raise InputError('field "loss" is missing or not a number', path=str(path),
                             line=line_no)  # fmt: skip
        source = data.get("indicators", data)
        values = {k: float(v) for k, v in source.items()
                  if k in INDICATORS and isinstance(v, (int, float))}  # fmt: skip
        rows.append((values, float(loss)))
    if not rows:
        raise ConfigError(f"--fit {path}: no labelled rows")
    names = list(indicators) if indicators else [
        n for n in INDICATORS if all(n in values for values, _ in rows)
    ]  # fmt: skip
    if not names:
        raise ConfigError(
            f"--fit {path}: no indicator is on every line; known: {', '.join(INDICATORS)}"
        )
    if len(rows) <= len(names):
        raise ConfigError(f"--fit {path}: {len(rows)} rows cannot fit {len(names)} coefficients")
    x = np.array([[values.get(n, math.nan) for n in names] for values, _ in rows])
    if np.isnan(x).any():
        raise ConfigError(f"--fit {path}: some lines lack one of {', '.join(names)}")
    y = np.array([loss for _, loss in rows])
    design = np.hstack([np.ones((len(rows), 1)), x])
    solution, *_ = np.linalg.lstsq(design, y, rcond=None)
    residual = y - design @ solution
    total = float(((y - y.mean()) ** 2).sum())
    r2 = 1.0 - float((residual**2).sum()) / total if total > 0 else 1.0
    return MiningRule(
        name="fit",
        intercept=float(solution[0]),
        coefficients={n: float(c) for n, c in zip(names, solution[1:], strict=True)},
        source=f"least squares on {path}",
        fit={"rows": len(rows), "r2": round(r2, 6)},
    )


def select_mining(
    records: Sequence[RecordLike], budget: int | None = None
) -> tuple[list[Record], list[Rejection]]:
    """Keep the lowest predicted loss (``meta.mining.score``) up to ``budget``.
    Dropped: ``over_budget``, ``unscored``."""
    return select_by_signal(records, method="mining", budget=budget, descending=False)
