"""Ranking by a model signal kept in ``meta``: what IFD, Instruction Mining and
memorisation selection share.

A signal scorer writes ``meta[METHOD] = {"score": ..., "model": ..., ...}``, or
``{"error": ...}`` where it could not score. :func:`rank_blocks` turns the blocks
alone (no record text, so 100K records cost 100K floats) into the positions to keep
and a (reason, detail) for every other one:

- ``unscored``: the block has no score (its ``error`` says why);
- the method's own filter (``accept``), e.g. IFD's ``ifd_not_below_one``;
- ``over_budget``: scored and accepted, but past the budget in score order (ties:
  input order).

:func:`select_by_signal` applies it to records in memory, the selector contract's
``(selected, dropped)``.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, field
from typing import Any

from evoforge.engine.runner import Rejection
from evoforge.errors import ConfigError
from evoforge.records import Record
from evoforge.validators.select.texts import RecordLike, _as_record

__all__ = ["Ranking", "rank_blocks", "score_of", "select_by_signal"]

Accept = Callable[[dict[str, Any]], tuple[str, str] | None]


@dataclass
class Ranking:
    """Positions kept, best first, and ``(reason, detail)`` for each dropped position."""

    kept: list[int] = field(default_factory=list)
    dropped: dict[int, tuple[str, str]] = field(default_factory=dict)


def score_of(block: Any) -> float | None:
    score = block.get("score") if isinstance(block, dict) else None
    if isinstance(score, bool) or not isinstance(score, (int, float)) or math.isnan(score):
        return None
    return float(score)


def rank_blocks(
    blocks: Iterable[tuple[int, Any]],
    *,
    method: str,
    budget: int | None,
    descending: bool,
    accept: Accept | None = None,
) -> Ranking:
    """Rank ``(position, block)`` pairs (see the module's doc)."""
    if budget is not None and (isinstance(budget, bool) or budget < 0):
        raise ConfigError(f"selection budget must be an integer >= 0 (got {budget!r})")
    ranking = Ranking()
    candidates: list[tuple[float, int]] = []
    for position, block in blocks:
        score = score_of(block)
        if score is None:
            why = block.get("error") if isinstance(block, dict) else None
            ranking.dropped[position] = ("unscored", why or f"no meta.{method}.score")
            continue
        refused = accept(block) if accept is not None else None
        if refused is not None:
            ranking.dropped[position] = refused
            continue
        candidates.append((-score if descending else score, position))
    candidates.sort()
    for rank, (_, position) in enumerate(candidates):
        if budget is not None and rank >= budget:
            ranking.dropped[position] = ("over_budget", f"budget {budget} already filled")
        else:
            ranking.kept.append(position)
    return ranking


def select_by_signal(
    records: Sequence[RecordLike],
    *,
    method: str,
    budget: int | None,
    descending: bool,
    accept: Accept | None = None,
) -> tuple[list[Record], list[Rejection]]:
    """The selector contract over records in memory, ranked by ``meta[method]``."""
    items = [_as_record(r) for r in records]
    ranking = rank_blocks(
        ((i, r.meta.get(method)) for i, r in enumerate(items)),
        method=method,
        budget=budget,
        descending=descending,
        accept=accept,
    )
    kept = set(ranking.kept)
    selected = [r for i, r in enumerate(items) if i in kept]
    dropped = [
        Rejection(items[i].id, *ranking.dropped[i], items[i].to_json())
        for i in sorted(ranking.dropped)
    ]
    return selected, dropped
