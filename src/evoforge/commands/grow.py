"""``grow``: exactly N new instruction records, by Self-Instruct, instruction
back-translation or Magpie (``evoforge.generators.self_instruct``, ``.backtranslate``,
``.magpie``).

Each method is a record step run in passes by the exact-N loop of ``rag`` and ``in2``
(:mod:`evoforge.commands.exact_n`): one journal, the response cache, resume, and a
shortfall reported per method (exit 3) when the material or the budget runs out. The
final write of every pass goes through :class:`~evoforge.generators.grow_pool.GrowSelector`
(ROUGE-L near-duplicates of the pool dropped with the id they lost to, the surplus past
N dropped), whose pool is what the next pass prompts from.
"""

from __future__ import annotations

import hashlib
import json
import math
from collections.abc import Callable, Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evoforge.commands.common import (
    Source,
    build_client,
    close_client,
    prompt_hashes,
    source_path,
    source_paths,
)
from evoforge.commands.exact_n import mark_shortfall, run_passes, shortfall
from evoforge.engine.runner import RunSummary, update_manifest
from evoforge.errors import ConfigError, InputError
from evoforge.io.lock import holds_run_lock
from evoforge.options import EngineOptions
from evoforge.options_grow import GrowOptions
from evoforge.records import Record

# Passes with no new record before the method counts as saturated (a shortfall).
STALLED_PASSES = 3
SELF_INSTRUCT_PROMPTS = ["self_instruct_propose", "self_instruct_classify",
                         "self_instruct_input_first", "self_instruct_output_first"]  # fmt: skip
BACKTRANSLATE_PROMPTS = ["backtranslate_instruction", "backtranslate_curate"]


def read_seeds(source: Source, out: str | Path, field_map: dict[str, str] | None) -> list[Record]:
    """The seed instructions; a bad row is an error naming its file and line (exit 2)."""
    from evoforge.io.readers import SEED_FIELDS, read_records

    path = source_path(source, out)
    seeds = []
    for item in read_records(path, kind="instruction", field_map=field_map,
                             **SEED_FIELDS["instruction"]):  # fmt: skip
        if isinstance(item, InputError):
            raise item
        seeds.append(item)
    return seeds


def _digest(rows: Any) -> str:
    blob = json.dumps(rows, sort_keys=True, ensure_ascii=False, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:16]


class _Passes:
    """The pass planning a method shares: the selector of each pass (pool up to that
    pass), the kept count, and saturation after ``STALLED_PASSES`` passes with nothing new."""

    def __init__(self, method: str, grow: GrowOptions, pool: list[tuple[str, str]]) -> None:
        self.method, self.grow, self.pool = method, grow, pool
        self.current = 0
        self.last: Any = None
        self.planned = 0
        self.stalls = 0
        self.kept_before = 0
        self.exhausted: set[str] = set()

    def selector(self) -> Any:
        from evoforge.generators.grow_pool import GrowSelector

        self.last = GrowSelector(self.method, self.grow.n, self.pool,
                                 threshold=self.grow.threshold, upto_pass=self.current)  # fmt: skip
        return self.last

    @property
    def kept(self) -> int:
        return self.last.kept[self.method] if self.last is not None else 0

    def size(self, pass_no: int, per_item: float, cap: int) -> int:
        """Items for pass ``pass_no``: what is missing over the yield per item so far,
        at most ``cap``; 0 once the method is saturated."""
        self.current = pass_no
        if pass_no > 1:
            self.stalls = self.stalls + 1 if self.kept <= self.kept_before else 0
            if self.stalls >= STALLED_PASSES:
                self.exhausted.add(self.method)
                return 0
        self.kept_before = self.kept
        rate = self.kept / self.planned if self.planned and self.kept else per_item
        items = min(cap, math.ceil((self.grow.n - self.kept) / max(rate, 0.25)))
        self.planned += items
        return max(items, 1)


async def _run(
    method: str, task: Any, plan: Callable[[int], list[Record]], passes: _Passes, *,
    out: str | Path, config: dict[str, Any], options: EngineOptions, model: Any,
) -> tuple[RunSummary, dict[str, Any]]:  # fmt: skip
    client = build_client(options, model)
    counts = {method: passes.grow.n}
    try:
        summary, kept, passes_run = await run_passes(
            command="grow", kind="instruction", task=task, out=out,
            config={"model": client.model.identity, "params": client.params, **config},
            options=options, client=client, counts=counts,
            plan=lambda _need, pass_no: plan(pass_no), selector=passes.selector,
            max_passes=None, out_format=None,
        )  # fmt: skip
    finally:
        await close_client(client)
    summary.extra.pop("selector", None)
    stopped = summary.stop_reason if summary.status != "complete" else None
    gaps = shortfall(counts, kept, passes.exhausted, passes_run, "material", stopped=stopped)
    for gap in gaps.values():
        if gap["cause"] == "material" and method != "backtranslate":
            gap["why"] = (f"the last {STALLED_PASSES} passes added no new instruction (the "
                          "pool is saturated; more or more varied seeds help)")  # fmt: skip
    extras = {**mark_shortfall(summary, gaps), "plan": counts, "kept": dict(kept),
              "passes": passes_run, "shortfall": gaps}  # fmt: skip
    return summary, extras


async def _self_instruct(source, out, grow, options, model, field_map):  # type: ignore[no-untyped-def]
    from evoforge.generators.rouge import NearDuplicateIndex
    from evoforge.generators.self_instruct import (
        MIN_SEEDS,
        NEW_PER_PROMPT,
        SelfInstructPlanner,
        SelfInstructTask,
    )

    if source is None:
        raise ConfigError("grow --method self-instruct needs --seeds (at least 8 instructions)")
    seeds = read_seeds(source, out, field_map)
    if len(seeds) < MIN_SEEDS:
        raise InputError(
            f"Self-Instruct needs at least {MIN_SEEDS} seed instructions (8 are shown in "
            f"every prompt); this file has {len(seeds)}", path=str(source_path(source, out)),
        )  # fmt: skip
    pool = [(s.id, s["instruction"]) for s in seeds]
    planner = SelfInstructPlanner(pool, seed=options.seed)
    task = SelfInstructTask(instances=grow.instances, pool=NearDuplicateIndex(grow.threshold))
    task.pool.extend(pool)
    passes = _Passes("self-instruct", grow, pool)

    def plan(pass_no: int) -> list[Record]:
        generated = passes.last.generated if passes.last is not None else []
        if passes.last is not None:
            task.pool = passes.last.index  # the pool this pass prompts from and filters by
        cap = max(8, options.concurrency, math.ceil(len(generated) / 2))
        prompts = passes.size(pass_no, NEW_PER_PROMPT / 2, cap)
        return planner.plan(prompts, pass_no, generated) if prompts else []

    config = {"seed": options.seed, "grow": asdict(grow), "seeds": _digest(pool),
              "prompts": prompt_hashes(SELF_INSTRUCT_PROMPTS)}  # fmt: skip
    summary, extras = await _run("self-instruct", task, plan, passes, out=out, config=config,
                                 options=options, model=model)  # fmt: skip
    extras["seeds"] = len(seeds)
    return summary, extras


async def _backtranslate(source, out, grow, options, model, examples=(), iteration=1):  # type: ignore[no-untyped-def]
    from evoforge.generators.backtranslate import (
        BacktranslatePlanner,
        BacktranslateTask,
        segment_documents,
    )
    from evoforge.io.documents import load_documents

    if source is None:
        raise ConfigError("grow --method backtranslate needs --docs (files or folders)")
    docs = source_paths(source, out)
    report = load_documents(docs, text_field=grow.text_field)
    segments, skipped = segment_documents(report.documents)
    if not segments:
        why = "; ".join(f"{s.path}: {s.reason}" for s in report.skipped[:5])
        raise InputError(
            f"no text to back-translate in {', '.join(map(str, docs))}: "
            + (f"{len(report.documents)} documents gave no 40-400 word passage of prose"
               if report.documents else f"no usable documents ({why or 'no files'})")
        )  # fmt: skip
    planner = BacktranslatePlanner(segments, seed=options.seed, iteration=iteration)
    task = BacktranslateTask(min_score=grow.min_score, examples=list(examples))
    passes = _Passes("backtranslate", grow, [])

    def plan(pass_no: int) -> list[Record]:
        size = passes.size(pass_no, 0.5, max(64, 4 * options.concurrency))
        items = planner.plan(size, pass_no) if size else []
        passes.exhausted |= {"backtranslate"} if planner.exhausted else set()
        return items

    config = {"seed": options.seed, "grow": asdict(grow), "iteration": iteration,
              "documents": sorted(d.id for d in report.documents), "examples": list(examples),
              "prompts": prompt_hashes(BACKTRANSLATE_PROMPTS)}  # fmt: skip
    summary, extras = await _run("backtranslate", task, plan, passes, out=out, config=config,
                                 options=options, model=model)  # fmt: skip
    extras["documents"] = {"loaded": len(report.documents), "segments": len(segments),
                           "segments_skipped": skipped,
                           "files_skipped": report.skipped_counts()}  # fmt: skip
    return summary, extras


async def _magpie(source, out, grow, options, model, field_map):  # type: ignore[no-untyped-def]
    from evoforge.commands.common import _resolve_model
    from evoforge.generators.magpie import MagpieTask, plan_slots, pre_query

    chat_model = _resolve_model(options, model)
    query = await pre_query(chat_model, grow.chat_template)
    seeds = read_seeds(source, out, field_map) if source is not None else []
    pool = [(s.id, s["instruction"]) for s in seeds]
    sampling = {"temperature": grow.magpie_temperature, "top_p": grow.magpie_top_p,
                "max_tokens": options.max_output_tokens or 512, "stop": query.stop}  # fmt: skip
    task = MagpieTask(query, sampling, language=grow.language)
    passes = _Passes("magpie", grow, pool)

    def plan(pass_no: int) -> list[Record]:
        # most samples pass the filters: plan close to N, not twice it
        size = passes.size(pass_no, 0.8, max(64, 4 * options.concurrency))
        return plan_slots(size, pass_no) if size else []

    config = {"seed": options.seed, "grow": asdict(grow), "pre_query": query.prefix,
              "seeds": _digest(pool)}  # fmt: skip
    summary, extras = await _run("magpie", task, plan, passes, out=out, config=config,
                                 options=options, model=chat_model)  # fmt: skip
    extras["pre_query"] = query.prefix
    return summary, extras


@holds_run_lock
async def grow_async(
    source: Source | Sequence[str | Path] | None,
    out: str | Path,
    *,
    grow: GrowOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
    field_map: dict[str, str] | None = None,
) -> RunSummary:
    """Exactly ``grow.n`` new instruction records (see the module docstring).

    ``source``: seed instructions for ``self-instruct`` (8 at least) and ``magpie``
    (optional: its pool starts from them), documents (files, folders) for
    ``backtranslate``."""
    grow = grow or GrowOptions()
    options = options or EngineOptions()
    if grow.method == "self-instruct":
        summary, extras = await _self_instruct(source, out, grow, options, model, field_map)
    elif grow.method == "magpie":
        summary, extras = await _magpie(source, out, grow, options, model, field_map)
    elif grow.iterations == 1:
        summary, extras = await _backtranslate(source, out, grow, options, model)
    else:  # iteration 1 beside the output; its curated pairs are iteration 2's examples
        from evoforge.generators.backtranslate import few_shot_examples

        first = Path(out).with_name(f"{Path(out).stem}.iter1.jsonl")
        summary, extras = await _backtranslate(source, first, grow, options, model)
        if summary.status == "complete":
            examples = few_shot_examples(first)
            summary, extras = await _backtranslate(
                source, out, grow, options, model, examples, iteration=2
            )
            extras["iteration_1"] = {"out": str(first), "examples": len(examples)}
    extras["method"] = grow.method
    update_manifest(summary.manifest, extras)
    summary.extra = extras
    return summary


def grow(
    source: Source | Sequence[str | Path] | None,
    out: str | Path,
    *,
    grow: GrowOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
    field_map: dict[str, str] | None = None,
) -> RunSummary:
    """Grow a seed set: see :class:`~evoforge.options_grow.GrowOptions`."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        grow_async(source, out, grow=grow, options=options, model=model, field_map=field_map)
    )
