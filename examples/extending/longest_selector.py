"""A selector: ``longest`` keeps the ``budget`` records with the longest answers.

"Long Is More for Alignment" (Zhao et al., 2024, arXiv 2402.04833) finds that the
1,000 instructions with the longest responses are a strong baseline for
instruction tuning. A selector is a function ``(records, budget, *, seed=0) ->
(selected, dropped)``: records in input order, each dropped one a ``Rejection``
with its reason. Register it, then name it::

    from evoforge.registry import register
    register("selector", "longest", select_longest)

    evoforge select data.jsonl --out best.jsonl --method longest --budget 1000
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from evoforge.records import Record
from evoforge.steps import Rejection
from evoforge.validators.checks import sides


def select_longest(
    records: Sequence[Record | dict[str, Any]], budget: int | None, *, seed: int = 0
) -> tuple[list[Record], list[Rejection]]:
    """Longest answers first (ties: input order); ``seed`` is unused, the order is exact."""
    items = [r if isinstance(r, Record) else Record.from_json(r) for r in records]
    lengths = [len(sides(record.to_json())[1]) for record in items]
    ranked = sorted(range(len(items)), key=lambda i: -lengths[i])
    chosen = set(ranked[: budget if budget is not None else len(items)])
    selected = [record for i, record in enumerate(items) if i in chosen]
    dropped = [
        Rejection.of(
            record,
            "not_selected",
            f"answer of {lengths[i]} characters is not among the {len(chosen)} longest",
            step="selector.longest",
        )  # fmt: skip
        for i, record in enumerate(items)
        if i not in chosen
    ]
    return selected, dropped
