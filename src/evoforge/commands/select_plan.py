"""``select --dry-run`` of the model-signal methods (``ifd``, ``mining``,
``memorisation``): what scoring would cost, without loading the scorer model.

A dry run simulates the LLM calls on a counting model (:mod:`evoforge.dry_run`), but a
scorer model's forward passes are local compute that a simulation cannot stand in for:
running them would be the real run. So the plan counts them instead. It builds the
real scorer (the model object loads its weights lazily, so nothing is loaded), reads
every record once for its cache key, looks the keys up in the score cache where one
exists, and counts the sequences and batched forward passes the rest would need. The
LLM parts (``mining --judge``, memorisation's paraphrased templates) still run on the
counting model, so their calls are in the plan's table.
"""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any

from evoforge.io.readers import read_evoforge_records
from evoforge.options import EngineOptions, SelectOptions


def is_simulated(model: Any) -> bool:
    """Whether ``model`` is a dry run's counting model."""
    return bool(getattr(model, "simulated", False))


def scoring_plan(
    source: Any, scorer: Any, selection: SelectOptions, options: EngineOptions, budget: int | None
) -> dict[str, Any]:
    """The report a dry run of a model-signal ``select`` returns (see the module
    docstring): records, how many the score cache already holds, and the sequences and
    forward passes the others would cost; ``selected`` is at most the budget."""
    keys = [scorer.key(record) for record in read_evoforge_records(source)
            if not isinstance(record, Exception)]  # fmt: skip
    cached = _cached(keys, scorer, options)
    model = getattr(scorer, "model", None)
    per_record = _sequences_per_record(scorer, selection)
    sequences = (len(keys) - cached) * per_record
    batch = max(1, int(getattr(model, "batch_size", selection.batch_size)))
    passes = math.ceil(sequences / batch)
    selected = len(keys) if budget is None else min(budget, len(keys))
    model_name = getattr(model, "identity", None)
    note = (
        f"scoring (local, not run in a dry run): {len(keys):,} records, {cached:,} already "
        f"in the score cache; at most {sequences:,} sequences in {passes:,} forward passes "
        f"of batch {batch}" + (f" on {model_name}" if model_name else " (no scorer model)")
    )
    if selection.method == "mining" and "knn6" in scorer.rule.coefficients:
        note += f"; {len(keys):,} texts embedded with {selection.embedder} for knn6"
    return {
        "method": selection.method,
        "budget": budget,
        "input": len(keys),
        "selected": selected,
        "dropped_by_reason": {"over_budget": len(keys) - selected} if len(keys) > selected else {},
        "signals": {
            "scorer": scorer.identity,
            "model": model_name,
            "cached": cached,
            "sequences": sequences,
            "forward_passes": passes,
            "planned": True,
        },  # fmt: skip
        "plan_note": note,
    }


def _sequences_per_record(scorer: Any, selection: SelectOptions) -> int:
    """IFD and mining's ppl: the answer with and without its instruction (2);
    memorisation: one greedy completion per template; a rule without ppl: none."""
    if selection.method == "memorisation":
        return len(scorer.templates)
    if getattr(scorer, "model", None) is None:
        return 0
    return 2


def _cached(keys: list[str], scorer: Any, options: EngineOptions) -> int:
    """How many of ``keys`` the score cache holds (0 where there is no cache file yet;
    a dry run turns the cache off, so it is read here by path, never created)."""
    from evoforge.commands.common import default_cache_dir
    from evoforge.validators.select.score_cache import CACHE_FILE, ScoreCache

    path = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    if not (path / CACHE_FILE).is_file():
        return 0
    cache = ScoreCache(path / CACHE_FILE)
    try:
        return len(cache.get(scorer.identity, keys))
    finally:
        cache.close()
