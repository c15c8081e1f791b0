"""The ``evoforge`` command line. Each command is a thin shell over :mod:`evoforge.api`.

Exit codes: 0 done; 1 ``validate`` found invalid records; 2 bad input, flag or
config (the message names the file, line and field); 3 the run stopped early
(budget, long Retry-After) and a re-run resumes; 4 out of quota (a re-run
resumes); 130 interrupted.
"""

from __future__ import annotations

import functools
import inspect
import json
import sys
import typing
from pathlib import Path
from typing import Annotated, Any

import typer

from evoforge.errors import EvoforgeError, redact

app = typer.Typer(
    name="evoforge",
    help="Synthetic data for LLM training and evaluation: answer, evolve, RAG eval sets, IN2.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

# Engine options shared by every command that calls a model.
Llm = Annotated[
    str,
    typer.Option(
        "--llm",
        help="local | openai:MODEL | openai:MODEL@BASE_URL | langchain:pkg.module:Class",
        rich_help_panel="Model",
    ),
]
LlmArg = Annotated[
    list[str] | None,
    typer.Option(
        "--llm-arg", help="key=value for the backend (JSON values allowed)", rich_help_panel="Model"
    ),
]
Temperature = Annotated[
    float | None, typer.Option(help="Sampling temperature.", rich_help_panel="Model")
]
MaxOutput = Annotated[
    int | None,
    typer.Option(
        "--max-output-tokens", help="Tokens per reply (default 512).", rich_help_panel="Model"
    ),
]
Concurrency = Annotated[
    int, typer.Option(help="Requests in flight at most.", rich_help_panel="Engine")
]
Rpm = Annotated[float | None, typer.Option(help="Requests per minute.", rich_help_panel="Engine")]
Tpm = Annotated[float | None, typer.Option(help="Tokens per minute.", rich_help_panel="Engine")]
MaxCalls = Annotated[
    int | None, typer.Option(help="Stop cleanly after this many calls.", rich_help_panel="Budget")
]
MaxTokens = Annotated[
    int | None,
    typer.Option(help="Stop cleanly after this many tokens in total.", rich_help_panel="Budget"),
]
Timeout = Annotated[
    float, typer.Option(help="Seconds per attempt (remote models).", rich_help_panel="Engine")
]
MaxAttempts = Annotated[
    int, typer.Option(help="Attempts per call for transient errors.", rich_help_panel="Engine")
]
MaxRetryWait = Annotated[
    float,
    typer.Option(
        help="Longest Retry-After to honour; a longer one stops the run (resumable).",
        rich_help_panel="Engine",
    ),
]
NoCache = Annotated[
    bool, typer.Option("--no-cache", help="Do not read or write the response cache.")
]
CacheDir = Annotated[
    Path | None,
    typer.Option(help="Response cache folder (default: user cache dir, or EVOFORGE_CACHE_DIR)."),
]
Seed = Annotated[int, typer.Option(help="Run seed: the same seed gives the same output.")]
Overwrite = Annotated[
    bool, typer.Option("--overwrite", help="Start over instead of resuming a previous run.")
]
Quiet = Annotated[bool, typer.Option("--quiet", "-q", help="No progress bar.")]
FieldMap = Annotated[
    list[str] | None,
    typer.Option("--field", help="Map a record field to a column: instruction=prompt"),
]


def _engine_options(**kwargs: Any) -> Any:
    from evoforge.api import EngineOptions
    from evoforge.llm.spec import parse_llm_args

    kwargs["llm_args"] = parse_llm_args(kwargs.pop("llm_arg", None))
    kwargs["cache"] = not kwargs.pop("no_cache")
    if kwargs.get("cache_dir") is not None:
        kwargs["cache_dir"] = str(kwargs["cache_dir"])
    return EngineOptions(**kwargs)


_ENGINE_PARAMS: list[tuple[str, Any, Any]] = [
    ("llm", Llm, "local"),
    ("llm_arg", LlmArg, None),
    ("temperature", Temperature, None),
    ("max_output_tokens", MaxOutput, None),
    ("concurrency", Concurrency, 16),
    ("rpm", Rpm, None),
    ("tpm", Tpm, None),
    ("max_calls", MaxCalls, None),
    ("max_tokens", MaxTokens, None),
    ("timeout", Timeout, 120.0),
    ("max_attempts", MaxAttempts, 6),
    ("max_retry_wait", MaxRetryWait, 300.0),
    ("no_cache", NoCache, False),
    ("cache_dir", CacheDir, None),
    ("seed", Seed, 0),
    ("overwrite", Overwrite, False),
    ("quiet", Quiet, False),
]


def with_engine_options(*, max_tokens_flag: str = "--max-tokens") -> Any:
    """Give a command every engine flag (model, limits, budgets, cache, seed) once,
    and hand it the parsed ``EngineOptions`` as ``options``.

    ``max_tokens_flag`` renames the token budget where a command's own
    ``--max-tokens`` means something else (``in2``: the longest context).
    """

    def decorate(fn: Any) -> Any:
        own = [p for p in _typer_parameters(fn) if p.name != "options"]
        engine = []
        renamed = {}  # python parameter name -> EngineOptions field
        for name, annotation, default in _ENGINE_PARAMS:
            if name == "max_tokens" and max_tokens_flag != "--max-tokens":
                renamed["total_tokens_budget"] = name
                name = "total_tokens_budget"
                annotation = Annotated[
                    int | None,
                    typer.Option(max_tokens_flag, help="Stop cleanly after this many tokens "
                                 "in total.", rich_help_panel="Budget"),
                ]  # fmt: skip
            engine.append(
                inspect.Parameter(
                    name, inspect.Parameter.KEYWORD_ONLY, default=default, annotation=annotation
                )
            )
        own = [p.replace(kind=inspect.Parameter.KEYWORD_ONLY) for p in own]

        @functools.wraps(fn)
        def wrapper(**kwargs: Any) -> Any:
            values = {renamed.get(p.name, p.name): kwargs.pop(p.name) for p in engine}
            return fn(options=_engine_options(**values), **kwargs)

        return _with_parameters(wrapper, own + engine)

    return decorate


def _typer_parameters(fn: Any) -> list[inspect.Parameter]:
    """``fn``'s parameters with their annotations resolved (strings -> ``Annotated[...]``),
    so that typer reads the options through a wrapper."""
    hints = typing.get_type_hints(fn, include_extras=True)
    return [
        p.replace(annotation=hints.get(name, p.annotation))
        for name, p in inspect.signature(fn).parameters.items()
    ]


def _with_parameters(wrapper: Any, params: list[inspect.Parameter]) -> Any:
    """Show typer ``params`` as the wrapper's own (a decorator that adds or takes options)."""
    wrapper.__signature__ = inspect.signature(wrapper).replace(parameters=params)
    wrapper.__annotations__ = {p.name: p.annotation for p in params}
    return wrapper


def _errors_as_messages(fn: Any) -> Any:
    """Known errors print one line naming the fix, not a traceback (exit 2)."""

    @functools.wraps(fn)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return fn(*args, **kwargs)
        except EvoforgeError as exc:
            typer.echo(f"evoforge: error: {redact(str(exc))}", err=True)
            raise typer.Exit(2) from None

    return wrapper


NoReport = Annotated[
    bool, typer.Option("--no-report", help="Do not refresh report.html and summary.md.")
]


def writes_report(fn: Any) -> Any:
    """Give a command ``--no-report``; when it finishes (done or stopped), refresh the
    report of its ``--out`` folder (see ``evoforge report``)."""
    params = _typer_parameters(fn)
    flag = inspect.Parameter(
        "no_report", inspect.Parameter.KEYWORD_ONLY, default=False, annotation=NoReport
    )

    @functools.wraps(fn)
    def wrapper(**kwargs: Any) -> Any:
        # validate writes nothing without --out, so it has no folder to report on
        report = not kwargs.pop("no_report") and kwargs.get("out") is not None
        try:
            result = fn(**kwargs)
        except typer.Exit:  # the commands end this way, with the run's exit code
            if report:
                _refresh_report(Path(kwargs["out"]).parent)
            raise
        if report:
            _refresh_report(Path(kwargs["out"]).parent)
        return result

    return _with_parameters(wrapper, [*params, flag])


def _refresh_report(folder: Path) -> None:
    """Write the folder's report; a report that fails is a warning, never a failed run."""
    from evoforge.report import write_report

    try:
        paths = write_report(folder)
    except Exception as exc:  # the run's outputs are written; say why and keep its exit code
        typer.echo(f"evoforge: report not written: {type(exc).__name__}: {exc}", err=True)
        return
    typer.echo(f"report: {paths['html']} (summary: {paths['summary']})", err=True)


def _print_summary(summary: Any, *, title: str) -> None:
    from rich.console import Console
    from rich.table import Table

    console = Console(stderr=False, highlight=False)
    table = Table(title=title, show_header=False, box=None, pad_edge=False)
    table.add_row(
        "status", summary.status + (f" ({summary.stop_reason})" if summary.stop_reason else "")
    )
    table.add_row("accepted", str(summary.accepted))
    table.add_row("rejected", str(summary.rejected))
    for reason, count in summary.rejected_by_reason.items():
        table.add_row(f"  {reason}", str(count))
    if summary.skipped_done:
        table.add_row("resumed (already done)", str(summary.skipped_done))
    for op, stats in summary.usage.items():
        table.add_row(
            f"{op}",
            f"{stats['calls']} calls, {stats['cache_hits']} cache hits, "
            f"{stats['prompt_tokens']}+{stats['completion_tokens']} tokens, "
            f"{stats['retries']} retries",
        )
    table.add_row("wall time", f"{summary.wall_s:.1f} s")
    table.add_row("output", str(summary.out))
    table.add_row("rejects", str(summary.rejects))
    table.add_row("manifest", str(summary.manifest))
    console.print(table)
    if summary.status != "complete":
        typer.echo(f"evoforge: {summary.message}", err=True)


@app.command()
@_errors_as_messages
@with_engine_options()
@writes_report
def answer(
    seeds: Annotated[
        Path,
        typer.Option(
            "--seeds", help="Instruction seeds (.jsonl .json .csv .parquet or a datasets folder)."
        ),
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output .jsonl; rejects and manifest go beside it.")
    ],
    field: FieldMap = None,
    allow_truncated: Annotated[bool, typer.Option(help="Keep answers cut at max tokens.")] = False,
    options: Any = None,
) -> None:
    """Write an output for every instruction seed.

    Example: evoforge answer --seeds seeds.jsonl --out out/answers.jsonl --llm openai:gpt-4o-mini
    """
    from evoforge.api import answer as run_answer
    from evoforge.io.readers import parse_field_map

    summary = run_answer(
        seeds, out, options=options, field_map=parse_field_map(field),
        allow_truncated=allow_truncated,
    )  # fmt: skip
    _print_summary(summary, title="evoforge answer")
    raise typer.Exit(summary.exit_code)


@app.command()
@_errors_as_messages
@with_engine_options()
@writes_report
def evolve(
    seeds: Annotated[
        Path, typer.Option("--seeds", help="Seeds: instructions, or qa / rag samples.")
    ],
    out: Annotated[
        Path, typer.Option("--out", help="Output .jsonl; rejects and manifest go beside it.")
    ],
    kind: Annotated[str, typer.Option(help="instruction | qa | rag")] = "instruction",
    rounds: Annotated[
        int, typer.Option(help="Evol-Instruct rounds (M).", rich_help_panel="Evol-Instruct")
    ] = 4,
    ops: Annotated[
        str | None,
        typer.Option(
            help="Op weights, e.g. constraints=2,breadth=1 (default uniform).",
            rich_help_panel="Evol-Instruct",
        ),
    ] = None,
    answers: Annotated[
        bool,
        typer.Option(
            "--answers",
            help="Answer each evolution, so the answer rules apply.",
            rich_help_panel="Evol-Instruct",
        ),
    ] = False,
    no_judge: Annotated[
        bool,
        typer.Option(
            "--no-judge", help="Skip the LLM equality judge.", rich_help_panel="Evol-Instruct"
        ),
    ] = False,
    quality_rounds: Annotated[
        int,
        typer.Option(
            help="Evol-Quality rounds on the answers (K).", rich_help_panel="Evol-Quality"
        ),
    ] = 0,
    quality_ops: Annotated[
        str | None, typer.Option(help="Evol-Quality op weights.", rich_help_panel="Evol-Quality")
    ] = None,
    keep_all_rounds: Annotated[
        bool,
        typer.Option(
            "--keep-all-rounds", help="Write every accepted version, not just the final one."
        ),
    ] = False,
    mix: Annotated[
        str | None,
        typer.Option(
            help="qa/rag: rewrite mix, e.g. reasoning=0.5,conditional=0.5.",
            rich_help_panel="Question rewrites",
        ),
    ] = None,
    max_words: Annotated[
        list[str] | None,
        typer.Option(
            "--max-words",
            help="qa/rag: word limit per op, e.g. reasoning=20.",
            rich_help_panel="Question rewrites",
        ),
    ] = None,
    field: FieldMap = None,
    options: Any = None,
) -> None:
    """Grow seeds into harder ones: Evol-Instruct (+ Evol-Quality), or Ragas-style rewrites.

    Example: evoforge evolve --seeds seeds.jsonl --out out/evolved.jsonl --rounds 4 --answers
    """  # fmt: skip
    from evoforge.api import EvolveOptions
    from evoforge.api import evolve as run_evolve
    from evoforge.io.readers import parse_field_map

    evolution = EvolveOptions(
        kind=kind, rounds=rounds, ops=ops, answers=answers, judge=not no_judge,
        quality_rounds=quality_rounds, quality_ops=quality_ops, keep_all_rounds=keep_all_rounds,
        mix=mix, max_words=_int_pairs(max_words, "--max-words"),
    )  # fmt: skip
    summary = run_evolve(
        seeds, out, evolution=evolution, options=options, field_map=parse_field_map(field)
    )
    _print_summary(summary, title="evoforge evolve")
    raise typer.Exit(summary.exit_code)


def _int_pairs(pairs: list[str] | None, flag: str) -> dict[str, int] | None:
    if not pairs:
        return None
    from evoforge.errors import ConfigError

    result = {}
    for pair in pairs:
        for part in pair.split(","):
            name, sep, value = part.partition("=")
            if not sep or not value.strip().isdigit():
                raise ConfigError(f"{flag} {part!r}: expected op=N, e.g. reasoning=20")
            result[name.strip()] = int(value)
    return result


@app.command()
@_errors_as_messages
@with_engine_options()
@writes_report
def rag(
    docs: Annotated[
        list[Path],
        typer.Option(
            "--docs", help="Files or folders (.txt .md .html .jsonl .pdf); repeat for more."
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Samples to produce, exactly.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output file; rejects and manifest go beside it.")
    ],
    mix: Annotated[
        str | None,
        typer.Option(
            help="Scenario mix (default simple=0.4,reasoning=0.2,multi_context=0.2,"
            "conditional=0.1,conversational=0.1)."
        ),
    ] = None,
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format",
            help="jsonl | json | csv | parquet | ragas | deepeval (default: from --out).",
        ),
    ] = None,
    chunk_size: Annotated[
        int, typer.Option(help="Chunk size.", rich_help_panel="Documents")
    ] = 1000,
    chunk_overlap: Annotated[
        int, typer.Option(help="Chunk overlap.", rich_help_panel="Documents")
    ] = 100,
    chunk_unit: Annotated[
        str, typer.Option(help="chars | tokens", rich_help_panel="Documents")
    ] = "chars",
    text_field: Annotated[
        str, typer.Option(help="Text field of .jsonl documents.", rich_help_panel="Documents")
    ] = "text",
    graph: Annotated[
        Path | None,
        typer.Option(
            help="Knowledge graph file: saved, and reused when present.",
            rich_help_panel="Knowledge graph",
        ),
    ] = None,
    embedder: Annotated[
        str,
        typer.Option(
            help="minilm | hashing | openai:MODEL[@URL]", rich_help_panel="Knowledge graph"
        ),
    ] = "minilm",
    top_k: Annotated[
        int, typer.Option(help="Similarity edges per chunk.", rich_help_panel="Knowledge graph")
    ] = 5,
    similarity: Annotated[
        float,
        typer.Option(
            help="Cosine threshold of similarity edges.", rich_help_panel="Knowledge graph"
        ),
    ] = 0.6,
    personas: Annotated[
        int,
        typer.Option(help="Vary the asker over N built-in personas.", rich_help_panel="Phrasing"),
    ] = 0,
    styles: Annotated[
        str | None,
        typer.Option(
            help="Vary phrasing: formal,web_search,misspelled,conversational.",
            rich_help_panel="Phrasing",
        ),
    ] = None,
    no_critics: Annotated[
        bool, typer.Option("--no-critics", help="Skip the critics (not recommended).")
    ] = False,
    max_words: Annotated[
        list[str] | None,
        typer.Option("--max-words", help="Word limit per rewrite, e.g. reasoning=20."),
    ] = None,
    max_passes: Annotated[int, typer.Option(help="Passes that replace failed samples.")] = 4,
    options: Any = None,
) -> None:
    """Build a RAG evaluation set from documents: exactly N samples with provenance.

    Example: evoforge rag --docs ./mydocs --n 100 --out eval.jsonl --format ragas --llm openai:MODEL
    """
    from evoforge.api import RagOptions
    from evoforge.api import rag as run_rag

    settings = RagOptions(
        n=n, mix=mix, chunk_size=chunk_size, chunk_overlap=chunk_overlap, chunk_unit=chunk_unit,
        embedder=embedder, graph=str(graph) if graph else None, top_k=top_k,
        similarity=similarity, personas=personas, styles=styles, critics=not no_critics,
        max_words=_int_pairs(max_words, "--max-words"), max_passes=max_passes,
        text_field=text_field, format=fmt,
    )  # fmt: skip
    summary = run_rag(docs, out, rag=settings, options=options)
    _print_summary(summary, title="evoforge rag")
    _print_rag_report(summary.extra, n)
    raise typer.Exit(summary.exit_code)


def _print_rag_report(extra: dict, n: int) -> None:
    coverage = extra.get("coverage", {})
    skipped = extra.get("documents", {}).get("skipped", [])
    typer.echo(f"documents: {extra.get('documents', {}).get('loaded', 0)} loaded, "
               f"{len(skipped)} skipped; samples per document:")  # fmt: skip
    for path, count in sorted(coverage.items()):
        typer.echo(f"  {count:>4}  {path}")
    for item in skipped:
        typer.echo(f"  skipped {item['path']}: {item['reason']} ({item['detail']})", err=True)
    kept = sum(extra.get("kept", {}).values())
    for kind, gap in extra.get("shortfall", {}).items():
        typer.echo(f"evoforge: {kind}: {gap['missing']} short: {gap['why']}", err=True)
    if kept < n:
        typer.echo(f"evoforge: wrote {kept} of the {n} samples asked for", err=True)


@app.command()
@_errors_as_messages
@with_engine_options(max_tokens_flag="--max-total-tokens")
@writes_report
def in2(
    corpus: Annotated[
        list[Path],
        typer.Option(
            "--corpus", help="Text files, .jsonl, folders or a datasets folder; repeat for more."
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Samples to produce, exactly.")],
    out: Annotated[
        Path, typer.Option("--out", help="Output file; rejects and manifest go beside it.")
    ],
    min_tokens: Annotated[int, typer.Option(help="Shortest context (tokens).")] = 4096,
    max_tokens: Annotated[int, typer.Option(help="Longest context (tokens).")] = 32768,
    segment_tokens: Annotated[int, typer.Option(help="Segment size (tokens).")] = 128,
    short_ratio: Annotated[
        float | None,
        typer.Option(
            help="Share of samples whose context is only the original document (paper: 0.09)."
        ),
    ] = None,
    mix: Annotated[
        str | None, typer.Option(help="fine_grained=0.63,integration=0.17,short=0.09,general=0.11")
    ] = None,
    general: Annotated[
        Path | None,
        typer.Option(
            help="Instruction records (instruction, input, output) for the general share."
        ),
    ] = None,
    decontaminate: Annotated[
        Path | None, typer.Option(help="Evaluation examples: drop documents sharing a 10-gram.")
    ] = None,
    tokenizer: Annotated[
        str | None,
        typer.Option(
            help="regex, or a local Hugging Face tokenizer folder (default: the embedded model's)."
        ),
    ] = None,
    text_field: Annotated[str, typer.Option(help="Text field of .jsonl / datasets rows.")] = "text",
    fmt: Annotated[
        str | None,
        typer.Option(
            "--format", help="jsonl | json | csv | parquet | plain (context/question/answer)."
        ),
    ] = None,
    options: Any = None,
) -> None:
    """IN2 long-context training data (An et al., 2024): needles in 4K-32K token contexts.

    Example: evoforge in2 --corpus ./texts --n 1000 --out in2.jsonl --llm openai:MODEL
    """  # fmt: skip
    from evoforge.api import In2Options
    from evoforge.api import in2 as run_in2

    settings = In2Options(
        n=n, min_tokens=min_tokens, max_tokens=max_tokens, segment_tokens=segment_tokens,
        short_ratio=short_ratio, mix=mix, general=str(general) if general else None,
        decontaminate=str(decontaminate) if decontaminate else None, tokenizer=tokenizer,
        text_field=text_field, format=fmt,
    )  # fmt: skip
    summary = run_in2(corpus, out, in2=settings, options=options)
    _print_summary(summary, title="evoforge in2")
    extra = summary.extra
    typer.echo(f"plan {extra['plan']}; kept {extra['kept']}; documents used "
               f"{extra['documents']['used']}; decontamination dropped "
               f"{extra['decontamination']['documents_dropped']}")  # fmt: skip
    for kind, gap in extra.get("shortfall", {}).items():
        typer.echo(f"evoforge: {kind}: {gap['missing']} short: {gap['why']}", err=True)
    raise typer.Exit(summary.exit_code)


probe_app = typer.Typer(
    help="VaL probing sets (An et al., 2024): measure lost-in-the-middle by needle position.",
    no_args_is_help=True,
)
app.add_typer(probe_app, name="probe")


@probe_app.command("build")
@_errors_as_messages
def probe_build(
    task: Annotated[str, typer.Option("--task", help="document | code | database")],
    corpus: Annotated[
        list[Path],
        typer.Option(
            "--corpus",
            help="document: text; code: .py files or folders; database: JSONL of "
            "id/label/description.",
        ),
    ],
    n: Annotated[int, typer.Option("--n", help="Probes to build.")],
    out: Annotated[Path, typer.Option("--out", help="Output .jsonl of probes.")],
    context_tokens: Annotated[int, typer.Option(help="Context length (tokens).")] = 32000,
    buckets: Annotated[
        int, typer.Option(help="Position buckets the needles are spread over.")
    ] = 16,
    seed: Seed = 0,
) -> None:
    """Build a probing set: long contexts, one needle each at positions spread evenly.

    Example: evoforge probe build --task document --corpus doc.txt --n 64 --out probe.jsonl
    """
    from evoforge.generators.probing import build_probe_file

    stats = build_probe_file(task, [str(p) for p in corpus], n, out,
                             context_tokens=context_tokens, buckets=buckets, seed=seed)  # fmt: skip
    typer.echo(json.dumps(stats, indent=2, default=str))


@probe_app.command("score")
@_errors_as_messages
def probe_score(
    pred: Annotated[Path, typer.Option("--pred", help="Predictions .jsonl: {id, prediction}.")],
    gold: Annotated[Path, typer.Option("--gold", help="The probing set built by probe build.")],
    plot: Annotated[
        Path | None, typer.Option(help="PNG of score against position (default: beside --pred).")
    ] = None,
) -> None:
    """Score predictions per position bucket: the average and the best-worst gap.

    Example: evoforge probe score --pred preds.jsonl --gold probe.jsonl --plot probe.png
    """
    from evoforge.generators.probing import score_probe

    plot = plot or pred.with_suffix(".png")
    report = score_probe(pred, gold, plot_path=plot)
    typer.echo(json.dumps(report, indent=2, default=str))
    typer.echo(f"plot: {plot}", err=True)


@app.command()
@_errors_as_messages
@writes_report
def dedup(
    source: Annotated[
        Path, typer.Argument(help="Records (.jsonl .json .csv .parquet) with an id.")
    ],
    out: Annotated[Path, typer.Option("--out", help="Kept records; rejects beside it.")],
    method: Annotated[
        str, typer.Option(help="Comma list of exact, minhash, semantic.")
    ] = "exact,minhash",
    threshold: Annotated[float, typer.Option(help="minhash: Jaccard of near-duplicates.")] = 0.7,
    semantic_threshold: Annotated[
        float, typer.Option(help="semantic: cosine of duplicates.")
    ] = 0.9,
    fields: Annotated[
        list[str] | None, typer.Option("--fields", help="Fields to compare (default: by kind).")
    ] = None,
    embedder: Annotated[
        str, typer.Option(help="semantic: minilm | hashing | openai:MODEL[@URL]")
    ] = "minilm",
    prefer: Annotated[
        str | None,
        typer.Option(
            help="Keep the highest of this numeric field per group, e.g. meta.deita.score."
        ),
    ] = None,
    clusters: Annotated[
        Path | None, typer.Option(help="Write each duplicate group here (JSON lines).")
    ] = None,
    shards: Annotated[
        int, typer.Option(min=1, help="Worker processes for MinHash signatures (same result).")
    ] = 1,
    seed: Seed = 1,
) -> None:
    """Drop exact, near (MinHash LSH) and semantic duplicates, one kept per group.

    Example: evoforge dedup out/evolved.jsonl --out out/unique.jsonl --method exact,minhash,semantic
    """  # fmt: skip
    from evoforge.api import dedup as run_dedup

    result = run_dedup(
        source, out, method=method, threshold=threshold, semantic_threshold=semantic_threshold,
        fields=fields, embedder=embedder, prefer=prefer, clusters=clusters, seed=seed,
        shards=shards,
    )  # fmt: skip
    typer.echo(json.dumps(result.summary, indent=2, default=str))


@app.command("select")
@_errors_as_messages
@with_engine_options()
@writes_report
def select_command(
    source: Annotated[Path, typer.Argument(help="Records written by evoforge (.jsonl ...).")],
    out: Annotated[
        Path, typer.Option("--out", help="The selected records; rejects and manifest beside.")
    ],
    method: Annotated[str, typer.Option(help="deita | alpagasus | kcenter | random")] = "deita",
    budget: Annotated[
        int | None, typer.Option(help="How many to select (all but alpagasus).")
    ] = None,
    tau: Annotated[float, typer.Option(help="deita: max cosine to any selected record.")] = 0.9,
    min_score: Annotated[float, typer.Option(help="alpagasus: keep ratings >= this.")] = 4.5,
    embedder: Annotated[str, typer.Option(help="minilm | hashing | openai:MODEL[@URL]")] = "minilm",
    fields: Annotated[
        list[str] | None, typer.Option("--fields", help="Fields to embed (default: by kind).")
    ] = None,
    clusters: Annotated[
        int | None, typer.Option(help="kcenter: k-means clusters (default budget // 10).")
    ] = None,
    options: Any = None,
) -> None:
    """Select the best-and-most-diverse subset: DEITA, AlpaGasus, LTD k-center or random.

    Example: evoforge select out/evolved.jsonl --out out/best.jsonl --method deita --budget 1000
    """  # fmt: skip
    from evoforge.api import SelectOptions
    from evoforge.api import select as run_select

    report = run_select(
        source, out, options=options,
        selection=SelectOptions(method=method, budget=budget, tau=tau, min_score=min_score,
                                embedder=embedder, fields=fields, clusters=clusters),
    )  # fmt: skip
    typer.echo(json.dumps(report, indent=2, default=str))


@app.command()
@_errors_as_messages
@with_engine_options()
@writes_report
def validate(
    file: Annotated[Path, typer.Argument(help="Records to check (.jsonl .json .csv .parquet).")],
    kind: Annotated[
        str | None,
        typer.Option(help="instruction | qa | rag | in2 (default: each record's own kind field)."),
    ] = None,
    checks: Annotated[
        str,
        typer.Option(
            help="Comma list of: schema, length, refusal, empty, leak, language, lima, rubric "
            "(an LLM judge, --llm)."
        ),
    ] = "schema",
    min_len: Annotated[int | None, typer.Option(help="length: shortest answer.")] = None,
    max_len: Annotated[int | None, typer.Option(help="length: longest answer.")] = None,
    unit: Annotated[str, typer.Option(help="length: chars | words | tokens.")] = "words",
    lima_length: Annotated[
        bool, typer.Option("--lima-length", help="lima: answers of 1,200-4,096 characters only.")
    ] = False,
    rubric: Annotated[
        Path | None,
        typer.Option(
            help="rubric: the rubric as text, or YAML {rubric, scale: [1, 5], threshold: 4, "
            "reason}."
        ),
    ] = None,
    out: Annotated[
        Path | None, typer.Option(help="Write the records that pass here; rejects beside it.")
    ] = None,
    options: Any = None,
) -> None:
    """Check every record (its JSON Schema, and any heuristics named); exit 1 if any fails.

    Example: evoforge validate out/answers.jsonl --kind instruction --checks schema,refusal,lima
    """
    from evoforge.errors import ConfigError
    from evoforge.io.readers import iter_rows
    from evoforge.io.writers import format_for, open_writer
    from evoforge.records import KINDS, schema_for
    from evoforge.validators.checks import Bounds, CheckSettings, ValidatorChain, parse_checks

    if kind is not None:
        schema_for(kind)  # unknown kinds fail here with the list of kinds
    settings = CheckSettings(
        kind=kind, length=Bounds(min_len, max_len, unit), lima_length=lima_length
    )
    chain = ValidatorChain(parse_checks(checks), settings)
    critic = _rubric_critic(rubric) if chain.judged else None
    if rubric is not None and critic is None:
        raise ConfigError("--rubric is for the rubric check: add it, e.g. --checks schema,rubric")
    writer = rejects = None
    if out is not None:
        writer = open_writer(out, format_for(out, None))
        rejects = open_writer(out.with_name(f"{out.stem}.rejects.jsonl"), "jsonl")
    total = invalid = 0
    judge_later: list[tuple[int, dict]] = []  # passed the checks that need no model

    def settle(line: int, data: dict, verdict: Any) -> int:
        """Write a record that passed, or say why one failed and keep it as a reject;
        1 when it failed."""
        if verdict.ok:
            if writer is not None:
                writer.write(data)
            return 0
        typer.echo(f"{file} line {line}: {verdict.reason}: {verdict.detail}")
        if rejects is not None:
            rejects.write({"id": data.get("id"), "reason": verdict.reason,
                           "detail": verdict.detail, "record": data})  # fmt: skip
        return 1

    for item in iter_rows(file):
        total += 1
        if isinstance(item, EvoforgeError):
            invalid += 1
            typer.echo(str(item))
            continue
        line, data = item
        if (kind or data.get("kind")) not in KINDS:
            invalid += 1
            typer.echo(f'{file} line {line}: field "kind" is {data.get("kind")!r}; pass --kind')
            continue
        verdict = chain.check(data)
        if verdict.ok and critic is not None:
            judge_later.append((line, data))
        else:
            invalid += settle(line, data, verdict)
    if judge_later:
        for (line, data), verdict in zip(
            judge_later,
            _judge_rows([d for _, d in judge_later], critic, kind, options),
            strict=True,
        ):
            chain.count_judged(verdict)
            invalid += settle(line, data, verdict)
    if writer is not None and rejects is not None:
        writer.close()
        rejects.close()
    counts = ", ".join(
        f"{reason} {n}" for reason, n in chain.counts.most_common() if reason != "passed"
    )
    typer.echo(
        f"{file}: {total} records, {invalid} invalid" + (f" ({counts})" if counts else ""), err=True
    )
    raise typer.Exit(1 if invalid else 0)


def _rubric_critic(path: Path | None) -> Any:
    from evoforge.validators.critics import RubricCritic, load_rubric

    return RubricCritic() if path is None else load_rubric(path)


def _judge_rows(rows: list[dict], critic: Any, kind: str | None, options: Any) -> list[Any]:
    """The judged checks of ``validate``, one client (cache, limits, retries) for all."""
    import asyncio

    from evoforge.api import build_client
    from evoforge.validators.checks import judge_rows

    async def judge() -> list[Any]:
        client = build_client(options)
        try:
            return await judge_rows(rows, critic, client, kind=kind, seed=options.seed)
        finally:
            if client.cache is not None:
                client.cache.close()
            await client.aclose()

    return asyncio.run(judge())


@app.command()
@_errors_as_messages
def demo(
    out: Annotated[Path, typer.Option("--out", help="Folder for the demo's outputs.")] = Path(
        "evoforge-demo"
    ),
    llm: Llm = "local",
    llm_arg: LlmArg = None,
    max_output_tokens: MaxOutput = 160,
    concurrency: Concurrency = 8,
    no_cache: NoCache = False,
    cache_dir: CacheDir = None,
    quiet: Quiet = False,
) -> None:
    """Run the engine end to end offline on the embedded model and show what came out.

    Example: evoforge demo --out evoforge-demo
    """
    from importlib import resources

    from evoforge.api import EvolveOptions, In2Options, RagOptions
    from evoforge.api import answer as run_answer
    from evoforge.api import evolve as run_evolve
    from evoforge.api import in2 as run_in2
    from evoforge.api import rag as run_rag

    options = _engine_options(
        llm=llm, llm_arg=llm_arg, temperature=None, max_output_tokens=max_output_tokens,
        concurrency=concurrency, rpm=None, tpm=None, max_calls=None, max_tokens=None,
        timeout=600.0, max_attempts=3, max_retry_wait=60.0, no_cache=no_cache,
        cache_dir=cache_dir, seed=0, overwrite=True, quiet=quiet,
    )  # fmt: skip
    examples = resources.files("evoforge.examples")
    out.mkdir(parents=True, exist_ok=True)
    typer.echo(f"evoforge demo: 1/4 answering instructions.jsonl with --llm {llm} (the first "
               "run converts the embedded model, about 30 s)", err=True)  # fmt: skip
    with resources.as_file(examples.joinpath("instructions.jsonl")) as seeds_path:
        answered = run_answer(seeds_path, out / "answers.jsonl", options=options)
    _print_summary(answered, title="evoforge demo: answer")
    _show_samples(answered.out, limit=2)

    typer.echo("\nevoforge demo: 2/4 evolving evolve_seeds.jsonl through 2 Evol-Instruct "
               "rounds, answering each evolution", err=True)  # fmt: skip
    with resources.as_file(examples.joinpath("evolve_seeds.jsonl")) as seeds_path:
        evolved = run_evolve(
            seeds_path,
            out / "evolved.jsonl",
            evolution=EvolveOptions(rounds=2, answers=True, keep_all_rounds=True),
            options=options,
        )
    _print_summary(evolved, title="evoforge demo: evolve")
    _show_lineage(evolved.out)

    typer.echo("\nevoforge demo: 3/4 a RAG evaluation set of 4 samples from examples/docs "
               "(knowledge graph with MiniLM embeddings, critics on)", err=True)  # fmt: skip
    with resources.as_file(examples.joinpath("docs")) as docs_path:
        built = run_rag(
            [docs_path],
            out / "eval.jsonl",
            rag=RagOptions(n=4, mix="simple=0.5,reasoning=0.5", chunk_size=600, chunk_overlap=60,
                           max_passes=2, graph=str(out / "graph.json")),
            options=options,
        )  # fmt: skip
    _print_summary(built, title="evoforge demo: rag")
    _print_rag_report(built.extra, 4)
    _show_questions(built.out)

    typer.echo(
        "\nevoforge demo: 4/4 three IN2 long-context samples from examples/docs (contexts "
        "of 512-2048 tokens here; the paper's 4K-32K is the default)",
        err=True,
    )
    with resources.as_file(examples.joinpath("docs")) as docs_path:
        long = run_in2(
            [docs_path],
            out / "in2.jsonl",
            in2=In2Options(n=3, mix="fine_grained=2,short=1", min_tokens=512, max_tokens=2048,
                           max_passes=2),
            options=options,
        )  # fmt: skip
    _print_summary(long, title="evoforge demo: in2")
    _show_needles(long.out)

    typer.echo("\nevoforge demo: and last, duplicates and a diverse subset of the answers "
               "and their evolutions", err=True)  # fmt: skip
    _demo_prune(out, answered.out, evolved.out)
    _refresh_report(out)
    codes = (answered.exit_code, evolved.exit_code, built.exit_code, long.exit_code)
    raise typer.Exit(max(codes))


def _demo_prune(out: Path, *paths: Path) -> None:
    """Dedup the demo's instruction records, then pick a k-center subset (no LLM)."""
    from evoforge.api import SelectOptions
    from evoforge.api import dedup as run_dedup
    from evoforge.api import select as run_select
    from evoforge.io.readers import load_jsonl

    records = [record for path in paths for record in load_jsonl(path)]
    pruned = run_dedup(records, out / "pool.jsonl", fields=["instruction"])
    kept, dropped = pruned.kept, pruned.dropped
    typer.echo(f"dedup: {len(records)} records, {len(dropped)} near-duplicates dropped")
    for rejection in dropped[:3]:
        typer.echo(f"  {rejection['id']}: {rejection['detail']}")
    budget = max(1, len(kept) // 2)
    report = run_select(out / "pool.jsonl", out / "selected.jsonl",
                        selection=SelectOptions(method="kcenter", budget=budget))  # fmt: skip
    typer.echo(f"select (LTD k-center): {report['selected']} of {report['input']} kept in "
               f"{out / 'selected.jsonl'}")  # fmt: skip


def _show_needles(path: Path) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            needle = record["needles"][0]
            typer.echo(f"\n[{record['sample_type']}] {record['meta']['question']}")
            where = f"{needle['char_start']}-{needle['char_end']}"
            typer.echo(f"  context {record['context_tokens']} tokens; needle at characters "
                       f"{where}: {needle['text'][:100]}")  # fmt: skip


def _show_questions(path: Path) -> None:
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            ref = record["reference_context_ids"][0]
            typer.echo(f"\n[{record['synthesizer_name']}] {record['user_input']}")
            typer.echo(f"  -> {record['reference'][:200]}")
            typer.echo(f"     ({ref['path']} characters {ref['start']}-{ref['end']})")


def _show_lineage(path: Path) -> None:
    """Each seed's versions, round by round, so the evolution can be read."""
    by_seed: dict[str, list[dict]] = {}
    with open(path, encoding="utf-8") as fh:
        for line in fh:
            record = json.loads(line)
            by_seed.setdefault(record["id"].split("/")[0], []).append(record)
    for seed_id, versions in by_seed.items():
        typer.echo(f"\n[{seed_id}]")
        for record in versions:
            op = record.get("meta", {}).get("evol", {}).get("op", "seed")
            typer.echo(f"  {op:>16}: {record['instruction'][:200]}")


def _show_samples(path: Path, *, limit: int) -> None:
    with open(path, encoding="utf-8") as fh:
        for i, line in enumerate(fh):
            if i >= limit:
                break
            record = json.loads(line)
            typer.echo(f"\n[{record['id']}] {record['instruction']}")
            answer_text = record.get("output", "")
            typer.echo("  -> " + answer_text[:300].replace("\n", "\n     "))


@app.command("run")
@_errors_as_messages
def run_command(
    recipe: Annotated[Path, typer.Argument(help="A YAML recipe (see examples/recipes/).")],
    out: Annotated[
        Path | None, typer.Option("--out", help="Run folder (default: the recipe's outputs.dir).")
    ] = None,
    dry_run: Annotated[
        bool,
        typer.Option("--dry-run", help="Print the plan: LLM calls and tokens per step; no calls."),
    ] = False,
    price: Annotated[
        str | None,
        typer.Option(
            help="Dollars per 1M tokens, IN[,OUT], e.g. 0.15,0.60: the cost expected "
            "(--dry-run) or spent."
        ),
    ] = None,
    llm: Annotated[
        str | None, typer.Option("--llm", help="Override the recipe's llm spec.")
    ] = None,
    overwrite: Overwrite = False,
    quiet: Quiet = False,
) -> None:
    """Run a whole pipeline from a YAML recipe; re-running resumes where it stopped.

    Example: evoforge run examples/recipes/rag-eval.yaml --dry-run --price 0.15,0.60
    """
    from evoforge.recipe import load_recipe, run_recipe
    from evoforge.recipe_plan import parse_price, plan_recipe

    loaded = load_recipe(recipe)
    if llm is not None:
        loaded.llm.spec = llm
    prices = parse_price(price) if price else None
    if dry_run:
        typer.echo(plan_recipe(loaded, out=out, price=prices).render())
        return
    result = run_recipe(loaded, out=out, quiet=quiet or None, overwrite=overwrite or None)
    for step in result.steps:
        typer.echo(f"{step.name:>10}: {step.status}, {step.accepted} kept, {step.rejected} "
                   f"rejected, {step.calls} calls ({step.cache_hits} cache hits), "
                   f"{step.tokens} tokens -> {step.out}")  # fmt: skip
    typer.echo(f"dataset: {result.dataset}" if result.dataset else "no dataset: the run stopped")
    for to, files in result.exports.items():
        typer.echo(f"export {to}: {', '.join(map(str, files))}")
    typer.echo(f"manifest: {result.manifest}")
    if prices is not None:
        typer.echo(f"cost of this run's {result.calls} calls: ${result.cost(prices):.4f}")
    if result.report is not None:
        typer.echo(f"report: {result.report}")
    if result.report_error:
        typer.echo(f"evoforge: report not written: {result.report_error}", err=True)
    if result.status != "complete":
        typer.echo("evoforge: the recipe stopped early; run it again to resume", err=True)
    raise typer.Exit(result.exit_code)


@app.command("export")
@_errors_as_messages
def export_command(
    source: Annotated[Path, typer.Argument(help="Records written by evoforge (.jsonl ...).")],
    to: Annotated[
        str,
        typer.Option(
            "--to", help="messages | alpaca | sharegpt | ragas | deepeval | parquet | hf-dir"
        ),
    ],
    out: Annotated[Path, typer.Option("--out", help="Output file (hf-dir: a folder).")],
    no_card: Annotated[
        bool, typer.Option("--no-card", help="Do not write README.md (the dataset card).")
    ] = False,
    license: Annotated[str, typer.Option(help="The card's license id, e.g. cc-by-4.0.")] = "other",
    language: Annotated[
        list[str] | None, typer.Option(help="The card's language codes (default en).")
    ] = None,
    push_to_hub: Annotated[
        str | None,
        typer.Option(help="Upload the export and its card to this Hub dataset repo (user/name)."),
    ] = None,
    private: Annotated[
        bool, typer.Option("--private", help="Create the Hub repo private.")
    ] = False,
) -> None:
    """Write records in the format a trainer or evaluator loads, with a dataset card.

    Example: evoforge export out/evolved.jsonl --to messages --out train/evolved.jsonl
    """  # fmt: skip
    from evoforge.export import export

    result = export(
        source, to=to, out=out, card=not no_card, license=license,
        language=language or ["en"], push_to_hub=push_to_hub, private=private,
    )  # fmt: skip
    typer.echo(json.dumps({"format": result.format, "records": result.count,
                           "by_kind": result.by_kind, "skipped": result.skipped,
                           "files": [str(f) for f in result.files],
                           "card": str(result.card) if result.card else None,
                           "pushed_to": push_to_hub}, indent=2))  # fmt: skip


@app.command("report")
@_errors_as_messages
def report_command(
    run_output: Annotated[
        Path, typer.Argument(help="A run's output file, or a folder of outputs.")
    ],
) -> None:
    """Write report.html (funnel, rejection reasons, plots, every seed's fate) and summary.md.

    Example: evoforge report out/   (then open out/report.html)
    """
    from evoforge.report import write_report

    paths = write_report(run_output)
    typer.echo(paths["summary"].read_text("utf-8"), nl=False)
    typer.echo(f"report: {paths['html']}", err=True)


def main() -> None:
    try:
        app()
    except KeyboardInterrupt:
        sys.exit(130)


if __name__ == "__main__":
    main()
