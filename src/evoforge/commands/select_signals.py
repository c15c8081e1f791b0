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

import numpy as np

from evoforge.commands.select_plan import is_simulated, scoring_plan
from evoforge.errors import ConfigError, InputError
from evoforge.io.readers import count_items
from evoforge.io.readers import read_evoforge_records as _read_evoforge_records
from evoforge.options import EngineOptions, SelectOptions
from evoforge.progress import ProgressBar
from evoforge.records import Record

logger = logging.getLogger(__name__)

SIGNAL_METHODS = ("ifd", "mining", "memorisation")
DIVERSITY = ("deita", "kcenter")


_RELEVANT = {
    "ifd": ("scorer_model", "batch_size", "max_answer_tokens", "max_ifd", "then", "pool"),
    "mining": ("scorer_model", "batch_size", "max_answer_tokens", "then", "pool", "fit",
               "mining_rule", "reward_field", "judge"),
    "memorisation": ("scorer_model", "batch_size", "templates", "band", "then", "pool"),
    "lima": ("balance_by", "per_category", "lima_length"),
    "balanced": ("balance_by", "per_category"),
}  # fmt: skip


def manifest_settings(selection: SelectOptions) -> dict[str, Any]:
    """The manifest's settings: ``select``'s own fields, then the model-signal and LIMA
    ones the method uses or that differ from their default (so other methods'
    manifests stay as they were)."""
    from evoforge.options_signals import SignalOptions

    ours = {f.name: f.default for f in dataclasses.fields(SignalOptions)}
    data = dataclasses.asdict(selection)
    relevant = _RELEVANT.get(selection.method, ())
    settings = {key: value for key, value in data.items() if key not in ours}
    settings.update((key, data[key]) for key in ours if key in relevant or data[key] != ours[key])
    return settings


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


def build_scorer(
    selection: SelectOptions, loss_model: Any = None, extra_templates: list[str] | None = None
) -> tuple[Any, Any, Any]:
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
        scorer = memorisation.MemorisationScorer(
            model(), templates=selection.templates, extra_templates=extra_templates or ()
        )
        band = memorisation.parse_band(selection.band)
        return scorer, memorisation.band_accept(band), None
    if selection.fit:
        rule = mining.fit_rule(selection.fit)
    else:
        rule = mining.published_rule(selection.mining_rule)
        logger.warning(mining.APPROXIMATE_WARNING.format(name=rule.name))
    needs_model = "ppl" in rule.coefficients
    scorer = mining.MiningScorer(
        rule,
        model() if needs_model else None,  # the published rule needs no model
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
    model: Any = None,
) -> dict[str, Any]:
    """Score by the model's signal, rank, diversity-filter (``then``), write. ``model``
    is the chat model of ``--judge`` (mining), ``loss_model`` the scorer (for tests)."""
    from evoforge.io.layout import output_paths
    from evoforge.io.outputs import OutputWriter

    method = selection.method
    if selection.then is not None and selection.then not in DIVERSITY:
        raise ConfigError(f"--then {selection.then!r}: use one of {', '.join(DIVERSITY)}")
    budget = selection.budget
    if method == "memorisation" and budget is None:
        budget = 60  # the article's 60 samples
    extra = None
    if method == "memorisation" and selection.templates > len(_fixed_templates()):
        extra = await _paraphrases(selection.templates - len(_fixed_templates()), options, model)
    scorer, accept, rule = build_scorer(selection, loss_model, extra)
    scorer.accept = accept  # the method's filter, read by the scoring pass
    judged: dict[str, Any] | None = None
    if method == "mining" and selection.judge:
        source, judged = await _judge(source, Path(out), options, model)
    if is_simulated(model):  # a dry run: count the scoring, load no scorer model
        plan = scoring_plan(source, scorer, selection, options, budget)
        return {**plan, **({"rule": rule.to_json()} if rule is not None else {})}
    cache = _score_cache(options)
    out = Path(out)
    paths = output_paths(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    spool = tempfile.NamedTemporaryFile(  # noqa: SIM115 - closed in the finally below
        "w+", encoding="utf-8", suffix=".scores.jsonl", dir=out.parent, delete=False
    )
    try:
        scores, histogram, passes = _score_pass(source, scorer, cache, spool, selection, options)
        descending = method != "mining"
        first_budget = selection.pool if selection.then else budget
        order = _ranked(scores, descending, first_budget)  # positions, best first
        keep = np.zeros(len(scores), dtype=bool)
        keep[order] = True
        lost: dict[int, Any] = {}
        if selection.then:
            kept, lost = _diversity(source, spool.name, order.tolist(), scores, selection,
                                    options, budget, descending)  # fmt: skip
            keep[:] = False
            keep[list(kept)] = True
        with OutputWriter(paths["out"]) as output:
            for i, (record, block) in enumerate(_with_blocks(source, spool.name)):
                record.meta[method] = block
                if keep[i]:
                    output.keep(record)
                elif i in lost:
                    output.reject(dataclasses.replace(lost[i], record=record.to_json()))
                else:
                    reason, detail = _why_dropped(block, accept, method, first_budget)
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
    if judged is not None:
        report["judge"] = judged
    if histogram is not None:
        report["histogram"] = histogram
    if rule is not None:
        report["rule"] = rule.to_json()
    output.write_manifest({**report, "steps": output.step_counts("select")},
                          mask=False, ascii_only=True)  # fmt: skip
    return report


def _fixed_templates() -> tuple[str, ...]:
    from evoforge.validators.select.memorisation import TEMPLATES

    return TEMPLATES


async def _paraphrases(count: int, options: EngineOptions, model: Any) -> list[str]:
    """``count`` more prompt frames: the run's ``--llm`` rewrites the fixed ones (each
    at most twice, the second time sampled), keeping ``{question}`` once."""
    from evoforge.commands.common import build_client, close_client
    from evoforge.prompting import builtin_template

    template = builtin_template("memorisation_paraphrase")
    client = build_client(options, model)
    frames: list[str] = []
    try:
        for n in range(2 * len(_fixed_templates())):
            if len(frames) >= count:
                break
            frame = _fixed_templates()[n % len(_fixed_templates())]
            params = {"temperature": 0.0 if n < len(_fixed_templates()) else 0.8,
                      "max_tokens": 96}  # fmt: skip
            reply = await client.complete(template.render(frame=frame), op=template.id,
                                          tag=str(n), params=params)  # fmt: skip
            text = (reply.text or "").strip()
            if text.count("{question}") == text.count("{") == text.count("}") == 1 and (
                text not in frames
            ):
                frames.append(text)
    finally:
        await close_client(client)
    if is_simulated(model):  # a dry run's replies are no frames: stand-ins, calls counted
        frames += [f"{frame} " * (n + 2) for n, frame in enumerate(_fixed_templates())]
        return frames[:count]
    if len(frames) < count:
        raise ConfigError(
            f"--templates {len(_fixed_templates()) + count}: the --llm gave {len(frames)} usable "
            f"paraphrases of the {len(_fixed_templates())} fixed templates; ask for fewer"
        )
    return frames


async def _judge(
    source: Any, out: Path, options: EngineOptions, model: Any
) -> tuple[Path, dict[str, Any]]:
    """``--judge``: the LLM judge's ratings into ``meta.judge`` (an engine run, cached and
    journaled, into ``OUT.judged.jsonl``); a record the judge fails is rejected there."""
    from evoforge.commands.common import run_task_async
    from evoforge.validators.select.mining_judge import MiningJudge

    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    judged = out.with_name(f"{stem}.judged.jsonl")
    summary = await run_task_async(
        command="select-mining-judge", task=MiningJudge(), kind="instruction",
        items=_read_evoforge_records(source), out=judged, options=options,
        config={"method": "mining", "judge": "mining_judge", "seed": options.seed}, model=model,
    )  # fmt: skip
    return judged, {"judged": summary.accepted, "rejected": summary.rejected_by_reason,
                    "file": str(judged)}  # fmt: skip


def _ranked(scores: array, descending: bool, budget: int | None) -> Any:
    """Positions with a score (not NaN), best first (ties: input order), cut to ``budget``:
    an index array, so 100K records cost 8 bytes each here."""
    if budget is not None and (isinstance(budget, bool) or budget < 0):
        raise ConfigError(f"selection budget must be an integer >= 0 (got {budget!r})")
    values = np.frombuffer(scores, dtype=np.float64) if len(scores) else np.zeros(0)
    valid = np.flatnonzero(~np.isnan(values))
    keys = -values[valid] if descending else values[valid]
    order = valid[np.argsort(keys, kind="stable")]
    return order if budget is None else order[:budget]


def _why_dropped(block: dict[str, Any], accept: Any, method: str, budget: int | None):
    """A dropped record's (reason, detail), recomputed from its block in the write pass
    (so no per-record reason is held in memory)."""
    from evoforge.validators.select.ranking import score_of

    if "error" in block or score_of(block) is None:
        return "unscored", str(block.get("error") or f"no meta.{method}.score")
    refused = accept(block) if accept is not None else None
    if refused is not None:
        return refused
    return "over_budget", f"budget {budget} already filled"


def _rejection(record: Record, reason: str, detail: str, method: str) -> Any:
    from evoforge.steps import Rejection

    return Rejection.of(record, reason, detail, step=f"selector.{method}")


def _score_pass(
    source: Any,
    scorer: Any,
    cache: Any,
    spool: Any,
    selection: SelectOptions,
    options: EngineOptions,
) -> tuple[array, dict[str, int] | None, int]:
    """Pass 1: score every record and spool its block; keep one float per record (its
    score; NaN where it is unscored or the method's filter refuses it)."""
    from evoforge.validators.select.ranking import score_of

    method = selection.method
    accept = getattr(scorer, "accept", None)
    scores = array("d")
    levels: dict[str, int] | None = {} if method == "memorisation" else None
    model = getattr(scorer, "model", None)
    before = getattr(model, "forward_passes", 0)
    knn = method == "mining" and "knn6" in scorer.rule.coefficients
    embed = _ChunkedEmbedder(selection, options) if knn else None
    progress = ProgressBar(f"select-{method}", count_items(source),
                           enabled=None if not options.quiet else False)  # fmt: skip
    with progress:
        from evoforge.validators.select.score_cache import score_stream

        stream = score_stream(_records(source), scorer, cache,
                              progress=progress.update if progress.enabled else None)  # fmt: skip
        for record, block in stream:
            if method == "mining":
                block = scorer.finish(block, scorer.record_indicators(record))
                if embed is not None:
                    embed.add(record)
            spool.write(json.dumps(block) + "\n")
            score = score_of(block) if "error" not in block else None
            if score is not None and levels is not None:
                key = f"{score:g}"
                levels[key] = levels.get(key, 0) + 1
            if score is not None and accept is not None and accept(block) is not None:
                score = None
            scores.append(math.nan if score is None else score)
    spool.flush()
    if embed is not None:
        scores = _add_knn(spool, embed.vectors(), scorer)
    histogram = None if levels is None else {k: levels[k] for k in sorted(levels, key=float)}
    return scores, histogram, getattr(model, "forward_passes", 0) - before


class _ChunkedEmbedder:
    """Mining's ``knn6`` needs every record's vector: texts are embedded 256 at a time,
    so only the vectors (not the texts) stay in memory."""

    def __init__(self, selection: SelectOptions, options: EngineOptions) -> None:
        from evoforge.commands.common import load_run_embedder

        self.embedder = load_run_embedder(selection.embedder, options)
        self.fields = selection.fields
        self.texts: list[str] = []
        self.parts: list[Any] = []

    def add(self, record: Record) -> None:
        from evoforge.validators.select.texts import text_of

        self.texts.append(text_of(record, self.fields))
        if len(self.texts) >= 256:
            self._flush()

    def _flush(self) -> None:
        if self.texts:
            self.parts.append(np.asarray(self.embedder.embed(self.texts), dtype=np.float32))
            self.texts = []

    def vectors(self) -> Any:
        self._flush()
        return np.vstack(self.parts) if self.parts else np.zeros((0, 1), dtype=np.float32)


def _add_knn(spool: Any, vectors: Any, scorer: Any) -> array:
    """Mining's ``knn6`` over the whole set: measure, re-predict, re-spool (line by line
    through a second temporary file)."""
    from evoforge.validators.select.mining import knn_distances

    distances = knn_distances(vectors, 6)
    fresh = array("d")
    spool.seek(0)
    with tempfile.TemporaryFile("w+", encoding="utf-8") as copy:
        for line in spool:
            copy.write(line)
        copy.seek(0)
        spool.seek(0)
        spool.truncate()
        for i, line in enumerate(copy):
            block = json.loads(line)
            if "indicators" in block:
                block.pop("error", None)
                block = scorer.finish(block, {"knn6": round(float(distances[i]), 6)})
            spool.write(json.dumps(block) + "\n")
            score = block.get("score") if "error" not in block else None
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
