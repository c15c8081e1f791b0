"""A plot of VaL probing scores against the needle's relative position."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any


def plot_probe(report: dict[str, Any], out: str | Path) -> Path:
    """Write a PNG of bucket mean score against relative needle position (atomic)."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    out = Path(out)
    figure = Figure(figsize=(8, 4.5), dpi=100)
    FigureCanvasAgg(figure)  # no pyplot, no global backend switch
    axes = figure.add_subplot()
    for task, summary in report["tasks"].items():
        points = [(sum(row["range"]) / 2, row["mean"]) for row in summary["buckets"] if row["n"]]
        axes.plot(
            [x for x, _ in points],
            [y for _, y in points],
            marker="o",
            label=f"{task} (avg {summary['average']:.3f}, gap {summary['gap']:.3f})",
        )
    axes.set_xlim(0, 1)
    axes.set_ylim(-0.02, 1.02)
    axes.set_xlabel("relative position of the needle in the context")
    axes.set_ylabel("score")
    average, gap = report["average"], report["gap"]
    axes.set_title(
        f"VaL probing: average {average:.3f}, best–worst gap {gap:.3f} (means over tasks)"
    )
    axes.grid(alpha=0.3)
    axes.legend(loc="lower left")
    figure.tight_layout()
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(f".{out.name}.tmp-{os.getpid()}")
    try:
        figure.savefig(tmp, format="png")
        os.replace(tmp, out)
    finally:
        tmp.unlink(missing_ok=True)
    return out
