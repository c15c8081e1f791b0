"""What each critic said about a sample, kept compact in the record's ``meta.critics``.

A critic speaks twice: its screen (no model call; Grounded's gives the share of the
reference's content words found in the contexts as its score) and its judge (a model
call; a binary judge gives its one-sentence reason, the equality judge its reply, a
rubric its score and reason). :class:`Verdicts` merges both into one entry per critic,
``{"ok": bool, "score": float, "reason": str}``, ``score`` and ``reason`` only when the
critic gave them, the reason cut to :data:`REASON_CHARS` characters. The report's sample
browser shows them in a record's view.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from evoforge.validators.base import Verdict

REASON_CHARS = 200


@dataclass
class Verdicts:
    """Each critic's verdicts on one sample, in the order the critics ran."""

    by_critic: dict[str, dict[str, Any]] = field(default_factory=dict)

    def add(self, name: str, verdict: Verdict) -> None:
        """Merge ``verdict`` into ``name``'s entry: a judge's score and reason come after
        (and win over) its screen's; a failure stays a failure."""
        entry = self.by_critic.setdefault(name, {"ok": True})
        entry["ok"] = bool(entry["ok"] and verdict.ok)
        if verdict.score is not None:
            entry["score"] = round(float(verdict.score), 4)
        said = " ".join(verdict.detail.split())
        if said:
            entry["reason"] = said if len(said) <= REASON_CHARS else said[: REASON_CHARS - 1] + "…"

    def compact(self) -> dict[str, dict[str, Any]]:
        """The entries as stored in ``meta.critics.verdicts``."""
        return {name: dict(entry) for name, entry in self.by_critic.items()}
