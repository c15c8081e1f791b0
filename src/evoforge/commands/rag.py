"""``rag``: documents -> knowledge graph -> exactly N evaluation samples with
provenance (Ragas-style scenarios, critics, per-type quotas)."""

from __future__ import annotations

import contextlib
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from evoforge.commands.common import (
    Source,
    build_client,
    close_client,
    default_cache_dir,
    load_run_embedder,
    prompt_hashes,
    source_paths,
)
from evoforge.commands.exact_n import mark_shortfall, run_passes, shortfall
from evoforge.engine.runner import RunSummary
from evoforge.errors import ConfigError, InputError
from evoforge.io.lock import holds_run_lock
from evoforge.options import EngineOptions, RagOptions


def _rag_graph(report: Any, rag: RagOptions, options: EngineOptions) -> Any:
    """Load the graph from ``rag.graph`` when it exists and matches, else build (and save) it."""
    from evoforge.embeddings import EmbeddingCache
    from evoforge.generators.knowledge_graph import KnowledgeGraph
    from evoforge.io.documents import chunk_documents

    doc_ids = sorted(doc.id for doc in report.documents)
    chunking = {"size": rag.chunk_size, "overlap": rag.chunk_overlap, "unit": rag.chunk_unit}
    embedder = load_run_embedder(rag.embedder, options)
    if rag.graph and Path(rag.graph).exists():
        graph = KnowledgeGraph.load(rag.graph)
        built_with = graph.graph.graph.get("chunking")
        same = sorted(graph.documents()) == doc_ids and built_with == chunking
        if not same or graph.embedder_identity != embedder.identity:
            raise ConfigError(
                f"--graph {rag.graph} was built from other documents, chunk settings or "
                "embedder; delete it to rebuild, or point --graph at a new file"
            )
        return graph
    chunks = chunk_documents(
        report.documents, size=rag.chunk_size, overlap=rag.chunk_overlap, unit=rag.chunk_unit
    )
    if not chunks:
        raise ConfigError("the documents gave no chunks of text to ask questions about")
    threshold = rag.similarity
    if threshold is None:
        # Hashed n-grams give lower cosines than a trained encoder for the same relatedness.
        threshold = 0.3 if embedder.identity.get("backend") == "hashing" else 0.6
    cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
    with contextlib.ExitStack() as stack:
        cache = None
        if options.cache:
            cache = stack.enter_context(EmbeddingCache(cache_dir / "embeddings.db"))
        graph = KnowledgeGraph.build(
            report.documents, chunks, embedder, top_k=rag.top_k, threshold=threshold, cache=cache
        )
    graph.graph.graph["chunking"] = chunking
    if rag.graph:
        graph.save(rag.graph)
    return graph


@holds_run_lock
async def rag_async(
    docs: Sequence[str | Path] | Source,
    out: str | Path,
    *,
    rag: RagOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> RunSummary:
    """Documents -> knowledge graph -> exactly ``rag.n`` evaluation samples with provenance."""
    from evoforge.engine.runner import update_manifest
    from evoforge.evolvers.ragas_rewrites import COMPRESSED_OPS, rewrite_prompt_hashes
    from evoforge.generators.rag import (
        PERSONAS,
        STYLES,
        RagSampleTask,
        RagSelector,
        ScenarioPlanner,
        parse_mix,
        plan_counts,
    )
    from evoforge.generators.rag_nodes import NodeFilter
    from evoforge.io.documents import load_documents
    from evoforge.validators.critics import CriticPanel
    from evoforge.validators.critics.merged import (
        CRITIC_CALLS,
        critics_for,
        merged_prompts,
        resolve_critic_calls,
    )

    rag = rag or RagOptions()
    options = options or EngineOptions()
    if rag.critic_calls not in CRITIC_CALLS:
        raise ConfigError(
            f"--critic-calls: {rag.critic_calls!r}; one of: {', '.join(CRITIC_CALLS)}"
        )
    critic_calls = resolve_critic_calls(rag.critic_calls, options.llm, model)
    docs = source_paths(docs, out)
    report = load_documents(docs, text_field=rag.text_field)
    skipped = [{"path": s.path, "reason": s.reason, "detail": s.detail} for s in report.skipped]
    if not report.documents:
        reasons = (
            "; ".join(f"{s['path']}: {s['reason']}, {s['detail']}" for s in skipped[:5])
            or "no files"
        )
        raise InputError(f"no usable documents in {', '.join(map(str, docs))} ({reasons})")
    if rag.personas > len(PERSONAS):
        raise ConfigError(f"--personas: at most {len(PERSONAS)} built-in personas")
    styles = [s.strip() for s in (rag.styles or "").split(",") if s.strip()]
    for style in styles:
        if style not in STYLES:
            raise ConfigError(f"--styles: unknown style {style!r}; styles: {', '.join(STYLES)}")
    graph = _rag_graph(report, rag, options)
    counts = plan_counts(rag.n, parse_mix(rag.mix), options.seed)
    node_filter = NodeFilter() if rag.node_filter else None
    planner = ScenarioPlanner(
        graph, seed=options.seed, personas=PERSONAS[: rag.personas], styles=styles,
        excluded=node_filter.rejected if node_filter else None,
    )  # fmt: skip
    critics = CriticPanel(critics_for(critic_calls)) if rag.critics else None
    task = RagSampleTask(
        graph, critics=critics, max_words=rag.max_words, node_filter=node_filter,
        compress=rag.compress, keyphrases=rag.keyphrases,
    )  # fmt: skip
    settings = {**asdict(rag), "critic_calls": critic_calls}  # "auto" resolved
    if rag.decontaminate:  # benchmark questions (issue 14)
        from evoforge.generators.decontamination import Benchmarks, Decontaminated

        benchmarks = Benchmarks(rag.decontaminate)  # before the critics too (issue 19)
        task.before_critics = (("contaminated", "check.contaminated", benchmarks.verdict),)
        task = Decontaminated(task, benchmarks)
    else:
        settings.pop("decontaminate")  # manifests of runs without it stay as they were
    prompts = ["rag_seed_question", "critic_answerable", "critic_grounded", "rag_fix", "evol_equal"]
    prompts += merged_prompts(critic_calls) if rag.critics else []
    prompts += ["rag_context_score"] if rag.node_filter else []
    prompts += ["rag_keyphrases"] if rag.keyphrases == "llm" else []
    rewrites = [kind for kind in counts if kind != "simple"]  # a plugin's scenario included
    if rag.compress and any(kind in COMPRESSED_OPS for kind in rewrites):
        rewrites.append("compress")
    config = {
        "seed": options.seed,
        "rag": {**settings, "plan": counts, "format": None, "graph": None},
        "graph": {
            "chunks": graph.stats().get("chunks"),
            "embedder": graph.embedder_identity,
            "documents": sorted(graph.documents()),
        },  # fmt: skip
        "prompts": {**prompt_hashes(prompts), **rewrite_prompt_hashes(rewrites)},
    }
    client = build_client(options, model)
    try:
        summary, kept, passes = await run_passes(
            command="rag", kind="rag", task=task, out=out, config=config, options=options,
            client=client, counts=counts,
            plan=lambda need, pass_no: [s.as_record() for s in planner.plan(need, pass_no)],
            selector=lambda: RagSelector(counts), max_passes=rag.max_passes,
            out_format=rag.format,
        )  # fmt: skip
    finally:
        await close_client(client)
    stopped = summary.stop_reason if summary.status != "complete" else None
    gaps = shortfall(counts, kept, planner.exhausted, passes, "chunks", stopped=stopped)
    extras = {
        **mark_shortfall(summary, gaps),
        "documents": {"loaded": len(report.documents), "skipped": skipped},
        "graph": graph.stats(),
        "plan": counts,
        "kept": dict(kept),
        "passes": passes,
        "coverage": dict(summary.extra.pop("selector").coverage),
        "shortfall": gaps,
    }
    update_manifest(summary.manifest, extras)
    summary.extra = extras
    return summary


def rag(
    docs: Sequence[str | Path] | Source,
    out: str | Path,
    *,
    rag: RagOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> RunSummary:
    """Build a RAG evaluation set: see :class:`RagOptions` and ``evoforge.generators.rag``."""
    from evoforge.blocking import run_blocking

    return run_blocking(rag_async(docs, out, rag=rag, options=options, model=model))
