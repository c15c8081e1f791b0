"""``evolve``: instructions through Evol-Instruct rounds (Xu et al., 2023) and
Evol-Quality (Liu et al., 2024, DEITA), or QA / RAG questions through one Ragas-style
rewrite each."""

from __future__ import annotations

from dataclasses import asdict
from pathlib import Path
from typing import Any

from evoforge.commands.common import Source, prompt_hashes, run_task_async, source_path
from evoforge.engine.runner import RunSummary, Task
from evoforge.io.readers import SEED_FIELDS, count_items, read_records
from evoforge.options import DEFAULT_REWRITE_MIX, EngineOptions, EvolveOptions

__all__ = ["DEFAULT_REWRITE_MIX", "EvolveOptions", "evolve", "evolve_async"]


def _instruction_task(evolve: EvolveOptions) -> tuple[Task, dict[str, Any]]:
    from evoforge.evolvers.base import Chain, EvolutionRounds, parse_weights
    from evoforge.evolvers.evol_instruct import OPS, EvolInstruct
    from evoforge.evolvers.evol_quality import QUALITY_OPS, EvolQuality

    weights = parse_weights(evolve.ops, OPS)
    stages: list[Task] = [
        EvolutionRounds(
            EvolInstruct(weights=weights, answers=evolve.answers, judge=evolve.judge),
            rounds=evolve.rounds,
            keep_all_rounds=not evolve.final_only,
        )
    ]
    prompts = [f"evol_{op}" for op in OPS] + ["evol_equal", "answer"]
    config: dict[str, Any] = {"ops": weights}
    if evolve.quality_rounds:
        quality = parse_weights(evolve.quality_ops, QUALITY_OPS, flag="--quality-ops")
        stages.append(
            EvolutionRounds(
                EvolQuality(weights=quality),
                rounds=evolve.quality_rounds,
                keep_all_rounds=not evolve.final_only,
            )
        )
        prompts += [f"evol_quality_{op}" for op in QUALITY_OPS]
        config["quality_ops"] = quality
    config["prompts"] = prompt_hashes(prompts)
    return Chain(stages), config


def _question_task(evolve: EvolveOptions, n: int, seed: int) -> tuple[Task, dict[str, Any]]:
    from evoforge.evolvers.ragas_rewrites import REWRITE_OPS, RewriteMix, mix_from_spec

    plan = mix_from_spec(evolve.mix or DEFAULT_REWRITE_MIX, n, seed)
    task = RewriteMix(plan, max_words=evolve.max_words, compress=evolve.compress)
    config = {
        "mix": plan.counts,
        "prompts": prompt_hashes(f"rewrite_{op}" for op in REWRITE_OPS),
    }
    return task, config


async def evolve_async(
    seeds: Source,
    out: str | Path,
    *,
    evolution: EvolveOptions | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
) -> RunSummary:
    options = options or EngineOptions()
    evolve = evolution or EvolveOptions()
    seeds = source_path(seeds, out)
    total = count_items(seeds)
    if evolve.kind == "instruction":
        task, task_config = _instruction_task(evolve)
    else:
        task, task_config = _question_task(evolve, total, options.seed)
    if evolve.decontaminate:
        from evoforge.generators.decontamination import decontaminated

        task = decontaminated(task, evolve.decontaminate)
    settings = asdict(evolve)
    # The manifest keeps its key since 0.1.0: whether every round's version is written.
    settings["keep_all_rounds"] = not settings.pop("final_only")
    if not evolve.decontaminate:
        settings.pop("decontaminate")  # manifests of runs without it stay as they were
    if evolve.kind == "instruction":
        settings.pop("compress")  # question rewrites only; instruction manifests unchanged
    settings.update(task_config)
    items = read_records(seeds, kind=evolve.kind, field_map=field_map, **SEED_FIELDS[evolve.kind])
    return await run_task_async(
        command="evolve",
        task=task,
        kind=evolve.kind,
        items=items,
        out=out,
        options=options,
        config={"seed": options.seed, "evolve": settings},
        model=model,
        total=total,
    )


def evolve(
    seeds: Source,
    out: str | Path,
    *,
    evolution: EvolveOptions | None = None,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
) -> RunSummary:
    """Evolve seeds: instructions through Evol-Instruct (and Evol-Quality), or QA / RAG
    questions through a mix of Ragas-style rewrites. See :class:`EvolveOptions`."""
    from evoforge.blocking import run_blocking

    return run_blocking(
        evolve_async(
            seeds, out, evolution=evolution, options=options, field_map=field_map, model=model
        )
    )
