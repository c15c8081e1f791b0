"""The order seeds run in: a task's groups together (issue 19).

A task may have a ``group_key(seed)`` method; :meth:`evoforge.engine.runner.Run._numbered`
and the Ray executor's dealing use :func:`grouped` so the seeds of one group run one
after another (and, on Ray, in one shard).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

from evoforge.errors import InputError

__all__ = ["grouped"]


def grouped(
    numbered: Iterable[tuple[int, Any]], group_key: Callable[[Any], str | None]
) -> list[tuple[int, Any]]:
    """``(position, seed)`` pairs with the seeds of one group next to each other, each
    group where its first seed is; a seed whose key is ``None`` (or a bad input row) is
    a group of its own. Positions do not change, so the output's order, a record's
    ``ctx.seq`` and what an exact-N selector keeps stay the input's: only the order the
    seeds run in changes. ``rag`` groups the samples planned over one chunk, whose calls
    all open with that chunk, so they run while a provider's prefix cache still holds
    it (issue 19). Reads all the seeds first: for planned inputs, not a stream."""
    groups: dict[Any, list[tuple[int, Any]]] = {}
    for position, item in numbered:
        key = None if isinstance(item, InputError) else group_key(item)
        groups.setdefault(("key", key) if key is not None else ("at", position), []).append(
            (position, item)
        )
    return [pair for group in groups.values() for pair in group]
