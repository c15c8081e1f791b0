"""``probe``: VaL probing sets (An et al., 2024): long contexts with one needle each at
positions spread evenly, and their scores by position (lost-in-the-middle)."""

from __future__ import annotations

from collections.abc import Iterable
from pathlib import Path
from typing import Any

from evoforge.io.lock import holds_run_lock
from evoforge.options import ProbeOptions


@holds_run_lock
def build(
    task: str,
    corpus: Iterable[str | Path],
    n: int,
    out: str | Path,
    *,
    probe: ProbeOptions | None = None,
) -> dict[str, Any]:
    """Build ``n`` probes of ``task`` (document, code, database) into ``out``; their stats."""
    from evoforge.generators.probing import build_probe_file

    probe = probe or ProbeOptions()
    return build_probe_file(task, [str(p) for p in corpus], n, out,
                            context_tokens=probe.context_tokens, buckets=probe.buckets,
                            seed=probe.seed)  # fmt: skip


def score(
    pred: str | Path, gold: str | Path, *, plot: str | Path | None = None
) -> tuple[dict[str, Any], Path]:
    """Score predictions per position bucket; the scores and the plot written (by default
    beside ``pred``)."""
    from evoforge.probe import score_probe

    plot = Path(plot) if plot else Path(pred).with_suffix(".png")
    return score_probe(pred, gold, plot_path=plot), plot
