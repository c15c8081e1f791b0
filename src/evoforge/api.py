"""The Python API. Every CLI command is a thin shell over a function here.

    from evoforge import EngineOptions, answer

    summary = answer("seeds.jsonl", "out/answers.jsonl",
                     options=EngineOptions(llm="openai:gpt-4o-mini", concurrency=64))
    print(summary.accepted, summary.rejected_by_reason)

``model=`` also takes a ChatModel or any LangChain ``BaseChatModel`` instance.
"""

from __future__ import annotations

import asyncio
import contextlib
import difflib
import os
from collections import Counter
from collections.abc import Callable, Iterable, Sequence
from dataclasses import asdict, dataclass, field, fields
from pathlib import Path
from typing import Any

from evoforge.engine.client import Limits, LLMClient, RetryPolicy
from evoforge.engine.runner import Run, RunSummary, SeedItem, Task
from evoforge.engine.store import ResponseCache
from evoforge.errors import ConfigError, InputError, did_you_mean
from evoforge.io.readers import SEED_FIELDS, count_items, count_rows, load_jsonl, read_records
from evoforge.llm.base import ChatModel
from evoforge.llm.spec import DEFAULT_SPEC, is_local, load_chat_model
from evoforge.progress import ProgressBar
from evoforge.records import KINDS, Record


@dataclass
class EngineOptions:
    """Engine settings shared by every command. Unknown names are errors."""

    llm: str = DEFAULT_SPEC
    llm_args: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = None  # None: the backend's default (greedy for local)
    max_output_tokens: int | None = None  # per reply; None: 512
    concurrency: int = 16
    rpm: float | None = None
    tpm: float | None = None
    max_calls: int | None = None
    max_tokens: int | None = None  # total token budget of the run
    timeout: float | None = 120.0  # per attempt; the local model has none
    max_attempts: int = 6
    backoff_base: float = 1.0
    max_retry_wait: float = 300.0  # a longer Retry-After stops the run (resumable)
    cache: bool = True
    cache_dir: str | None = None
    seed: int = 0
    overwrite: bool = False
    quiet: bool = False

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineOptions:
        names = {f.name for f in fields(cls)}
        for key in data:
            if key not in names:
                hint = difflib.get_close_matches(key, list(names), n=1)
                suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
                raise ConfigError(f"unknown engine option {key!r}{suggestion}")
        return cls(**data)

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        for name in ("rpm", "tpm", "max_calls", "max_tokens", "max_output_tokens"):
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")


def default_cache_dir() -> Path:
    env = os.environ.get("EVOFORGE_CACHE_DIR")
    if env:
        return Path(env)
    from platformdirs import user_cache_dir

    return Path(user_cache_dir("evoforge"))


def _resolve_model(options: EngineOptions, model: Any) -> ChatModel:
    if model is None:
        return load_chat_model(options.llm, options.llm_args)
    if isinstance(model, ChatModel):
        return model
    from evoforge.llm.langchain_backend import LangChainChatModel

    return LangChainChatModel(model)


def build_client(options: EngineOptions, model: Any = None) -> LLMClient:
    chat_model = _resolve_model(options, model)
    params: dict[str, Any] = {"max_tokens": options.max_output_tokens or 512}
    if options.temperature is not None:
        params["temperature"] = options.temperature
    cache = None
    if options.cache:
        cache_dir = Path(options.cache_dir) if options.cache_dir else default_cache_dir()
        cache = ResponseCache(cache_dir / "llm-cache.db")
    return LLMClient(
        chat_model,
        limits=Limits(
            concurrency=options.concurrency,
            rpm=options.rpm,
            tpm=options.tpm,
            max_calls=options.max_calls,
            max_tokens=options.max_tokens,
        ),
        retry=RetryPolicy(
            max_attempts=options.max_attempts,
            backoff_base=options.backoff_base,
            max_retry_after=options.max_retry_wait,
            request_timeout=None if is_local(chat_model) else options.timeout,
        ),
        cache=cache,
        params=params,
        jitter_seed=options.seed,
    )


async def run_task_async(
    *,
    command: str,
    task: Task,
    kind: str,
    items: Iterable[SeedItem],
    out: str | Path,
    options: EngineOptions,
    config: dict[str, Any],
    model: Any = None,
    total: int | None = None,
) -> RunSummary:
    """Run ``task`` over ``items`` with the engine's policies; write OUT, rejects, manifest."""
    client = build_client(options, model)
    engine_config = {
        "model": client.model.identity,
        "params": client.params,
        **config,
    }
    try:
        progress = ProgressBar(command, total, enabled=None if not options.quiet else False)
        with progress:
            run = Run(
                command=command,
                task=task,
                kind=kind,
                client=client,
                out=out,
                config=engine_config,
                seed=options.seed,
                overwrite=options.overwrite,
                progress=progress.update if progress.enabled else None,
                settings=_engine_settings(options),
            )
            return await run.execute(items)
    finally:
        await client.aclose()
        if client.cache is not None:
            client.cache.close()


_SECRET_WORDS = ("key", "token", "secret", "password")


def _engine_settings(options: EngineOptions) -> dict[str, Any]:
    """The settings for the manifest, with anything that looks like a credential masked."""
    settings = asdict(options)
    settings.pop("quiet")
    settings["llm_args"] = {
        name: "***" if any(word in name.lower() for word in _SECRET_WORDS) else value
        for name, value in settings["llm_args"].items()
    }
    return settings


# A path, or records in memory: a ``datasets.Dataset`` or an iterable of dicts.
Source = str | os.PathLike[str] | Iterable[dict[str, Any]]


def source_path(source: Source, out: str | Path) -> str | os.PathLike[str]:
    """``source`` if it is a path; else its rows written to ``OUT.input.jsonl`` beside the
    output (the same rows give the same file, so a re-run resumes like one from a file)."""
    from evoforge.export import is_path, rows_to_jsonl

    if is_path(source):
        return source  # type: ignore[return-value]
    out = Path(out)
    return rows_to_jsonl(source, out.with_name(f"{out.stem}.input.jsonl"))


def source_paths(sources: Any, out: str | Path) -> list[Any]:
    """Document or corpus paths, or rows in memory (dicts with a text field): see
    :func:`source_path`."""
    from evoforge.export import is_path

    if is_path(sources):
        return [sources]
    if hasattr(sources, "column_names"):  # a datasets.Dataset
        return [source_path(sources, out)]
    items = list(sources)
    if items and all(isinstance(item, dict) for item in items):
        return [source_path(items, out)]
    return items


def answer(
    seeds: Source,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    allow_truncated: bool = False,
) -> RunSummary:
    """Write an ``output`` for every instruction seed in ``seeds`` (the answer step)."""
    return asyncio.run(
        answer_async(
            seeds,
            out,
            options=options,
            field_map=field_map,
            model=model,
            allow_truncated=allow_truncated,
        )
    )


async def answer_async(
    seeds: Source,
    out: str | Path,
    *,
    options: EngineOptions | None = None,
    field_map: dict[str, str] | None = None,
    model: Any = None,
    allow_truncated: bool = False,
) -> RunSummary:
    from evoforge.generators.instructions import AnswerInstructions

    options = options or EngineOptions()
    seeds = source_path(seeds, out)
    task = AnswerInstructions(allow_truncated=allow_truncated)
    assert task.template is not None
    items = read_records(
        seeds,
        kind="instruction",
        required=("instruction",),
        optional={"input": ""},
        field_map=field_map,
    )
    return await run_task_async(
        command="answer",
        task=task,
        kind="instruction",
        items=items,
        out=out,
        options=options,
        config={
            "seed": options.seed,
            "prompts": {task.template.id: task.template.content_hash},
            "allow_truncated": allow_truncated,
        },
        model=model,
        total=count_rows(seeds),
    )


EVOLVE_KINDS = ("instruction", "qa", "rag")
DEFAULT_REWRITE_MIX = "reasoning=0.25,multi_context=0.25,conditional=0.25,conversational=0.25"


@dataclass
class EvolveOptions:
    """What ``evolve`` does. Instructions: Evol-Instruct rounds (+ Evol-Quality);
    questions (``qa`` / ``rag`` seeds): one Ragas-style rewrite each, by ``mix``."""

    kind: str = "instruction"
    rounds: int = 4
    ops: str | None = None  # "constraints=2,breadth=1"; None = uniform
    answers: bool = False
    judge: bool = True
    quality_rounds: int = 0
    quality_ops: str | None = None
    keep_all_rounds: bool = False
    mix: str | None = None  # qa / rag: "reasoning=0.5,conditional=0.5"
    max_words: dict[str, int] | None = None  # qa / rag: per rewrite op

    def __post_init__(self) -> None:
        if self.kind not in EVOLVE_KINDS:
            raise ConfigError(
                f"--kind {self.kind!r}: evolve takes {', '.join(EVOLVE_KINDS)}"
                + did_you_mean(self.kind, EVOLVE_KINDS)
            )
        if self.rounds < 0 or self.quality_rounds < 0:
            raise ConfigError("--rounds and --quality-rounds must be 0 or more")


def _prompt_hashes(template_ids: Iterable[str]) -> dict[str, str]:
    from evoforge.prompting import builtin_template

    return {tid: builtin_template(tid).content_hash for tid in template_ids}


def _instruction_task(evolve: EvolveOptions) -> tuple[Task, dict[str, Any]]:
    from evoforge.evolvers.base import Chain, EvolutionRounds, parse_weights
    from evoforge.evolvers.evol_instruct import OPS, EvolInstruct
    from evoforge.evolvers.evol_quality import QUALITY_OPS, EvolQuality

    weights = parse_weights(evolve.ops, OPS)
    stages: list[Task] = [
        EvolutionRounds(
            EvolInstruct(weights=weights, answers=evolve.answers, judge=evolve.judge),
            rounds=evolve.rounds,
            keep_all_rounds=evolve.keep_all_rounds,
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
                keep_all_rounds=evolve.keep_all_rounds,
            )
        )
        prompts += [f"evol_quality_{op}" for op in QUALITY_OPS]
        config["quality_ops"] = quality
    config["prompts"] = _prompt_hashes(prompts)
    return Chain(stages), config


def _question_task(evolve: EvolveOptions, n: int, seed: int) -> tuple[Task, dict[str, Any]]:
    from evoforge.evolvers.ragas_rewrites import REWRITE_OPS, RewriteMix, mix_from_spec

    plan = mix_from_spec(evolve.mix or DEFAULT_REWRITE_MIX, n, seed)
    task = RewriteMix(plan, max_words=evolve.max_words)
    config = {
        "mix": plan.counts,
        "prompts": _prompt_hashes(f"rewrite_{op}" for op in REWRITE_OPS),
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
    settings = asdict(evolve)
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
    return asyncio.run(
        evolve_async(
            seeds, out, evolution=evolution, options=options, field_map=field_map, model=model
        )
    )


@dataclass
class RagOptions:
    """What ``rag`` builds. Defaults are written down here, once."""

    n: int = 50
    mix: str | None = None  # default: simple 0.4, reasoning 0.2, multi_context 0.2, ...
    chunk_size: int = 1000
    chunk_overlap: int = 100
    chunk_unit: str = "chars"  # or "tokens"
    embedder: str = "minilm"  # "hashing", "openai:MODEL[@URL]"
    graph: str | None = None  # node-link JSON to save, and to reuse when present
    top_k: int = 5
    similarity: float | None = None  # cosine of similarity edges; None: 0.6, hashing 0.3
    personas: int = 0
    styles: str | None = None  # e.g. "web_search,misspelled,formal"
    critics: bool = True
    max_words: dict[str, int] | None = None
    max_passes: int = 4
    text_field: str = "text"
    format: str | None = None  # jsonl, json, csv, parquet, ragas, deepeval

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("--n must be at least 1")
        if self.max_passes < 1:
            raise ConfigError("--max-passes must be at least 1")


def _rag_graph(report: Any, rag: RagOptions, options: EngineOptions) -> Any:
    """Load the graph from ``rag.graph`` when it exists and matches, else build (and save) it."""
    from evoforge.embeddings import EmbeddingCache, load_embedder
    from evoforge.generators.knowledge_graph import KnowledgeGraph
    from evoforge.io.documents import chunk_documents

    doc_ids = sorted(doc.id for doc in report.documents)
    chunking = {"size": rag.chunk_size, "overlap": rag.chunk_overlap, "unit": rag.chunk_unit}
    embedder = load_embedder(rag.embedder)
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


def _shortfall(
    counts: dict[str, int], kept: Counter[str], exhausted: set[str], passes: int, material: str
) -> dict[str, dict[str, Any]]:
    """Per type that fell short: how many are missing and why."""
    return {
        kind: {
            "missing": counts[kind] - kept[kind],
            "why": f"the corpus has no unused {material} left for it"
            if kind in exhausted
            else f"samples kept failing the checks after {passes} passes (see the rejects)",
        }
        for kind in counts
        if kept[kind] < counts[kind]
    }


async def _close(client: LLMClient) -> None:
    await client.aclose()
    if client.cache is not None:
        client.cache.close()


async def _run_passes(
    *,
    command: str,
    kind: str,
    task: Task,
    out: str | Path,
    config: dict[str, Any],
    options: EngineOptions,
    client: LLMClient,
    counts: dict[str, int],
    plan: Callable[[dict[str, int], int], list[Record]],
    selector: Callable[[], Any],
    max_passes: int,
    out_format: str | None,
) -> tuple[RunSummary, Counter[str], int]:
    """Run planned scenarios until each type has its count: pass 1 plans exactly the
    counts, later passes plan what is missing (with a margin) from fresh material.

    All passes share one journal, so a re-run replays them without paying again;
    ``selector`` (per-type quotas, duplicates) decides what is written. Returns the
    last summary (its ``extra["selector"]`` is the last selector), the kept counts
    per type, and the number of passes run.
    """
    from evoforge.generators.rag import deficits

    selectors: list[Any] = []

    def select() -> Any:
        selectors.append(selector())
        return selectors[-1]

    summary: RunSummary | None = None
    kept: Counter[str] = Counter()
    passes = 0
    progress = ProgressBar(command, sum(counts.values()), enabled=False if options.quiet else None)
    with progress:
        for pass_no in range(1, max_passes + 1):
            items = plan(deficits(counts, kept, factor=1.0 if pass_no == 1 else 1.5), pass_no)
            if not items:
                break
            passes = pass_no
            run = Run(
                command=command, task=task, kind=kind, client=client, out=out, config=config,
                seed=options.seed, overwrite=options.overwrite and pass_no == 1,
                progress=progress.update if progress.enabled else None,
                settings=_engine_settings(options), out_format=out_format, select=select,
            )  # fmt: skip
            summary = await run.execute(items)
            kept = selectors[-1].kept
            if summary.status != "complete" or all(kept[k] >= v for k, v in counts.items()):
                break
    if summary is None:
        raise ConfigError("nothing to plan: the inputs give no material for any sample")
    summary.extra["selector"] = selectors[-1]
    return summary, kept, passes


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
    from evoforge.generators.rag import (
        PERSONAS,
        STYLES,
        RagSampleTask,
        RagSelector,
        ScenarioPlanner,
        parse_mix,
        plan_counts,
    )
    from evoforge.io.documents import load_documents
    from evoforge.validators.critics import CriticPanel

    rag = rag or RagOptions()
    options = options or EngineOptions()
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
    planner = ScenarioPlanner(
        graph, seed=options.seed, personas=PERSONAS[: rag.personas], styles=styles
    )
    critics = CriticPanel() if rag.critics else None
    task = RagSampleTask(graph, critics=critics, max_words=rag.max_words)
    prompts = ["rag_seed_question", "critic_answerable", "critic_grounded", "rag_fix", "evol_equal"]
    prompts += [f"rewrite_{kind}" for kind in counts if kind != "simple"]
    config = {
        "seed": options.seed,
        "rag": {**asdict(rag), "plan": counts, "format": None, "graph": None},
        "graph": {
            "chunks": graph.stats().get("chunks"),
            "embedder": graph.embedder_identity,
            "documents": sorted(graph.documents()),
        },  # fmt: skip
        "prompts": _prompt_hashes(prompts),
    }
    client = build_client(options, model)
    try:
        summary, kept, passes = await _run_passes(
            command="rag", kind="rag", task=task, out=out, config=config, options=options,
            client=client, counts=counts,
            plan=lambda need, pass_no: [s.as_record() for s in planner.plan(need, pass_no)],
            selector=lambda: RagSelector(counts), max_passes=rag.max_passes,
            out_format=rag.format,
        )  # fmt: skip
    finally:
        await _close(client)
    shortfall = _shortfall(counts, kept, planner.exhausted, passes, "chunks")
    extras = {
        "documents": {"loaded": len(report.documents), "skipped": skipped},
        "graph": graph.stats(),
        "plan": counts,
        "kept": dict(kept),
        "passes": passes,
        "coverage": dict(summary.extra.pop("selector").coverage),
        "shortfall": shortfall,
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
    return asyncio.run(rag_async(docs, out, rag=rag, options=options, model=model))


@dataclass
class In2Options:
    """What ``in2`` builds (defaults from An et al., 2024)."""

    n: int = 100
    min_tokens: int = 4096
    max_tokens: int = 32768
    segment_tokens: int = 128
    short_ratio: float | None = None  # None: the paper's 9%; else the short share of the mix
    mix: str | None = None  # fine_grained=0.63,integration=0.17,short=0.09,general=0.11
    general: str | None = None  # instruction records for the general share
    decontaminate: str | None = None  # evaluation examples: drop documents sharing a 10-gram
    tokenizer: str | None = None  # None: the embedded model's; "regex"; or a tokenizer folder
    text_field: str = "text"
    pool_capacity: int = 20000
    max_passes: int = 3
    format: str | None = None  # jsonl (default), json, csv, parquet, plain

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("--n must be at least 1")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ConfigError("--min-tokens must be positive and at most --max-tokens")
        if self.short_ratio is not None and not 0 <= self.short_ratio < 1:
            raise ConfigError("--short-ratio must be in [0, 1)")


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
        "prompts": _prompt_hashes(["in2_fine_grained", "in2_integration"]),
    }
    client = build_client(options, model)
    try:
        summary, kept, passes = await _run_passes(
            command="in2", kind="in2", task=task, out=out, config=config, options=options,
            client=client, counts=counts, plan=lambda need, _pass: planner.plan(need),
            selector=lambda: In2Selector(counts), max_passes=in2.max_passes,
            out_format=in2.format,
        )  # fmt: skip
    finally:
        await _close(client)
    summary.extra.pop("selector")
    extras = {
        "plan": counts,
        "kept": dict(kept),
        "passes": passes,
        "documents": {"used": sampler.documents, "skipped": skipped},
        "decontamination": {
            "eval_file": in2.decontaminate,
            "documents_dropped": decontaminator.dropped if decontaminator else 0,
        },
        "tokenizer": tokenizer.name,
        "shortfall": _shortfall(counts, kept, planner.exhausted, passes, "sources"),
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
    return asyncio.run(in2_async(corpus, out, in2=in2, options=options, model=model))


def _read_evoforge_records(path: str | Path) -> Iterable[Record | InputError]:
    """Records written by evoforge (with ``id`` and ``kind``); other rows are errors."""
    from evoforge.io.readers import iter_rows

    for item in iter_rows(path):
        if isinstance(item, InputError):
            yield item
            continue
        line, data = item
        if not data.get("id") or data.get("kind") not in KINDS:
            yield InputError(
                "is not an evoforge record (needs an id and a kind)", path=str(path), line=line
            )
            continue
        yield Record.from_json(data)


SCORERS = {"deita": "DeitaScorer", "alpagasus": "AlpagasusRater"}


@dataclass
class SelectOptions:
    method: str = "deita"  # deita | alpagasus | kcenter | random
    budget: int | None = None
    tau: float = 0.9
    min_score: float = 4.5
    embedder: str = "minilm"
    fields: list[str] | None = None
    clusters: int | None = None  # k-center: k-means clusters (default budget // 10)


async def select_async(
    source: Source,
    out: str | Path,
    *,
    selection: SelectOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Score (DEITA, AlpaGasus: LLM judges through the engine) and select a subset.

    Writes ``OUT`` (the selected records, in input order), ``OUT.rejects.jsonl``
    (every other record with its reason: ``too_similar`` with the id and cosine it
    lost to, ``over_budget``, ``low_score``, ``not_selected``, ``unscored``) and
    ``OUT.manifest.json``. Scores go to ``OUT.scored.jsonl`` (journaled and cached,
    so a re-run pays nothing).
    """
    import json

    from evoforge.engine.runner import output_paths
    from evoforge.io.writers import format_for, open_writer
    from evoforge.validators import select as selection_module

    selection = selection or SelectOptions()
    options = options or EngineOptions()
    source = source_path(source, out)
    out = Path(out)
    paths = output_paths(out)
    records: list[Any]
    if selection.method in SCORERS:
        stem = out.name[: -len(out.suffix)] if out.suffix else out.name
        scored_path = out.with_name(f"{stem}.scored.jsonl")
        scorer = getattr(selection_module, SCORERS[selection.method])()
        first = next((r for r in _read_evoforge_records(source) if isinstance(r, Record)), None)
        scoring = await run_task_async(
            command=f"select-{selection.method}", task=scorer,
            kind=first.kind if first is not None else "instruction",
            items=_read_evoforge_records(source), out=scored_path, options=options,
            config={"method": selection.method, "seed": options.seed}, model=model,
        )  # fmt: skip
        records = [Record.from_json(r) for r in load_jsonl(scored_path)]
        scoring_report = {"scored": scoring.accepted, "rejected": scoring.rejected_by_reason}
    else:
        records = []
        for item in _read_evoforge_records(source):
            if isinstance(item, InputError):
                raise item
            records.append(item)
        scoring_report = {}
    kwargs: dict[str, Any] = {}
    if selection.method == "deita":
        kwargs = {"tau": selection.tau, "fields": selection.fields}
    elif selection.method == "alpagasus":
        kwargs = {"min_score": selection.min_score}
    elif selection.method == "kcenter":
        kwargs = {"k": selection.clusters, "seed": options.seed, "fields": selection.fields}
    else:
        kwargs = {"seed": options.seed}
    if selection.method in ("deita", "kcenter") and not (
        selection.method == "deita" and selection.tau >= 1
    ):
        from evoforge.embeddings import load_embedder

        kwargs["embedder"] = load_embedder(selection.embedder)
    selected, dropped = selection_module.select(
        records, selection.method, selection.budget, **kwargs
    )
    writer = open_writer(paths["out"], format_for(paths["out"], None))
    for record in selected:
        writer.write(record.to_json() if isinstance(record, Record) else record)
    writer.close()
    reasons: Counter[str] = Counter()
    rejects = open_writer(paths["rejects"], "jsonl")
    for rejection in dropped:
        rejects.write(rejection.to_json())
        reasons[rejection.reason] += 1
    rejects.close()
    report = {
        "method": selection.method,
        "budget": selection.budget,
        "input": len(records),
        "selected": len(selected),
        "dropped_by_reason": dict(reasons.most_common()),
        "settings": asdict(selection),
        "scoring": scoring_report,
        "files": {"out": str(paths["out"]), "rejects": str(paths["rejects"])},
    }
    paths["manifest"].write_text(json.dumps(report, indent=2, default=str) + "\n", "utf-8")
    return report


def select(
    source: Source,
    out: str | Path,
    *,
    selection: SelectOptions | None = None,
    options: EngineOptions | None = None,
    model: Any = None,
) -> dict[str, Any]:
    """Select the best-and-most-diverse subset: see :func:`select_async`."""
    return asyncio.run(select_async(source, out, selection=selection, options=options, model=model))


DEDUP_FIELDS = {
    "instruction": ("instruction", "output"),
    "qa": ("question",),
    "rag": ("user_input",),
    "in2": ("messages",),
}


def dedup_fields(records: list[dict[str, Any]]) -> tuple[str, ...]:
    """The fields compared by default: by the first record's kind."""
    kind = records[0].get("kind") if records else None
    return DEDUP_FIELDS.get(kind or "", ("instruction", "output"))


def field_score(path: str) -> Callable[[dict[str, Any]], float]:
    """``"meta.deita.score"`` -> a function giving a record that value (or -inf)."""

    def score(record: dict[str, Any]) -> float:
        value: Any = record
        for part in path.split("."):
            value = value.get(part) if isinstance(value, dict) else None
        return float(value) if isinstance(value, int | float) else float("-inf")

    return score


class JsonlRows(Sequence[dict[str, Any]]):
    """The records of a JSON-lines file a step wrote, read when asked instead of held:
    iterating streams the file; indexing reads it into memory once."""

    def __init__(self, path: Path, count: int) -> None:
        self.path = path
        self.count = count
        self._rows: list[dict[str, Any]] | None = None

    def __len__(self) -> int:
        return self.count

    def __iter__(self) -> Any:
        if self._rows is not None:
            yield from self._rows
            return
        import json

        with open(self.path, encoding="utf-8") as handle:
            for line in handle:
                if line.strip():
                    yield json.loads(line)

    def __getitem__(self, index: Any) -> Any:
        if self._rows is None:
            self._rows = list(iter(self))
        return self._rows[index]


@dataclass
class DedupResult:
    """What :func:`dedup` kept (input order) and dropped: each dropped record as
    ``{"id", "reason", "method", "lost_to", "similarity", "detail"}``, and the counts.
    A JSON-lines file deduplicated into a JSON-lines ``out`` is streamed (memory does
    not grow with the records): ``kept`` and ``dropped`` then read the written files."""

    kept: Sequence[dict[str, Any]]
    dropped: Sequence[dict[str, Any]]
    summary: dict[str, Any]
    out: Path | None = None

    def to_dataset(self, to: str | None = None) -> Any:
        """The kept records as a ``datasets.Dataset`` (see :func:`evoforge.to_dataset`)."""
        from evoforge.export import to_dataset

        return to_dataset(list(self.kept), to=to)


def _streamable(source: Any, out: str | Path | None) -> bool:
    """A JSON-lines file into a JSON-lines output: dedup can stream it."""
    from evoforge.io.writers import format_for

    return (
        isinstance(source, str | os.PathLike)
        and Path(source).suffix == ".jsonl"
        and out is not None
        and format_for(Path(out), None) == "jsonl"
    )


def _first_jsonl_record(path: Path) -> list[dict[str, Any]]:
    import json

    with open(path, encoding="utf-8", errors="replace") as handle:
        for line in handle:
            if line.strip():
                try:
                    first = json.loads(line)
                except json.JSONDecodeError:
                    return []  # the streaming reader names the line
                return [first] if isinstance(first, dict) else []
    return []


def dedup(
    source: Source,
    out: str | Path | None = None,
    *,
    method: str = "exact,minhash",
    threshold: float = 0.7,
    semantic_threshold: float = 0.9,
    fields: Sequence[str] | None = None,
    embedder: str = "minilm",
    prefer: str | None = None,
    clusters: str | Path | None = None,
    seed: int = 1,
    shards: int = 1,
) -> DedupResult:
    """Drop exact, near (MinHash LSH) and semantic duplicates, one kept per group
    (see :class:`evoforge.validators.dedup.NearDuplicateGraph`).

    ``source`` is a path, a ``datasets.Dataset`` or an iterable of dicts, each with an
    ``id``. With ``out`` the kept records go there, the dropped ones to
    ``OUT.rejects.jsonl`` and the counts to ``OUT.manifest.json``. ``prefer`` keeps the
    record with the highest value of that field per group (e.g. ``meta.deita.score``);
    ``clusters`` writes each duplicate group as a JSON line; ``shards`` computes the
    MinHash signatures in that many worker processes (the result is the same).
    A ``.jsonl`` source with a ``.jsonl`` out is streamed: per record only its id,
    digests and band keys stay in memory, and candidate pairs are re-read by offset.
    """
    from evoforge.io.readers import iter_rows
    from evoforge.validators.dedup import NearDuplicateGraph

    methods = tuple(m.strip() for m in method.split(",") if m.strip())
    if shards < 1:
        raise ConfigError(f"dedup: shards must be at least 1, got {shards}")
    stream = _streamable(source, out)
    records: list[dict[str, Any]] = []
    if stream:
        sample = _first_jsonl_record(Path(source))  # type: ignore[arg-type]
    elif isinstance(source, str | os.PathLike):
        for item in iter_rows(source):
            if isinstance(item, InputError):
                raise item
            records.append(item[1])
        sample = records
    else:
        from evoforge.export import iter_dicts

        records = list(iter_dicts(source))
        sample = records
    model = None
    if "semantic" in methods:
        from evoforge.embeddings import load_embedder

        model = load_embedder(embedder)
    compared = tuple(fields) if fields else dedup_fields(sample)
    settings = dict(
        methods=methods, threshold=threshold, semantic_threshold=semantic_threshold,
        fields=compared, seed=seed, embedder=model, shards=shards,
    )  # fmt: skip
    score = field_score(prefer) if prefer else None
    info: dict[str, Any] = {"fields": list(compared), "clusters": clusters}
    try:
        if stream:
            return _dedup_streamed(Path(source), Path(out), score, settings, info)  # type: ignore[arg-type]
        graph = NearDuplicateGraph(**settings).build(records)  # type: ignore[arg-type]
    except ValueError as exc:
        raise ConfigError(f"dedup: {exc}") from None
    kept, dropped = graph.resolve(score)
    if clusters is not None:
        graph.write_clusters(clusters, score)
    info["groups"] = len(graph.components())
    if out is not None:
        summary = write_dedup(Path(out), kept, dropped, **info)
    else:
        summary = _dedup_counts(kept, dropped, **info)
    return DedupResult(kept, dropped, summary, Path(out) if out is not None else None)


def _dedup_streamed(
    source: Path,
    out: Path,
    score: Callable[[dict[str, Any]], float] | None,
    settings: dict[str, Any],
    info: dict[str, Any],
) -> DedupResult:
    from evoforge.engine.runner import output_paths
    from evoforge.validators.dedup import dedup_jsonl

    paths = output_paths(out)
    counts = dedup_jsonl(
        source, out, paths["rejects"], score=score, clusters=info["clusters"], **settings
    )
    summary = {**counts, **info}
    _write_dedup_manifest(out, summary)
    kept = JsonlRows(out, counts["kept"])
    dropped = JsonlRows(paths["rejects"], counts["dropped"])
    return DedupResult(kept, dropped, summary, out)


def _dedup_counts(kept: Sequence[dict], dropped: Sequence[dict], **info: Any) -> dict[str, Any]:
    by_method = Counter(rejection.get("method", "?") for rejection in dropped)
    return {"input": len(kept) + len(dropped), "kept": len(kept), "dropped": len(dropped),
            "dropped_by_method": dict(by_method), **info}  # fmt: skip


def write_dedup(out: Path, kept: list[dict], dropped: list[dict], **info: Any) -> dict[str, Any]:
    """Write dedup's kept records, its rejects (each with the id it lost to) and a
    manifest beside them; return the manifest's counts."""
    from evoforge.engine.runner import output_paths
    from evoforge.io.writers import format_for, open_writer

    paths = output_paths(out)
    writer = open_writer(out, format_for(out, None))
    for record in kept:
        writer.write(record)
    writer.close()
    rejects = open_writer(paths["rejects"], "jsonl")
    for rejection in dropped:
        rejects.write(rejection)
    rejects.close()
    summary = _dedup_counts(kept, dropped, **info)
    _write_dedup_manifest(out, summary)
    return summary


def _write_dedup_manifest(out: Path, summary: dict[str, Any]) -> None:
    import json

    from evoforge.engine.runner import output_paths
    from evoforge.io.writers import atomic_text

    paths = output_paths(out)
    manifest = {"command": "dedup", **summary,
                "files": {"out": str(out), "rejects": str(paths["rejects"])}}  # fmt: skip
    atomic_text(paths["manifest"], json.dumps(manifest, indent=2, default=str) + "\n")
