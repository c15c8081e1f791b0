"""Category-balanced sampling and LIMA's selection (Zhou et al., 2023, "LIMA: Less Is
More for Alignment").

LIMA sampled its Stack Exchange and wikiHow answers evenly across categories for
diversity, and kept answers with no first person and no pointers to other answers.

- :func:`select_balanced` draws up to ``per_category`` records from each value of a
  field (``--balance-by category``, or a dotted path such as ``meta.topic``), at
  random with the run seed; with a ``budget``, categories take turns until it is
  filled. Dropped: ``category_full`` (the category had its share), ``over_budget``.
  Records without the field form the category ``(none)``.
- :func:`select_lima` applies LIMA's answer filters first (``first_person``,
  ``references_other_answer``; with ``lima_length``, ``too_short`` / ``too_long``
  over the text without links and images) and then, given ``balance_by``, samples
  the survivors evenly; without it, the first ``budget`` survivors in input order.
  The same filters run per record in ``evoforge validate --checks lima``.
"""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import Sequence
from typing import Any

from evoforge.engine.runner import Rejection
from evoforge.errors import ConfigError
from evoforge.records import Record
from evoforge.validators.lima import check_lima
from evoforge.validators.select.ifd import last_pair
from evoforge.validators.select.texts import RecordLike, _as_record

__all__ = ["MISSING_CATEGORY", "category_of", "select_balanced", "select_lima"]

MISSING_CATEGORY = "(none)"


def category_of(record: Record, path: str) -> str:
    """The value at ``path`` (``category``, ``meta.topic``, ...) as text."""
    value: Any = record.to_json()
    for part in path.split("."):
        value = value.get(part) if isinstance(value, dict) else None
    if value is None or value == "":
        return MISSING_CATEGORY
    return value if isinstance(value, str) else str(value)


def _balanced(
    items: list[Record],
    positions: list[int],
    budget: int | None,
    balance_by: str,
    per_category: int | None,
    seed: int,
) -> tuple[set[int], dict[int, tuple[str, str]]]:
    if per_category is None and budget is None:
        raise ConfigError("balanced selection needs --per-category or --budget")
    if per_category is not None and per_category < 0:
        raise ConfigError(f"--per-category must be >= 0 (got {per_category})")
    groups: dict[str, list[int]] = defaultdict(list)
    for i in positions:
        groups[category_of(items[i], balance_by)].append(i)
    rng = random.Random(seed)
    queues = {}
    dropped: dict[int, tuple[str, str]] = {}
    for name in sorted(groups):
        members = groups[name][:]
        rng.shuffle(members)
        if per_category is not None:
            for i in members[per_category:]:
                dropped[i] = ("category_full", f"{balance_by}={name!r} has its {per_category}")
            members = members[:per_category]
        queues[name] = members
    chosen: set[int] = set()
    turn = 0
    while any(queues.values()) and (budget is None or len(chosen) < budget):
        for name in sorted(queues):
            if queues[name] and (budget is None or len(chosen) < budget):
                chosen.add(queues[name].pop(0))
        turn += 1
    for members in queues.values():
        for i in members:
            dropped[i] = ("over_budget", f"budget {budget} already filled")
    return chosen, dropped


def _result(
    items: list[Record], chosen: set[int], dropped: dict[int, tuple[str, str]]
) -> tuple[list[Record], list[Rejection]]:
    selected = [r for i, r in enumerate(items) if i in chosen]
    return selected, [
        Rejection(items[i].id, *dropped[i], items[i].to_json()) for i in sorted(dropped)
    ]


def select_balanced(
    records: Sequence[RecordLike],
    budget: int | None = None,
    *,
    balance_by: str | None = None,
    per_category: int | None = None,
    seed: int = 0,
) -> tuple[list[Record], list[Rejection]]:
    """Up to ``per_category`` records per value of ``balance_by`` (see the module's doc)."""
    if not balance_by:
        raise ConfigError("--method balanced needs --balance-by FIELD")
    items = [_as_record(r) for r in records]
    chosen, dropped = _balanced(
        items, list(range(len(items))), budget, balance_by, per_category, seed
    )
    return _result(items, chosen, dropped)


def select_lima(
    records: Sequence[RecordLike],
    budget: int | None = None,
    *,
    balance_by: str | None = None,
    per_category: int | None = None,
    lima_length: bool = False,
    seed: int = 0,
) -> tuple[list[Record], list[Rejection]]:
    """LIMA's answer filters, then even sampling across ``balance_by`` (module's doc)."""
    items = [_as_record(r) for r in records]
    dropped: dict[int, tuple[str, str]] = {}
    passed: list[int] = []
    for i, record in enumerate(items):
        verdict = check_lima(last_pair(record)[1], lima_length=lima_length)
        if verdict.ok:
            passed.append(i)
        else:
            dropped[i] = (verdict.reason or "lima", verdict.detail or "")
    if balance_by:
        chosen, more = _balanced(items, passed, budget, balance_by, per_category, seed)
        dropped.update(more)
    else:
        chosen = set(passed if budget is None else passed[:budget])
        for i in passed[len(chosen) :]:
            dropped[i] = ("over_budget", f"budget {budget} already filled")
    return _result(items, chosen, dropped)
