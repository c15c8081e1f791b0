"""Scoring VaL probing answers by needle position: does a model use every part of a
long context?

An et al., 2024, "Make Your LLM Fully Utilize the Context" (arXiv 2404.16811, §4.1):
answers to the probes of ``evoforge probe build`` are scored with each task's metric
(:mod:`evoforge.probe.metrics`) and averaged per position bucket; the average over
buckets and the best-worst gap show position bias ("lost in the middle"). As in the
paper's table, the headline average and gap are means of the per-task figures; the
figures over all probes pooled are kept apart, under ``pooled``.
Reference: FILM-7B reaches an average of 85.9 and a best-worst gap of 13.9 (percent,
~32K contexts, over the three tasks); scores here run from 0 to 1.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import InputError
from evoforge.io.readers import iter_rows
from evoforge.probe.metrics import METRICS, score_prediction
from evoforge.probe.plot import plot_probe

REFERENCE = {"FILM-7B": {"average": 85.9, "gap": 13.9, "scale": "percent"}}
PREDICTION_KEYS = ("prediction", "output", "response")


def _jsonl(path: Path) -> Iterator[tuple[int, dict[str, Any]]]:
    """``(line number, object)`` for each non-blank line; a bad line raises InputError."""
    for item in iter_rows(path):
        if isinstance(item, InputError):
            raise item
        yield item


def _read_gold(path: Path) -> dict[str, dict[str, Any]]:
    probes: dict[str, dict[str, Any]] = {}
    for line_no, row in _jsonl(path):
        for field in ("id", "task", "gold", "bucket", "relative_position"):
            if field not in row:
                raise InputError(
                    "is missing (is this a probe file from build_probe?)",
                    path=str(path),
                    line=line_no,
                    field=field,
                )
        if row["task"] not in METRICS:
            raise InputError(
                f"{row['task']!r} is not a probe task ({', '.join(METRICS)})",
                path=str(path),
                line=line_no,
                field="task",
            )
        if not isinstance(row["bucket"], int) or row["bucket"] < 0:
            raise InputError(
                "must be a non-negative integer", path=str(path), line=line_no, field="bucket"
            )
        key = str(row["id"])
        if key in probes:
            raise InputError(f"id {key!r} is used twice", path=str(path), line=line_no, field="id")
        probes[key] = row
    if not probes:
        raise InputError("holds no probes", path=str(path))
    return probes


def _read_predictions(path: Path) -> dict[str, str | None]:
    predictions: dict[str, str | None] = {}
    for line_no, row in _jsonl(path):
        if "id" not in row:
            raise InputError("is missing", path=str(path), line=line_no, field="id")
        key = next((k for k in PREDICTION_KEYS if k in row), None)
        if key is None:
            raise InputError(
                f'has no "prediction" field (nor "output" or "response"); '
                f"found {', '.join(sorted(row)) or 'no fields'}",
                path=str(path),
                line=line_no,
            )
        value = row[key]
        if value is not None and not isinstance(value, str):
            raise InputError(
                f"must be a string, got {type(value).__name__}",
                path=str(path),
                line=line_no,
                field=key,
            )
        probe_id = str(row["id"])
        if probe_id in predictions:
            raise InputError(
                f"id {probe_id!r} is predicted twice", path=str(path), line=line_no, field="id"
            )
        predictions[probe_id] = value
    return predictions


def _summary(scored: list[tuple[dict[str, Any], float, bool]], buckets: int) -> dict[str, Any]:
    """Per-bucket means, their average and the best–worst gap (empty buckets left out)."""
    rows = []
    for b in range(buckets):
        scores = [score for probe, score, _ in scored if probe["bucket"] == b]
        rows.append(
            {
                "bucket": b,
                "range": [round(b / buckets, 6), round((b + 1) / buckets, 6)],
                "n": len(scores),
                "mean": sum(scores) / len(scores) if scores else None,
            }
        )
    means = [row["mean"] for row in rows if row["mean"] is not None]
    return {
        "n": len(scored),
        "missing": sum(missing for _, _, missing in scored),
        "mean": sum(score for _, score, _ in scored) / len(scored) if scored else None,
        "average": sum(means) / len(means) if means else None,
        "gap": max(means) - min(means) if means else None,
        "buckets": rows,
    }


def score_probe(
    pred_path: str | Path, gold_path: str | Path, *, plot_path: str | Path | None = None
) -> dict[str, Any]:
    """Score predictions on a probe file, by position bucket.

    ``pred_path`` is JSONL ``{"id", "prediction"}`` (``"output"`` or ``"response"``
    are read too); ``gold_path`` is the file :func:`build_probe_file` wrote. A probe
    with no prediction (or a null one) scores 0 and is counted in ``missing``;
    predictions for ids not in the gold file are counted in ``unknown_ids``.

    Returns ``n``, ``missing``, ``unknown_ids``, ``mean`` (over all probes),
    ``average`` and ``gap`` -- the paper's headline figures: the mean over tasks of
    each task's average over its non-empty buckets and of its best-minus-worst bucket
    gap, comparable with An et al.'s table --, ``tasks`` (per task: ``n``,
    ``missing``, ``mean``, ``average``, ``gap``, ``buckets`` with ``bucket``,
    ``range``, ``n``, ``mean``), ``pooled`` (``average``, ``gap`` and ``buckets``
    over every probe whatever its task: not the paper's figures; before issue 14
    these were the top-level ``average``/``gap``/``buckets``), ``reference`` and
    ``plot``. Scores are 0–1.
    For comparison, FILM-7B reaches an average of 85.9 and a gap of 13.9 (percent,
    ~32K contexts, over document/code/database; An et al., 2024, arXiv 2404.16811).
    With ``plot_path``, a PNG of the bucket means against relative position (one
    line per task) is written there.
    """
    gold_path, pred_path = Path(gold_path), Path(pred_path)
    probes = _read_gold(gold_path)
    predictions = _read_predictions(pred_path)
    buckets = max(
        max(int(p.get("buckets") or 0) for p in probes.values()),
        max(int(p["bucket"]) for p in probes.values()) + 1,
    )
    scored: list[tuple[dict[str, Any], float, bool]] = []
    for probe_id, probe in probes.items():
        prediction = predictions.get(probe_id)
        if prediction is None:
            scored.append((probe, 0.0, True))
        else:
            scored.append(
                (probe, score_prediction(probe["task"], prediction, probe["gold"]), False)
            )
    tasks = sorted({probe["task"] for probe in probes.values()})
    per_task = {
        task: _summary([item for item in scored if item[0]["task"] == task], buckets)
        for task in tasks
    }
    pooled = _summary(scored, buckets)
    averages = [t["average"] for t in per_task.values() if t["average"] is not None]
    gaps = [t["gap"] for t in per_task.values() if t["gap"] is not None]
    report = {
        "gold": str(gold_path),
        "predictions": str(pred_path),
        "n": pooled["n"],
        "missing": pooled["missing"],
        "mean": pooled["mean"],
        # The paper's headline (An et al., 2024, Table 2): means of the per-task figures.
        "average": sum(averages) / len(averages) if averages else None,
        "gap": sum(gaps) / len(gaps) if gaps else None,
        "unknown_ids": sum(probe_id not in probes for probe_id in predictions),
        "tasks": per_task,
        # Every probe in one set, whatever its task: not the paper's figures.
        "pooled": {key: pooled[key] for key in ("average", "gap", "buckets")},
        "reference": REFERENCE,
        "plot": None,
    }
    if plot_path is not None:
        report["plot"] = str(plot_probe(report, plot_path))
    return report
