"""``select --method ifd|mining|memorisation``: selection by the model's own signals.

One streaming composition for the three (see ``docs/methods/model-signals.md``):

1. **Score** (:func:`~evoforge.validators.select.score_cache.score_stream`): records
   are read a chunk at a time, scored in the scorer model's batches (served from the
   score cache where it can), and each score block is spooled to a temporary file; only
   a float per record stays in memory.
2. **Rank** (:func:`~evoforge.validators.select.ranking.rank_blocks`): the method's
   filter (IFD >= 1, a memorisation band) and its order, up to the budget -- or, with
   ``--then deita|kcenter``, up to ``--pool`` candidates that the diversity selector
   then cuts to the budget (DEITA's Repr filter walks them in signal order).
3. **Write**: a second pass over the input puts ``meta[METHOD]`` on every record
   (with the model name) and hands kept and rejected records to the one writer.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import math
import os
import tempfile
from array import array
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError, InputError
from evoforge.io.readers import count_items
from evoforge.io.readers import read_evoforge_records as _read_evoforge_records
from evoforge.options import EngineOptions, SelectOptions
from evoforge.progress import ProgressBar
from evoforge.records import Record

logger = logging.getLogger(__name__)

SIGNAL_METHODS = ("ifd", "mining", "memorisation")
DIVERSITY = ("deita", "kcenter")


def manifest_settings(selection: SelectOptions) -> dict[str, Any]:
    """The manifest's settings: every field, but the model-signal and LIMA ones only
    where they differ from their default (so other methods' manifests stay as before)."""
    from evoforge.options_signals import SignalOptions

    ours = {f.name: f.default for f in dataclasses.fields(SignalOptions)}
    return {
        key: value
        for key, value in dataclasses.asdict(selection).items()
        if key not in ours
        or value != ours[key]
        or selection.method in (*SIGNAL_METHODS, "lima", "balanced")
    }


def _records(source: Any) -> Iterator[Record]:
    for item in _read_evoforge_records(source):
        if isinstance(item, InputError):
            raise item
        yield item


def _score_cache(options: EngineOptions) -> Any:
    if not options.cache:
        return None
    from evoforge.commands.common import default_cache_dir
    from evoforge.validators.select.score_cache import CACHE_FILE, ScoreCache

    folder = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    return ScoreCache(folder / CACHE_FILE)


def build_scorer(selection: SelectOptions, loss_model: Any = None) -> tuple[Any, Any, Any]:
    """(scorer, accept filter, rule or None) for ``selection.method``."""
    from evoforge.llm.losses import load_loss_model
    from evoforge.validators.select import ifd, memorisation, mining

    def model() -> Any:
        if loss_model is not None:
            return loss_model
        return load_loss_model(selection.scorer_model, batch_size=selection.batch_size)

    if selection.method == "ifd":
        scorer = ifd.IfdScorer(model(), max_answer_tokens=selection.max_answer_tokens)
        return scorer, ifd.ifd_accept(selection.max_ifd), None
    if selection.method == "memorisation":
        scorer = memorisation.MemorisationScorer(model(), templates=selection.templates)
        band = memorisation.parse_band(selection.band)
        return scorer, memorisation.band_accept(band), None
    if selection.fit:
        rule = mining.fit_rule(selection.fit)
    else:
        rule = mining.APPROXIMATE_RULE
        logger.warning(mining.APPROXIMATE_WARNING)
    needs_model = "ppl" in rule.coefficients
    scorer = mining.MiningScorer(
        rule,
        model() if needs_model else None,
        reward_field=selection.reward_field,
        max_answer_tokens=selection.max_answer_tokens,
    )
    return scorer, None, rule


async def select_signal_async(
    source: Any,
    out: str | Path,
    *,
    selection: SelectOptions,
    options: EngineOptions,
    loss_model: Any = None,
) -> dict[str, Any]:
    """Score by the model's signal, rank, diversity-filter (``then``), write."""
    from evoforge.io.layout import output_paths
    from evoforge.io.outputs import OutputWriter

    method = selection.method
    if selection.then is not None and selection.then not in DIVERSITY:
        raise ConfigError(f"--then {selection.then!r}: use one of {', '.join(DIVERSITY)}")
    budget = selection.budget
    if method == "memorisation" and budget is None:
        budget = 60  # the article's 60 samples
    scorer, accept, rule = build_scorer(selection, loss_model)
    cache = _score_cache(options)
    out = Path(out)
    paths = output_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        "w+", encoding="utf-8", suffix=".scores.jsonl", dir=out.parent, delete=False
    )
    try:
        scores, dropped, histogram, passes = _score_pass(
            source, scorer, cache, spool, accept, selection, options
        )
        from evoforge.validators.select.ranking import rank_blocks

        descending = method != "mining"
        first_budget = selection.pool if selection.then else budget
        ranking = rank_blocks(
            ((i, {"score": s}) for i, s in enumerate(scores) if not math.isnan(s)),
            method=method,
            budget=first_budget,
            descending=descending,
        )
        ranking.dropped.update(dropped)
        kept = set(ranking.kept)
        lost: dict[int, Any] = {}
        if selection.then:
            kept, lost = _diversity(source, spool.name, ranking.kept, scores, selection,
                                    options, budget, descending)  # fmt: skip
        with OutputWriter(paths["out"]) as output:
            for i, (record, block) in enumerate(_with_blocks(source, spool.name)):
                record.meta[method] = block
                if i in kept:
                    output.keep(record)
                elif i in lost:
                    output.reject(dataclasses.replace(lost[i], record=record.to_json()))
                else:
                    reason, detail = ranking.dropped.get(i, ("not_selected", "not selected"))
                    output.reject(_rejection(record, reason, detail, method))
    finally:
        spool.close()
        os.unlink(spool.name)
        if cache is not None:
            cache.close()
    report: dict[str, Any] = {
        "method": method,
        "budget": budget,
        "input": len(scores),
        "selected": output.counts()["kept"],
        "dropped_by_reason": output.counts()["rejected_by_reason"],
        "settings": manifest_settings(selection),
        # Not "scoring": that key names the LLM judges' run and its manifest (DEITA).
        "signals": {
            "scorer": scorer.identity,
            "model": getattr(getattr(scorer, "model", None), "identity", None),
            "scored": int(sum(1 for s in scores if not math.isnan(s))),
            "forward_passes": passes,
        },
        "files": {"out": str(paths["out"]), "rejects": str(paths["rejects"])},
    }
    if histogram is not None:
        report["histogram"] = histogram
    if rule is not None:
        report["rule"] = rule.to_json()
    output.write_manifest({**report, "steps": output.step_counts("select")},
                          mask=False, ascii_only=True)  # fmt: skip
    return report


def _rejection(record: Record, reason: str, detail: str, method: str) -> Any:
    from evoforge.steps import Rejection

    return Rejection.of(record, reason, detail, step=f"selector.{method}")


def _score_pass(
    source: Any,
    scorer: Any,
    cache: Any,
    spool: Any,
    accept: Any,
    selection: SelectOptions,
    options: EngineOptions,
) -> tuple[array, dict[int, tuple[str, str]], dict[str, int] | None, int]:
    """Pass 1: score every record, spool its block, keep its score (NaN: dropped)."""
    from evoforge.validators.select.ranking import score_of
    from evoforge.validators.select.score_cache import score_stream

    method = selection.method
    scores = array("d")
    dropped: dict[int, tuple[str, str]] = {}
    levels: dict[str, int] | None = {} if method == "memorisation" else None
    model = getattr(scorer, "model", None)
    before = getattr(model, "forward_passes", 0)
    knn = method == "mining" and "knn6" in scorer.rule.coefficients
    texts_for_knn: list[Any] = []
    progress = ProgressBar(f"select-{method}", count_items(source),
                           enabled=None if not options.quiet else False)  # fmt: skip
    with progress:
        stream = score_stream(_records(source), scorer, cache,
                              progress=progress.update if progress.enabled else None)  # fmt: skip
        for i, (record, block) in enumerate(stream):
            if method == "mining":
                block = scorer.finish(block, scorer.record_indicators(record))
                if knn:
                    texts_for_knn.append(_embed_text(record, selection))
            spool.write(json.dumps(block) + "\n")
            score = score_of(block) if "error" not in block else None
            refused = accept(block) if accept is not None and score is not None else None
            if score is None:
                dropped[i] = ("unscored", str(block.get("error") or f"no meta.{method}.score"))
            elif refused is not None:
                dropped[i] = refused
            scores.append(math.nan if score is None or refused else score)
            if levels is not None and score is not None:
                key = f"{score:g}"
                levels[key] = levels.get(key, 0) + 1
    spool.flush()
    if knn:
        scores = _add_knn(spool, scores, dropped, texts_for_knn, scorer, selection, options)
    histogram = None if levels is None else {k: levels[k] for k in sorted(levels, key=float)}
    return scores, dropped, histogram, getattr(model, "forward_passes", 0) - before


def _embed_text(record: Record, selection: SelectOptions) -> str:
    from evoforge.validators.select.texts import text_of

    return text_of(record, selection.fields)


def _add_knn(spool: Any, scores: array, dropped: dict, texts: list[str], scorer: Any,
             selection: SelectOptions, options: EngineOptions) -> array:  # fmt: skip
    """Mining's ``knn6`` over the whole set: embed, measure, re-predict, re-spool."""
    import numpy as np

    from evoforge.commands.common import load_run_embedder
    from evoforge.validators.select.mining import knn_distances

    embedder = load_run_embedder(selection.embedder, options)
    vectors = np.asarray(embedder.embed(texts), dtype=np.float32) if texts else np.zeros((0, 1))
    distances = knn_distances(vectors, 6)
    spool.seek(0)
    blocks = [json.loads(line) for line in spool]
    spool.seek(0)
    spool.truncate()
    fresh = array("d")
    for i, block in enumerate(blocks):
        if "indicators" in block:
            block.pop("error", None)
            block = scorer.finish(block, {"knn6": round(float(distances[i]), 6)})
        spool.write(json.dumps(block) + "\n")
        score = block.get("score") if "error" not in block else None
        if score is None:
            dropped[i] = ("unscored", str(block.get("error") or "no meta.mining.score"))
        else:
            dropped.pop(i, None)
        fresh.append(math.nan if score is None else float(score))
    spool.flush()
    return fresh


def _with_blocks(source: Any, spool: str) -> Iterator[tuple[Record, dict[str, Any]]]:
    with open(spool, encoding="utf-8") as blocks:
        for record, line in zip(_records(source), blocks, strict=True):
            yield record, json.loads(line)


def _diversity(source: Any, spool: str, candidates: list[int], scores: array,
               selection: SelectOptions, options: EngineOptions, budget: int | None,
               descending: bool) -> tuple[set[int], dict[int, Any]]:  # fmt: skip
    """``--then deita|kcenter`` over the ranked candidates (held in memory: ``--pool``)."""
    from evoforge.commands.common import load_run_embedder
    from evoforge.validators.select.selectors import select_deita, select_kcenter

    if budget is None:
        raise ConfigError(f"--then {selection.then} needs --budget")
    wanted = set(candidates)
    pool: list[Record] = []
    positions: list[int] = []
    for i, (record, block) in enumerate(_with_blocks(source, spool)):
        if i in wanted:
            record.meta[selection.method] = block
            pool.append(record)
            positions.append(i)
    at = {id(r): i for r, i in zip(pool, positions, strict=True)}
    if selection.then == "deita":
        # DEITA's Repr filter walks the pool in signal order: the signal is its score.
        ranked = [
            dataclasses.replace(r, meta={**r.meta, "deita": {"score": _signed(s, descending)}})
            for r, s in zip(pool, (scores[i] for i in positions), strict=True)
        ]
        at = {id(r): i for r, i in zip(ranked, positions, strict=True)}
        embedder = load_run_embedder(selection.embedder, options) if selection.tau < 1 else None
        chosen, dropped = select_deita(ranked, budget, selection.tau, embedder,
                                       fields=selection.fields)  # fmt: skip
    else:
        embedder = load_run_embedder(selection.embedder, options)
        chosen, dropped = select_kcenter(pool, budget, k=selection.clusters, seed=options.seed,
                                         embedder=embedder, fields=selection.fields,
                                         mode=selection.kcenter_mode)  # fmt: skip
        ranked = pool
    by_id = {r.id: at[id(r)] for r in ranked}
    kept = {at[id(r)] for r in chosen}
    lost = {by_id[d.id]: dataclasses.replace(d, step=f"selector.{selection.then}")
            for d in dropped}  # fmt: skip
    return kept, lost


def _signed(score: float, descending: bool) -> float:
    return score if descending else -score
