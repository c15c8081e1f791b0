"""``report``: report.html (funnel, rejection reasons, plots, every seed's fate) and
summary.md of a run's outputs (see :mod:`evoforge.report`)."""

from __future__ import annotations

from pathlib import Path


def report(
    run_output: str | Path, *, redact: bool = False, docs: list[str | Path] | None = None
) -> dict[str, Path]:
    """Write the report of a run's output file or folder; the paths written. ``redact``
    leaves source document texts out of the page; ``docs``: the RAG documents folder."""
    from evoforge.report import write_report

    return write_report(run_output, redact=redact, docs=docs)
