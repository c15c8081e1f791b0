"""The report's charts: matplotlib figures drawn off pyplot and inlined as SVG text.

Each function takes the numbers of one chart and returns its ``<svg>`` element, ready
to sit in the page as it is: text stays text (``svg.fonttype`` none), ids are salted
the same way every time and the date is left out, so the same run draws the same
bytes, and the page needs no network.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from collections.abc import Iterator
from typing import Any

COLORS = {"bar": "#4C72B0", "drop": "#C44E52", "kept": "#55A868", "before": "#F0B48A"}


@contextlib.contextmanager
def _figure(width: float, height: float) -> Iterator[Any]:
    """A matplotlib Figure outside pyplot (no global figure state), SVG text kept as text."""
    import matplotlib
    from matplotlib.figure import Figure

    style = {"svg.fonttype": "none", "svg.hashsalt": "evoforge", "font.size": 9}
    with matplotlib.rc_context(style), warnings.catch_warnings():
        # Labels come from the data (reasons, file names); a glyph DejaVu lacks is not an error.
        warnings.filterwarnings("ignore", message="Glyph .* missing from")
        yield Figure(figsize=(width, height), layout="constrained")


def _svg(fig: Any) -> str:
    buffer = io.StringIO()
    fig.savefig(buffer, format="svg", metadata={"Date": None})
    text = buffer.getvalue()
    return text[text.index("<svg") :]


def _height(n: int) -> float:
    return min(12.0, 0.9 + 0.26 * max(n, 2))


def _whole_numbers(axis: Any) -> None:
    from matplotlib.ticker import MaxNLocator

    axis.set_major_locator(MaxNLocator(integer=True))


def funnel_svg(steps: list[tuple[str, int]], title: str) -> str:
    """A funnel: one bar per step, top to bottom, each the records left after it."""
    return barh_svg(steps, "records", title=title, color=COLORS["bar"])


def barh_svg(
    pairs: list[tuple[str, int]], xlabel: str, *, title: str = "", color: str = COLORS["drop"]
) -> str:
    """Horizontal bars, one per ``(label, count)`` pair, the first on top, counts labelled."""
    with _figure(8, _height(len(pairs))) as fig:
        ax = fig.add_subplot()
        y = list(range(len(pairs)))[::-1]
        bars = ax.barh(y, [v for _, v in pairs], color=color)
        ax.bar_label(bars, padding=3)
        ax.set_yticks(y, [label for label, _ in pairs])
        ax.set_xlim(0, max([v for _, v in pairs] + [1]) * 1.15)
        _whole_numbers(ax.xaxis)
        ax.set_xlabel(xlabel)
        if title:
            ax.set_title(title)
        return _svg(fig)


def bar_svg(pairs: list[tuple[str, int]], xlabel: str, ylabel: str) -> str:
    """Upright bars, one per ``(label, count)`` pair, counts labelled."""
    with _figure(6, 2.8) as fig:
        ax = fig.add_subplot()
        bars = ax.bar([label for label, _ in pairs], [v for _, v in pairs], color=COLORS["bar"])
        ax.bar_label(bars, padding=2)
        _whole_numbers(ax.yaxis)
        ax.set_xlabel(xlabel)
        ax.set_ylabel(ylabel)
        return _svg(fig)


def stacked_svg(
    labels: list[str],
    series: list[tuple[str, list[int]]],
    title: str,
    xlabel: str,
    colors: tuple[str, str] = (COLORS["bar"], COLORS["before"]),
) -> str:
    """Horizontal bars, one per label, each split into the named ``series`` (stacked)."""
    with _figure(8, _height(len(labels)) + 0.3) as fig:
        ax = fig.add_subplot()
        y = list(range(len(labels)))[::-1]
        left = [0] * len(labels)
        for (name, values), color in zip(series, colors, strict=False):
            ax.barh(y, values, left=left, label=name, color=color)
            left = [a + b for a, b in zip(left, values, strict=True)]
        ax.set_yticks(y, labels)
        _whole_numbers(ax.xaxis)
        ax.set_xlabel(xlabel)
        ax.set_title(title)
        fig.legend(loc="outside right upper", fontsize=8, frameon=False)
        return _svg(fig)


def histograms_svg(
    panels: list[tuple[str, list[float], list[float] | None]],
    title: str,
    bins: int | None = None,
) -> str:
    """One histogram per panel; a panel with a second series ("after", a subset of
    "before") draws it solid over the first, so what was dropped shows as the rest."""
    import numpy as np

    with _figure(min(12.0, 4.0 * len(panels)), 2.8) as fig:
        axes = fig.subplots(1, len(panels), squeeze=False)[0]
        for ax, (label, before, after) in zip(axes, panels, strict=True):
            data = np.asarray(before, dtype=float)
            edges = np.histogram_bin_edges(data, bins=bins or min(30, max(5, len(set(before)))))
            if after is not None:
                ax.hist(before, bins=edges, color=COLORS["before"], label="before")
                ax.hist(after, bins=edges, color=COLORS["bar"], label="after")
            else:
                ax.hist(before, bins=edges, color=COLORS["bar"])
            _whole_numbers(ax.yaxis)
            ax.set_xlabel(label)
            ax.set_ylabel("records")
        if any(after is not None for _, _, after in panels):
            fig.legend(*axes[0].get_legend_handles_labels(), loc="outside right upper",
                       fontsize=8, frameon=False)  # fmt: skip
        fig.suptitle(title)
        return _svg(fig)
