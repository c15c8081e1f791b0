"""Calls and tokens per accepted sample: the manifest's ``efficiency`` block (issue 19).

What a synthetic data set costs is calls and tokens per sample that is kept, not per
call: a check that throws a sample away after three judges ran on it costs as much as
one that keeps it. The block is computed from the manifest's ``usage`` (per operator:
``calls``, ``prompt_tokens``, ``completion_tokens``, and ``cached_tokens`` where a
provider reported prefix-cache hits) and the run's accepted count; the report shows it
(``report.efficiency``). Cache hits of evoforge's own response cache are not calls and
cost nothing, so they are not counted.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

FIELDS = (
    "accepted", "calls", "calls_per_accepted", "prompt_tokens_per_accepted",
    "completion_tokens_per_accepted", "cached_prompt_tokens", "cached_share",
)  # fmt: skip


def efficiency_block(usage: Mapping[str, Mapping[str, Any]], accepted: int) -> dict[str, Any]:
    """The ``efficiency`` block: totals over the operators, per accepted sample (``None``
    when nothing was accepted), and the share of prompt tokens the provider's prefix
    cache served (``None`` with no prompt tokens)."""
    calls = sum(int(op.get("calls", 0)) for op in usage.values())
    prompt = sum(int(op.get("prompt_tokens", 0)) for op in usage.values())
    completion = sum(int(op.get("completion_tokens", 0)) for op in usage.values())
    cached = sum(int(op.get("cached_tokens", 0)) for op in usage.values())

    def per(total: int) -> float | None:
        return round(total / accepted, 2) if accepted else None

    return {
        "accepted": accepted,
        "calls": calls,
        "calls_per_accepted": per(calls),
        "prompt_tokens_per_accepted": per(prompt),
        "completion_tokens_per_accepted": per(completion),
        "cached_prompt_tokens": cached,
        "cached_share": round(cached / prompt, 4) if prompt else None,
    }
