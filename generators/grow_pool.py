"""What every ``grow`` method shares: the pool selector that makes the output exact-N
and free of near-duplicates, and the small text helpers of their filters.

:class:`GrowSelector` runs at each pass's final write (see
:mod:`evoforge.engine.final_write`), record by record in journal order: an instruction
whose ROUGE-L F with the pool (the seeds, then every instruction kept before it) is at
or above the threshold is dropped as ``near_duplicate`` with the id it ``lost_to``;
past N the rest are ``surplus``. Its index after a pass is the pool the next pass
prompts from and pre-filters against.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Iterable
from typing import Any

from evoforge.generators.rouge import THRESHOLD, NearDuplicateIndex, tokenize

_PUNCTUATION_START = re.compile(r"^[^\w\"'(\[¿¡]")


def word_count(text: str) -> int:
    """Words as Self-Instruct counts them (whitespace-separated); a text in a script
    without spaces counts its ``\\w`` tokens instead."""
    return max(len(text.split()), len(tokenize(text)) if not text.isascii() else 0)


def starts_with_punctuation(text: str) -> bool:
    return bool(_PUNCTUATION_START.match(text.strip()))


def grow_meta(record: dict[str, Any]) -> dict[str, Any]:
    return (record.get("meta") or {}).get("grow") or {}


class GrowSelector:
    """Exactly ``n`` records, none within ROUGE-L ``threshold`` of the pool.

    ``pool``: the seeds, ``(id, instruction)``. ``upto_pass``: records of a later pass
    are left out (``later_pass``), so the pool after pass k is the same on a resumed
    run, whose journal may already hold pass k+1. ``kept`` counts by method, as the
    exact-N passes read it; ``generated`` lists what was kept, ``(id, instruction)``."""

    def __init__(
        self,
        method: str,
        n: int,
        pool: Iterable[tuple[str, str]] = (),
        *,
        threshold: float = THRESHOLD,
        upto_pass: int | None = None,
    ) -> None:
        self.method = method
        self.n = n
        self.index = NearDuplicateIndex(threshold)
        self.index.extend(pool)
        self.upto_pass = upto_pass
        self.kept: Counter[str] = Counter()
        self.generated: list[tuple[str, str]] = []

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | tuple[str, str, dict] | None:
        meta = grow_meta(record)
        if self.upto_pass is not None and int(meta.get("pass", 0)) > self.upto_pass:
            return "later_pass", f"made in pass {meta.get('pass')}, after pass {self.upto_pass}"
        instruction = str(record.get("instruction", ""))
        tokens = tokenize(instruction)
        match = self.index.closest(tokens)
        if match is not None:
            detail = (
                f"ROUGE-L F {match.score:.3f} >= {self.index.threshold} with {match.id} "
                "(Self-Instruct's near-duplicate rule)"
            )
            return "near_duplicate", detail, {"lost_to": match.id}
        if self.kept[self.method] >= self.n:
            return "surplus", f"{self.method} already has its {self.n} records"
        self.index.add(record["id"], tokens)
        self.kept[self.method] += 1
        self.generated.append((record["id"], instruction))
        return None
