"""A run's final write: the journal's rows, in input order, through the one writer.

The journal holds, per seed, its accepted records, its rejections and what each
step counted (see :func:`seed_counts`). At the end of every run (complete or
stopped) the whole journal is written again: records to ``OUT``, rejections to
``OUT.rejects.jsonl``, the step counts summed into the manifest's ``steps``. A
resumed run therefore writes and counts exactly what an uninterrupted one does.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from evoforge.io.outputs import OutputWriter, StepCounts
from evoforge.steps import Rejection, SetResult

# The steps every run counts, before and after its task (named after the command).
INPUT_STEP = "input"  # seeds read: bad rows and repeated ids are rejected here
SCHEMA_STEP = "schema"  # records the task made, checked against their kind's schema
SELECT_STEP = "select"  # the run's selector, at the final write (quotas, duplicates)
INPUT_REASONS = frozenset({"bad_seed", "duplicate_id"})


class Selector(Protocol):
    """Decides, record by record in input order at the end of a run, what is written.

    ``drop`` returns ``None`` to keep a record, or ``(reason, detail)`` to move it
    to the rejects file (e.g. ``surplus`` past a quota, ``duplicate``), or
    ``(reason, detail, {"lost_to": id})`` to name the record a duplicate lost to. A fresh
    selector sees the whole journal each time, so its decisions are the same on
    every run over the same journal.
    """

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | None: ...


class RecordSelector:
    """Base of the exact-N planners' selectors (rag's ``RagSelector``, in2's
    ``In2Selector``): a set step that decides record by record, in input order.

    The final write streams the journal through :meth:`drop` (memory stays flat);
    :meth:`run` is the same decisions over a whole set, as a
    :class:`~evoforge.steps.SetStep`: ``SetResult(kept, rejected)``, each drop a
    :class:`~evoforge.steps.Rejection` with its record. Decisions depend on what was
    kept before, so use a fresh selector for each pass over a set."""

    def drop(self, record: dict[str, Any]) -> tuple[str, str] | None:
        raise NotImplementedError

    def rejection(self, record: dict[str, Any]) -> Rejection | None:
        """:meth:`drop`'s decision as a Rejection; ``None`` keeps the record."""
        return _rejection(record, self.drop(record))

    def run(self, records: Iterable[dict[str, Any]]) -> SetResult:
        result = SetResult()
        for record in records:
            rejection = self.rejection(record)
            if rejection is None:
                result.kept.append(record)
            else:
                result.rejected.append(rejection)
        return result


def _rejection(record: dict[str, Any], dropped: tuple[Any, ...] | None) -> Rejection | None:
    # (reason, detail), or (reason, detail, {"lost_to": id, ...}) for a duplicate
    if dropped is None:
        return None
    where = dropped[2] if len(dropped) > 2 else {}
    return Rejection(record["id"], dropped[0], dropped[1], record, **where)


def derivable(task_reasons: Iterable[str]) -> bool:
    """Whether a seed's counts follow from its journal row alone (see :func:`tally_row`):
    true unless the task itself used a reason the row reads as the input's or the schema
    check's. Such rows, and rows whose task counted steps of its own, keep their counts."""
    return not any(r in INPUT_REASONS or r == "schema_invalid" for r in task_reasons)


def seed_counts(
    task_step: str,
    *,
    made: int = 0,
    task_reasons: Iterable[str] = (),
    schema_reasons: Iterable[str] = (),
) -> StepCounts:
    """One seed's counts at the runner's own steps: read, run through the task (``made``
    records, ``task_reasons`` rejections), and the schema check of what it made."""
    schema_reasons = list(schema_reasons)
    counts = StepCounts()
    counts.count(INPUT_STEP, seen=1, kept=1)
    counts.count(task_step, seen=1, kept=made, rejected=task_reasons)
    counts.count(SCHEMA_STEP, seen=made, kept=made - len(schema_reasons), rejected=schema_reasons)
    return counts


def tally_row(steps: StepCounts, row: dict[str, Any], task_step: str) -> None:
    """Add a journal row's step counts to ``steps``: the ``steps`` it kept, or the counts
    its records and rejections imply (most rows: the runner journals counts only where
    they cannot be derived, which keeps them off the scheduler's hot path; rows an older
    evoforge wrote have none either)."""
    if "steps" in row:
        steps.add(row["steps"])
        return
    records, rejections = row["records"], row["rejections"]
    if not records and len(rejections) == 1 and rejections[0]["reason"] in INPUT_REASONS:
        steps.count(INPUT_STEP, seen=1, rejected=(str(rejections[0]["reason"]),))
        return
    task_reasons = [str(r["reason"]) for r in rejections if r["reason"] != "schema_invalid"]
    schema = len(rejections) - len(task_reasons)
    made = len(records) + schema
    steps.count(INPUT_STEP, seen=1, kept=1)
    steps.count(task_step, seen=1, kept=made, rejected=task_reasons)
    steps.count(SCHEMA_STEP, seen=made, kept=len(records), rejected=["schema_invalid"] * schema)


@dataclass
class FinalWrite:
    """What the final write wrote: counts by file, and the steps' counts."""

    accepted: int = 0
    rejected: int = 0
    rejected_by_reason: dict[str, int] = field(default_factory=dict)
    steps: dict[str, Any] = field(default_factory=dict)


def write_journal(
    rows: Iterable[dict[str, Any]],
    output: OutputWriter,
    *,
    task_step: str,
    selector: Selector | None = None,
) -> FinalWrite:
    """Write the journal's ``rows`` (in input order) with ``output`` (already open):
    each record kept unless ``selector`` drops it, then the seed's rejections."""
    steps = StepCounts([INPUT_STEP, task_step, SCHEMA_STEP])
    seen = 0
    dropped_because: Counter[str] = Counter()  # not a list: memory stays flat
    for row in rows:
        tally_row(steps, row, task_step)
        for data in row["records"]:
            rejection = _rejection(data, selector.drop(data)) if selector is not None else None
            if rejection is None:
                output.keep(data)
            else:
                output.reject(rejection)
                dropped_because[rejection.reason] += 1
        seen += len(row["records"])
        for rejection in row["rejections"]:
            # Details were redacted when journaled; the record is data, kept as is.
            output.reject(rejection)
    if selector is not None:
        kept = seen - dropped_because.total()
        steps.count(SELECT_STEP, seen=seen, kept=kept, rejected=dropped_because.elements())
    return FinalWrite(
        accepted=output.kept,
        rejected=output.rejected,
        rejected_by_reason=dict(output.rejected_by_reason.most_common()),
        steps=steps.to_json(),
    )
