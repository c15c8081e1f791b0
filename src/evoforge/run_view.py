"""Open a finished run in a notebook: :func:`open_run` reads an output (or its folder)
as pandas DataFrames, and follows one record from its seed to its final verdict.

    run = evoforge.open_run("out/eval.jsonl")
    run.rejected.groupby("reason").size()      # one row per line of eval.rejects.jsonl
    run.by_reason()                            # reason, count, share, steps, an example
    run.lineage(run.kept.id[0])                # seed -> each step -> final

The frames (``kept``, ``rejected``, ``funnel()``, ``by_reason()``) and their columns
are :class:`evoforge.io.run_frames.RunFrames`'s; ``RunSummary.to_pandas()`` gives the
same for the run just finished. :meth:`RunView.lineage` reads the folder the way the
report's sample browser does (:func:`evoforge.report.browser.browser_data`): the same
steps, texts and verdicts the browser shows.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.io.run_frames import RunFrames

LINEAGE_COLUMNS = ("step", "round", "prompt_id", "model", "text", "verdict", "scores")


class RunView(RunFrames):
    """One output of a run folder and the outputs beside it that share its records.

    Besides :class:`RunFrames`' ``kept``, ``rejected``, ``funnel()``, ``by_reason()``,
    ``to_dataset()`` and ``manifest``: :meth:`lineage`.
    """

    @functools.cached_property
    def _browser(self) -> tuple[dict[str, dict[str, Any]], dict[str, dict[str, float]]]:
        """Each record's browser detail, by id, and the scores any stage gave it."""
        from evoforge.report.browser import browser_data
        from evoforge.report.data import discover_stages
        from evoforge.report.trace import Lineage

        stages = discover_stages(self.out)
        data = browser_data(Lineage(stages), self.out.parent)
        details: dict[str, dict[str, Any]] = {}
        for detail in data.details:
            details.setdefault(detail["id"], detail)
        scores: dict[str, dict[str, float]] = {}
        for stage in stages:
            for item in stage.kept:
                if item.scores:
                    scores.setdefault(item.id, {}).update(item.scores)
        return details, scores

    def lineage(self, record_id: str) -> Any:
        """One record's steps, seed to final: ``step`` (``seed``, each operator applied,
        ``final``), ``round``, ``prompt_id`` (template id and version), ``model``,
        ``text`` (what the step made, where the record keeps it), ``verdict`` (on the
        final row: ``kept`` or ``rejected: REASON``, then each critic's or judge's
        verdict) and ``scores`` (on the final row: the scores any step gave it, e.g.
        ``deita_score``)."""
        import pandas as pd

        details, scores = self._browser
        detail = details.get(str(record_id))
        if detail is None:
            raise KeyError(f"no record {record_id!r} in {self.out.parent} (kept or rejected)")
        fields = dict(detail.get("fields") or [])
        rows = []
        for step in detail["lineage"]:
            text = step.get("text")
            if text is None and step.get("field"):
                text = fields.get(step["field"])
            rows.append({
                "step": step.get("label"), "round": step.get("round"),
                "prompt_id": step.get("prompt_id"), "model": step.get("model"),
                "text": text, "verdict": None, "scores": None,
            })  # fmt: skip
        final = rows[-1]
        final["text"] = None
        verdicts = [  # [who, verdict] or [who, verdict, reason] (report.browser)
            f"{row[0]}: {row[1]}" + (f" ({row[2]})" if len(row) > 2 else "")
            for row in detail.get("verdicts") or []
        ]
        final["verdict"] = "; ".join([str(detail["lineage"][-1].get("text")), *verdicts])
        final["scores"] = scores.get(str(record_id)) or None
        return pd.DataFrame(rows, columns=list(LINEAGE_COLUMNS))


def open_run(path: str | os.PathLike[str]) -> RunView:
    """The run whose output is ``path`` (the output file, or its rejects, manifest or
    journal), or the run in folder ``path``: the folder's one output, or its one
    generation output (``answer``, ``evolve``, ``rag``, ``in2``) when later steps
    (validate, dedup, select) wrote theirs beside it."""
    from evoforge.report.data import discover_stages

    path = Path(path)
    if not path.exists():
        raise InputError("no such file or directory", path=str(path))
    stages = discover_stages(path)
    if not stages:
        raise InputError("holds no evoforge output (no manifest or rejects beside it)",
                         path=str(path))  # fmt: skip
    if path.is_file():
        return RunView(stages[0].out)
    if len(stages) > 1:
        generated = [s for s in stages if s.role == "generate"]
        if len(generated) != 1:
            names = ", ".join(s.out.name for s in stages)
            raise ConfigError(
                f"open_run({str(path)!r}): the folder holds {len(stages)} outputs ({names}); "
                "name the one to open"
            )
        stages = generated
    return RunView(stages[0].out)
