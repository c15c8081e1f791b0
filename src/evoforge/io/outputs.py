"""The one output writer: kept records, rejects with their reasons, and the manifest.

In the spirit of datatrove's exclusion writer, nothing a step drops is lost: every
rejection goes to ``OUT.rejects.jsonl`` (one ``Rejection.to_json()`` a line) beside the
records kept in ``OUT``, and ``OUT.manifest.json`` says what was made and how (see
:mod:`evoforge.io.layout` for the names). Each file is written to a temporary beside
its target and renamed into place, so a reader (or a killed run) never leaves half a
file; the rejects are committed before the records, the manifest last::

    with OutputWriter(out) as output:
        for record in kept:
            output.keep(record)
        for rejection in dropped:
            output.reject(rejection)
    output.write_manifest({"command": "dedup", **output.counts(), ...})

:class:`StepCounts` is what each step saw: records in, kept, and rejected by reason.
The runner keeps a seed's counts in its journal row, so a resumed run's counts equal
an uninterrupted one's; the manifest carries them as ``"steps"``.
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from collections.abc import Callable, Iterable
from pathlib import Path
from types import TracebackType
from typing import Any

from evoforge.errors import redact
from evoforge.io.disk import failed_write
from evoforge.io.layout import output_paths
from evoforge.io.writers import RecordWriter, atomic_output, format_for, open_writer


def write_pacer() -> Callable[[], None]:
    """Called after each line of a final write: ``EVOFORGE_TEST_SLOW_WRITE=SECONDS``
    pauses there, so the reliability suite can kill a run in the middle of it. Read once
    per file, not once per record."""
    pause = float(os.environ.get("EVOFORGE_TEST_SLOW_WRITE") or 0)
    return (lambda: time.sleep(pause)) if pause else (lambda: None)


def write_manifest(
    path: Path, data: dict[str, Any], *, mask: bool = True, ascii_only: bool = False
) -> None:
    """``data`` as indented JSON at ``path``, atomically. ``mask`` hides credentials
    (keys, URL passwords) a config may quote; ``ascii_only`` escapes non-ASCII text, as
    the dedup, select and recipe manifests always have."""
    text = json.dumps(data, indent=2, ensure_ascii=ascii_only, default=str)
    if mask:
        text = redact(text)
    paced = write_pacer()
    with atomic_output(path) as fh:
        for line in text.splitlines(keepends=True):
            fh.write(line)
            paced()
        fh.write("\n")


def update_manifest(path: Path, extra: dict[str, Any]) -> None:
    """Add a driver's findings (coverage, shortfall, ...) to a written manifest, atomically."""
    data = json.loads(path.read_text("utf-8"))
    data.update(extra)
    write_manifest(path, data)


class StepCounts:
    """Per step, in the order the steps were first counted: records in, kept, and
    rejected by reason. Adds up across seeds, runs and journal rows (:meth:`add`).
    Plain dicts, not Counters: the final write adds every journal row."""

    def __init__(self, steps: Iterable[str] = ()) -> None:
        self._seen: dict[str, int] = {}
        self._kept: dict[str, int] = {}
        self._rejected: dict[str, dict[str, int]] = {}
        for step in steps:
            self._step(step)

    def _step(self, step: str) -> None:
        if step not in self._seen:
            self._seen[step] = self._kept[step] = 0
            self._rejected[step] = {}

    def count(
        self, step: str, *, seen: int = 0, kept: int = 0, rejected: Iterable[str] = ()
    ) -> None:
        """``seen`` records went into ``step``; ``kept`` came out; one reason per rejection."""
        self._step(step)
        self._seen[step] += seen
        self._kept[step] += kept
        by_reason = self._rejected[step]
        for reason in rejected:
            by_reason[reason] = by_reason.get(reason, 0) + 1

    def add(self, counts: dict[str, Any]) -> None:
        """Add counts in :meth:`to_json`'s shape (a journal row's, another run's)."""
        for step, entry in counts.items():
            self.count(step, seen=entry["in"], kept=entry["kept"])
            by_reason = self._rejected[step]
            for reason, n in entry["rejected_by_reason"].items():
                by_reason[reason] = by_reason.get(reason, 0) + n

    def __bool__(self) -> bool:
        return bool(self._seen)

    def to_json(self) -> dict[str, dict[str, Any]]:
        # Most frequent reason first, ties in first-seen order (as Counter.most_common).
        return {
            step: {
                "in": self._seen[step],
                "kept": self._kept[step],
                "rejected": sum(self._rejected[step].values()),
                "rejected_by_reason": dict(
                    sorted(self._rejected[step].items(), key=lambda item: -item[1])
                ),
            }
            for step in self._seen
        }


class OutputWriter:
    """The files of one output ``out``: kept records (in ``fmt``, by default the one
    ``out``'s suffix names), rejects and the manifest.

    Use it as a context manager (on an error inside the block no file is replaced), or,
    where the writing spans a function, :meth:`open`, then :meth:`close` or :meth:`abort`.
    """

    def __init__(
        self, out: str | os.PathLike[str], *, fmt: str | None = None, paced: bool = False
    ) -> None:
        self.paths = output_paths(Path(out))
        self.format = format_for(self.paths["out"], fmt)
        self.kept = 0
        self.rejected = 0
        self.rejected_by_reason: Counter[str] = Counter()
        self._paced = write_pacer() if paced else (lambda: None)
        self._records: RecordWriter | None = None
        self._rejects: RecordWriter | None = None

    def open(self) -> OutputWriter:
        self.paths["out"].parent.mkdir(parents=True, exist_ok=True)
        self._records = open_writer(self.paths["out"], self.format)
        try:
            self._rejects = open_writer(self.paths["rejects"], "jsonl")
        except BaseException:
            self._records.abort()
            raise
        return self

    def keep(self, record: Any) -> None:
        """Write a kept record (a dict, or anything with ``to_json()``)."""
        assert self._records is not None, "open the OutputWriter first"
        with failed_write(self.paths["out"]):
            self._records.write(record if isinstance(record, dict) else record.to_json())
        self.kept += 1
        self._paced()

    def reject(self, rejection: Any) -> None:
        """Write a rejection (a ``Rejection`` or its ``to_json()`` dict) to the rejects."""
        assert self._rejects is not None, "open the OutputWriter first"
        data = rejection if isinstance(rejection, dict) else rejection.to_json()
        with failed_write(self.paths["rejects"]):
            self._rejects.write(data)
        self.rejected += 1
        self.rejected_by_reason[str(data["reason"])] += 1
        self._paced()

    def close(self) -> None:
        """Put the rejects, then the records, in place of the old files."""
        assert self._records is not None and self._rejects is not None
        try:
            with failed_write(self.paths["rejects"]):
                self._rejects.close()
        except BaseException:
            self._records.abort()
            raise
        with failed_write(self.paths["out"]):
            self._records.close()

    def abort(self) -> None:
        """Drop what was written; the old files stay as they were."""
        for writer in (self._rejects, self._records):
            if writer is not None:
                writer.abort()

    def __enter__(self) -> OutputWriter:
        return self.open()

    def __exit__(
        self,
        kind: type[BaseException] | None,
        error: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        if kind is None:
            self.close()
        else:
            self.abort()

    @property
    def files(self) -> list[Path]:
        """The data files written (``ragas`` may add a multi-turn sibling to ``out``)."""
        return self._records.files if self._records is not None else [self.paths["out"]]

    def counts(self) -> dict[str, Any]:
        """What was written: kept, rejected, and rejected by reason (most first)."""
        return {
            "kept": self.kept,
            "rejected": self.rejected,
            "rejected_by_reason": dict(self.rejected_by_reason.most_common()),
        }

    def step_counts(self, step: str) -> dict[str, Any]:
        """What was written as one set step's counts (every record in was kept or
        rejected), in the shape of a manifest's ``steps``."""
        counts = StepCounts()
        counts.count(
            step,
            seen=self.kept + self.rejected,
            kept=self.kept,
            rejected=self.rejected_by_reason.elements(),
        )
        return counts.to_json()

    def write_manifest(self, manifest: dict[str, Any], **options: Any) -> Path:
        """Write ``manifest`` beside the output (see :func:`write_manifest` for options)."""
        write_manifest(self.paths["manifest"], manifest, **options)
        return self.paths["manifest"]


def write_outputs(
    out: str | os.PathLike[str],
    kept: Iterable[Any],
    rejected: Iterable[Any],
    *,
    fmt: str | None = None,
) -> OutputWriter:
    """Write whole lists of kept records and rejections beside ``out``; the returned
    writer's :meth:`~OutputWriter.counts` and :meth:`~OutputWriter.write_manifest`
    finish the job."""
    with OutputWriter(out, fmt=fmt) as output:
        for record in kept:
            output.keep(record)
        for rejection in rejected:
            output.reject(rejection)
    return output
