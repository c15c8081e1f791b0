"""``in2``: a corpus -> exactly N IN2 long-context samples (An et al., 2024)."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evoforge.commands.common import (
    Source,
    build_client,
    close_client,
    prompt_hashes,
    source_paths,
)
from evoforge.commands.exact_n import mark_shortfall, run_passes, shortfall
from evoforge.engine.runner import RunSummary
from evoforge.errors import InputError
from evoforge.io.lock import holds_run_lock
from evoforge.io.readers import SEED_FIELDS, read_records
from evoforge.options import EngineOptions, In2Options
from evoforge.records import Record


@holds_run_lock
async def in2_async(
    corpus: Sequence[str | Path] | Source,
    out: str | Path,
    *,
    in2: In2Options | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> RunSummary:
    """A corpus -> exactly ``in2.n`` IN2 samples (see ``evoforge.generators.in2``)."""
    from evoforge.engine.runner import update_manifest
    from evoforge.evolvers.base import exact_mix
    from evoforge.generators.in2 import (
        In2Planner,
        In2Selector,
        In2Task,
        SourceSampler,
        general_records,
        mix_weights,
    )
    from evoforge.generators.in2_assembly import Decontaminator, iter_corpus, load_tokenizer

    in2 = in2 or In2Options()
    options = options or EngineOptions()
    corpus = source_paths(corpus, out)
    weights = mix_weights(in2.mix, has_general=in2.general is not None)
    if in2.short_ratio is not None:
        rest = sum(v for k, v in weights.items() if k != "short")
        weights = {k: (v / rest) * (1 - in2.short_ratio) for k, v in weights.items()}
        weights["short"] = in2.short_ratio
    counts = exact_mix(in2.n, weights, options.seed)
    tokenizer = load_tokenizer(in2.tokenizer)
    decontaminator = Decontaminator.from_file(in2.decontaminate) if in2.decontaminate else None
    sampler = SourceSampler(
        counts, tokenizer, segment_tokens=in2.segment_tokens, max_short_tokens=in2.max_tokens,
        pool_capacity=in2.pool_capacity, seed=options.seed,
    )  # fmt: skip
    skipped: list[dict[str, str]] = []
    for doc in iter_corpus(
        corpus,
        text_field=in2.text_field,
        on_skip=lambda s: skipped.append({"path": s.path, "reason": s.reason}),
    ):
        if decontaminator is not None and decontaminator.contaminated(doc.text):
            continue
        sampler.consume(doc.id, doc.text)
    if sampler.documents == 0:
        raise InputError(f"no usable documents in {', '.join(map(str, corpus))}")
    general: list[Record] = []
    if in2.general:
        items = read_records(in2.general, kind="instruction", **SEED_FIELDS["instruction"])
        general = general_records(items, limit=max(1, counts["general"] * 2))
    planner = In2Planner(sampler, general, seed=options.seed)
    task = In2Task(sampler.pool, tokenizer, min_tokens=in2.min_tokens, max_tokens=in2.max_tokens)
    config = {
        "seed": options.seed,
        "in2": {**asdict(in2), "plan": counts, "format": None},
        "tokenizer": tokenizer.name,
        "prompts": prompt_hashes(["in2_fine_grained", "in2_integration"]),
    }
    client = build_client(options, model)
    try:
        summary, kept, passes = await run_passes(
            command="in2", kind="in2", task=task, out=out, config=config, options=options,
            client=client, counts=counts, plan=lambda need, _pass: planner.plan(need),
            selector=lambda: In2Selector(counts), max_passes=in2.max_passes,
            out_format=in2.format,
        )  # fmt: skip
    finally:
        await close_client(client)
    summary.extra.pop("selector")
    stopped = summary.stop_reason if summary.status != "complete" else None
    gaps = shortfall(counts, kept, planner.exhausted, passes, "sources", stopped=stopped)
    extras = {
        **mark_shortfall(summary, gaps),
        "plan": counts,
        "kept": dict(kept),
        "passes": passes,
        "documents": {"used": sampler.documents, "skipped": skipped},
        "decontamination": {
            "eval_file": in2.decontaminate,
            "documents_dropped": decontaminator.dropped if decontaminator else 0,
        },
        "tokenizer": tokenizer.name,
        "shortfall": gaps,
    }
    update_manifest(summary.manifest, extras)
    summary.extra = extras
    return summary


def in2(
    corpus: Sequence[str | Path] | Source,
    out: str | Path,
    *,
    in2: In2Options | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> RunSummary:
    """Build IN2 long-context training data: see :class:`In2Options`."""
    from evoforge.blocking import run_blocking

    return run_blocking(in2_async(corpus, out, in2=in2, options=options, model=model))
