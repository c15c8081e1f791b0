"""Every setting a command takes, its default and its help text, written once.

The CLI derives its flags from these fields (``evoforge.cli.flags``), recipes read their
defaults from them, and the Python API takes them as arguments::

    from evoforge import EngineOptions, EvolveOptions, evolve

    evolve("seeds.jsonl", "out/evolved.jsonl", evolution=EvolveOptions(rounds=2),
           options=EngineOptions(llm="openai:gpt-4o-mini", concurrency=64))

A field's ``metadata`` holds what the command line needs: ``help``, ``flag`` (the flag
names, when they are not ``--field-name``), ``panel`` (the help section), ``negate``
(a ``--no-x`` flag that sets the field False), ``required`` (a flag with no default on
the command line) and ``cli_default`` (where the command line has always had its own
default; the reason is written beside it). This module imports only the standard
library and ``evoforge.errors``, so every layer can read it.
"""

from __future__ import annotations

import difflib
import warnings
from dataclasses import MISSING, Field, dataclass, field, fields
from typing import Any

from evoforge.errors import ConfigError, did_you_mean
from evoforge.options_signals import METHODS_HELP, SignalOptions

# The embedded model (evoforge.llm.spec's DEFAULT_SPEC reads it).
DEFAULT_LLM = "local"
DEFAULT_REWRITE_MIX = "reasoning=0.25,multi_context=0.25,conditional=0.25,conversational=0.25"
EVOLVE_KINDS = ("instruction", "qa", "rag")
KCENTER_MODES = ("global", "per-cluster")
DEITA_MODES = ("record", "chain")


def option(default: Any = MISSING, help: str = "", **cli: Any) -> Any:  # noqa: A002
    """A dataclass field with its help text and command-line settings in ``metadata``."""
    metadata = {"help": help, **cli}
    if isinstance(default, dict | list):
        return field(default_factory=lambda: type(default)(default), metadata=metadata)
    return field(default=default, metadata=metadata)


def default_of(item: Field[Any]) -> Any:
    """A field's default (a factory's value for dicts and lists)."""
    if item.default is not MISSING:
        return item.default
    if item.default_factory is not MISSING:
        return item.default_factory()
    return MISSING


def from_mapping(cls: type, data: dict[str, Any], what: str) -> Any:
    """``cls(**data)``; an unknown key is an error naming the closest known one."""
    names = [f.name for f in fields(cls)]
    for key in data:
        if key not in names:
            hint = difflib.get_close_matches(key, names, n=1)
            suggestion = f"; did you mean {hint[0]!r}?" if hint else ""
            raise ConfigError(f"unknown {what} option {key!r}{suggestion}")
    return cls(**data)


@dataclass
class EngineOptions:
    """Engine settings shared by every command. Unknown names are errors."""

    llm: str = option(
        DEFAULT_LLM,
        "local | openai:MODEL | openai:MODEL@BASE_URL | langchain:pkg.module:Class",
        flag="--llm",
        panel="Model",
    )
    llm_args: dict[str, Any] = option(
        {}, "key=value for the backend (JSON values allowed)", flag="--llm-arg", panel="Model"
    )
    # None: the backend's default (greedy for local)
    temperature: float | None = option(None, "Sampling temperature.", panel="Model")
    max_output_tokens: int | None = option(
        None, "Tokens per reply (default 512).", flag="--max-output-tokens", panel="Model"
    )
    # issue 15: else the server's /v1/models, else models.yaml; over it -> too_long, not sent
    context_window: int | None = option(
        None, "Model context window (tokens); default: server, models.yaml.", panel="Model"
    )
    context_tokenizer: str | None = option(  # default: the embedded one (local), else bytes/3
        None, "Tokenizer folder to count prompt tokens with.", panel="Model", path=True
    )
    concurrency: int = option(16, "Requests in flight at most.", panel="Engine")
    rpm: float | None = option(None, "Requests per minute.", panel="Engine")
    tpm: float | None = option(None, "Tokens per minute.", panel="Engine")
    max_calls: int | None = option(None, "Stop cleanly after this many calls.", panel="Budget")
    max_tokens: int | None = option(  # total token budget of the run
        None, "Stop cleanly after this many tokens in total.", panel="Budget"
    )
    # per attempt; the local model has none
    timeout: float | None = option(120.0, "Seconds per attempt (remote models).", panel="Engine")
    max_attempts: int = option(6, "Attempts per call for transient errors.", panel="Engine")
    backoff_base: float = option(1.0, "First retry wait in seconds; doubles each attempt.")
    max_retry_wait: float = option(  # a longer Retry-After stops the run (resumable)
        300.0,
        "Longest Retry-After to honour; a longer one stops the run (resumable).",
        panel="Engine",
    )
    cache: bool = option(
        True, "Do not read or write the response cache.", flag="--no-cache", negate=True
    )
    cache_dir: str | None = option(
        None, "Response cache folder (default: user cache dir, or EVOFORGE_CACHE_DIR).", path=True
    )
    seed: int = option(0, "Run seed: the same seed gives the same output.")
    # issue 20: seeds in shards as Ray tasks (docs/cluster.md); needs evoforge[ray]
    executor: str = option(
        "local", "local | ray | ray:ADDRESS (default RAY_ADDRESS or a new local cluster).",
        panel="Engine",
    )  # fmt: skip
    overwrite: bool = option(
        False, "Start over instead of resuming a previous run.", flag="--overwrite"
    )
    wait: bool = option(  # else a second run on the same output exits 2, naming the first
        False, "If another run holds the output, wait for it to finish.", flag="--wait"
    )
    # issue 19: USD prices over models.yaml's; the Batch API (half price; within 24 h)
    prices: str | None = option(None, "Prices file (YAML/JSON) over models.yaml's.", path=True)
    batch: bool = option(
        False, "Send the calls as Batch API jobs (half price, slower).", flag="--batch",
        panel="Engine",
    )  # fmt: skip
    keep_batch_files: bool = option(
        False, "Keep batch input/output files on the server.", flag="--keep-batch-files",
        panel="Engine",
    )  # fmt: skip
    batch_retry: str = option("online", "Expired or failed batch items: online | batch.",
                              panel="Engine")  # fmt: skip
    batch_poll: float = option(
        10.0, "First wait between batch status polls (s); grows to 60.", panel="Engine"
    )
    quiet: bool = option(False, "No progress bar.", flag=("--quiet", "-q"))

    @classmethod
    def from_dict(cls, data: dict[str, Any]) -> EngineOptions:
        return from_mapping(cls, data, "engine")

    def __post_init__(self) -> None:
        if self.concurrency < 1:
            raise ConfigError("--concurrency must be at least 1")
        if self.executor != "local" and self.executor.partition(":")[0] != "ray":
            raise ConfigError(f"--executor {self.executor!r}: use local, ray or ray:ADDRESS")
        if self.batch_retry not in ("online", "batch"):
            raise ConfigError(f"--batch-retry must be online or batch, not {self.batch_retry!r}")
        positive = "rpm tpm max_calls max_tokens max_output_tokens context_window batch_poll"
        for name in positive.split():
            value = getattr(self, name)
            if value is not None and value <= 0:
                raise ConfigError(f"--{name.replace('_', '-')} must be positive")


ENGINE_API_ONLY = frozenset({"backoff_base"})  # not on the command line: API and recipes


@dataclass
class EvolveOptions:
    """What ``evolve`` does. Instructions: Evol-Instruct rounds (+ Evol-Quality);
    questions (``qa`` / ``rag`` seeds): one Ragas-style rewrite each, by ``mix``."""

    kind: str = option("instruction", "instruction | qa | rag")
    rounds: int = option(4, "Evol-Instruct rounds (M).", panel="Evol-Instruct")
    ops: str | None = option(  # "constraints=2,breadth=1"; None = uniform
        None, "Op weights, e.g. constraints=2,breadth=1 (default uniform).", panel="Evol-Instruct"
    )
    answers: bool = option(  # the paper's four rules need answers (issue 14)
        True,
        "Answer each evolution, so rules 2 and 3 (refusal, empty answer) apply.",
        flag="--answers/--no-answers",
        panel="Evol-Instruct",
    )
    judge: bool = option(
        True, "Skip the LLM equality judge.", flag="--no-judge", negate=True, panel="Evol-Instruct"
    )
    quality_rounds: int = option(0, "Evol-Quality rounds on the answers (K).", panel="Evol-Quality")
    quality_ops: str | None = option(None, "Evol-Quality op weights.", panel="Evol-Quality")
    final_only: bool = option(  # the paper trains on the union of all rounds (issue 14)
        False,
        "Write only each seed's final version, not the union of all rounds.",
        flag="--final-only",
    )
    # Deprecated (issue 14): the union of all rounds is the default; read final_only.
    keep_all_rounds: bool | None = option(
        None, "Deprecated: the default now (--final-only for the last version only).",
        flag="--keep-all-rounds",
    )  # fmt: skip
    mix: str | None = option(  # qa / rag: "reasoning=0.5,conditional=0.5"
        None, "qa/rag: rewrite mix, e.g. reasoning=0.5,conditional=0.5.", panel="Question rewrites"
    )
    max_words: dict[str, int] | None = option(  # qa / rag: per rewrite op
        None,
        "qa/rag: word limit per op, e.g. reasoning=20.",
        flag="--max-words",
        panel="Question rewrites",
    )
    # Ragas v0.1 (issue 14): compress_question after reasoning, multi_context, conditional
    compress: bool = option(
        True,
        "qa/rag: do not compress reasoning, multi_context and conditional rewrites "
        "(Ragas v0.1 does).",
        flag="--no-compress",
        negate=True,
        panel="Question rewrites",
    )
    decontaminate: list[str] | None = option(  # benchmark questions (issue 14)
        None,
        "Benchmark file (JSONL, JSON, text or a datasets folder); reject records sharing a "
        "10-gram with it as contaminated. Repeat for more.",
        flag="--decontaminate",
    )

    def __post_init__(self) -> None:
        if self.kind not in EVOLVE_KINDS:
            raise ConfigError(
                f"--kind {self.kind!r}: evolve takes {', '.join(EVOLVE_KINDS)}"
                + did_you_mean(self.kind, EVOLVE_KINDS)
            )
        if self.rounds < 0 or self.quality_rounds < 0:
            raise ConfigError("--rounds and --quality-rounds must be 0 or more")
        if self.keep_all_rounds is not None:  # deprecated: folded into final_only
            if self.keep_all_rounds and self.final_only:
                raise ConfigError("--keep-all-rounds and --final-only contradict each other")
            warnings.warn(
                "keep_all_rounds / --keep-all-rounds is deprecated: every round's version "
                "is written by default now; use final_only=True / --final-only to write "
                "only the final one",
                FutureWarning,
                stacklevel=3,
            )
            self.final_only = not self.keep_all_rounds
            self.keep_all_rounds = None


@dataclass
class RagOptions:
    """What ``rag`` builds. Defaults are written down here, once."""

    n: int = option(50, "Samples to produce, exactly.", flag="--n", required=True)
    mix: str | None = option(  # default: simple 0.4, reasoning 0.2, multi_context 0.2, ...
        None,
        "Scenario mix (default simple=0.4,reasoning=0.2,multi_context=0.2,"
        "conditional=0.1,conversational=0.1).",
    )
    chunk_size: int = option(1000, "Chunk size.", panel="Documents")
    chunk_overlap: int = option(100, "Chunk overlap.", panel="Documents")
    chunk_unit: str = option("chars", "chars | tokens", panel="Documents")
    embedder: str = option(
        "minilm", "minilm | hashing | openai:MODEL[@URL]", panel="Knowledge graph"
    )
    graph: str | None = option(  # node-link JSON to save, and to reuse when present
        None, "Knowledge graph file: saved, and reused when present.", panel="Knowledge graph",
        path=True,
    )  # fmt: skip
    top_k: int = option(5, "Similarity edges per chunk.", panel="Knowledge graph")
    # None: 0.6, or 0.3 for the hashing embedder. The command line has always passed 0.6
    # (for every embedder), so its default stays 0.6.
    similarity: float | None = option(
        None, "Cosine threshold of similarity edges.", panel="Knowledge graph", cli_default=0.6
    )
    personas: int = option(0, "Vary the asker over N built-in personas.", panel="Phrasing")
    styles: str | None = option(  # e.g. "web_search,misspelled,formal"
        None, "Vary phrasing: formal,web_search,misspelled,conversational.", panel="Phrasing"
    )
    critics: bool = option(True, "Skip the critics (not recommended).", flag="--no-critics",
                           negate=True)  # fmt: skip
    critic_calls: str = option("auto", "auto (merged; separate on --llm local) | merged | separate")
    max_words: dict[str, int] | None = option(
        None, "Word limit per rewrite, e.g. reasoning=20.", flag="--max-words"
    )
    # Ragas v0.1 (issue 14): compress_question after reasoning, multi_context, conditional
    compress: bool = option(
        True,
        "Do not compress reasoning, multi_context and conditional questions (Ragas v0.1 does).",
        flag="--no-compress",
        negate=True,
    )
    # Ragas v0.1's node filter: clarity, depth, structure, relevance 1-3, kept at a mean >= 1.5
    node_filter: bool = option(
        True,
        "Do not score contexts before seeding (Ragas v0.1's node filter keeps a mean >= 1.5).",
        flag="--no-node-filter",
        negate=True,
    )
    keyphrases: str = option(  # the seed question's keyphrase; graph edges are always TF-IDF
        "tfidf", "tfidf | llm (Ragas v0.1: the model extracts them; one call per chunk)."
    )
    # Deprecated: passes adapt to the acceptance rate until N or the budget (issue 14).
    max_passes: int | None = option(
        None, "Deprecated: passes now adapt until N, the budget or the material runs out."
    )
    text_field: str = option("text", "Text field of .jsonl documents.", panel="Documents")
    decontaminate: list[str] | None = option(  # benchmark questions (issue 14)
        None,
        "Benchmark file (JSONL, JSON, text or a datasets folder); reject records sharing a "
        "10-gram with it as contaminated. Repeat for more.",
        flag="--decontaminate",
    )
    format: str | None = option(  # jsonl, json, csv, parquet, ragas, deepeval
        None,
        "jsonl | json | csv | parquet | ragas | deepeval (default: from --out).",
        flag="--format",
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("--n must be at least 1")
        if self.max_passes is not None and self.max_passes < 1:
            raise ConfigError("--max-passes must be at least 1")
        if self.keyphrases not in ("tfidf", "llm"):
            raise ConfigError(f"--keyphrases: {self.keyphrases!r}; give tfidf or llm")


@dataclass
class In2Options:
    """What ``in2`` builds (defaults from An et al., 2024)."""

    n: int = option(100, "Samples to produce, exactly.", flag="--n", required=True)
    min_tokens: int = option(4096, "Shortest context (tokens).")
    max_tokens: int = option(32768, "Longest context (tokens).")
    segment_tokens: int = option(128, "Segment size (tokens).")
    short_ratio: float | None = option(  # None: the paper's 9%; else the short share of the mix
        None, "Share of samples whose context is only the original document (paper: 0.09)."
    )
    mix: str | None = option(None, "fine_grained=0.63,integration=0.17,short=0.09,general=0.11")
    general: str | None = option(  # instruction records for the general share
        None, "Instruction records (instruction, input, output) for the general share.", path=True
    )
    decontaminate: str | None = option(  # evaluation examples: drop documents sharing a 10-gram
        None, "Evaluation examples: drop documents sharing a 10-gram.", path=True
    )
    tokenizer: str | None = option(  # None: the embedded model's; "regex"; or a tokenizer folder
        None, "regex, or a local Hugging Face tokenizer folder (default: the embedded model's)."
    )
    text_field: str = option("text", "Text field of .jsonl / datasets rows.")
    pool_capacity: int = option(20000, "Needle sources held in memory.", cli=False)
    # Deprecated (issue 14): passes adapt until N, the budget or the sources run out.
    max_passes: int | None = option(None, "Deprecated: a cap on the passes.", cli=False)
    format: str | None = option(  # jsonl (default), json, csv, parquet, plain
        None, "jsonl | json | csv | parquet | plain (context/question/answer).", flag="--format"
    )

    def __post_init__(self) -> None:
        if self.n < 1:
            raise ConfigError("--n must be at least 1")
        if not 0 < self.min_tokens <= self.max_tokens:
            raise ConfigError("--min-tokens must be positive and at most --max-tokens")
        if self.short_ratio is not None and not 0 <= self.short_ratio < 1:
            raise ConfigError("--short-ratio must be in [0, 1)")


@dataclass
class SelectOptions(SignalOptions):
    """What ``select`` keeps (DEITA, AlpaGasus, k-center, random, ``SignalOptions``)."""

    method: str = option("deita", METHODS_HELP)
    budget: int | None = option(None, "How many to select (all but alpagasus).")
    tau: float = option(0.9, "deita: max cosine to any selected record.")
    min_score: float = option(4.5, "alpagasus: keep ratings >= this.")
    embedder: str = option("minilm", "minilm | hashing | openai:MODEL[@URL]")
    fields: list[str] | None = option(None, "Fields to embed (default: by kind).", flag="--fields")
    clusters: int | None = option(None, "kcenter: k-means clusters (default budget // 10).")
    kcenter_mode: str = option(
        "global",
        "kcenter: global (the paper's: seed at the K centroids, one farthest-point loop) "
        "| per-cluster (budget split by cluster size).",
    )
    deita_mode: str = option(
        "record",
        "deita: record (score each record alone, comparable across the set) | chain "
        "(rank-score evolution chains together: the paper's labelling step).",
    )

    def __post_init__(self) -> None:
        for name, value, allowed in (
            ("--kcenter-mode", self.kcenter_mode, KCENTER_MODES),
            ("--deita-mode", self.deita_mode, DEITA_MODES),
        ):
            if value not in allowed:
                raise ConfigError(
                    f"{name} {value!r}: use one of {', '.join(allowed)}"
                    + did_you_mean(value, allowed)
                )


@dataclass
class DedupOptions:
    """What ``dedup`` compares and keeps (see ``evoforge.validators.dedup``)."""

    method: str = option("exact,minhash", "Comma list of exact, minhash, semantic.")
    threshold: float = option(0.7, "minhash: Jaccard of near-duplicates.")
    semantic_threshold: float = option(0.9, "semantic: cosine of duplicates.")
    fields: list[str] | None = option(
        None, "Fields to compare (default: by kind).", flag="--fields"
    )
    embedder: str = option("minilm", "semantic: minilm | hashing | openai:MODEL[@URL]")
    prefer: str | None = option(
        None, "Keep the highest of this numeric field per group, e.g. meta.deita.score."
    )
    clusters: str | None = option(None, "Write each duplicate group here (JSON lines).", path=True)
    seed: int = option(1, "Run seed: the same seed gives the same output.")
    shards: int = option(1, "Worker processes for MinHash signatures (same result).", min=1)
    # issue 20: the signatures as Ray Data map_batches jobs (docs/cluster.md)
    executor: str = option(
        "local", "local | ray | ray:ADDRESS: MinHash signatures on Ray Data (same result)."
    )

    def __post_init__(self) -> None:
        if self.shards < 1:
            raise ConfigError(f"dedup: shards must be at least 1, got {self.shards}")
        if self.executor != "local" and self.executor.partition(":")[0] != "ray":
            raise ConfigError(f"--executor {self.executor!r}: use local, ray or ray:ADDRESS")


@dataclass
class ValidateOptions:
    """What ``validate`` checks (see ``evoforge.validators.checks``)."""

    kind: str | None = option(
        None, "instruction | qa | rag | in2 | chat | pam (default: each record's own kind)."
    )
    checks: str = option(
        "schema",
        "Comma list of: schema, length, refusal, empty, leak, language, lima, rubric "
        "(an LLM judge, --llm).",
    )
    min_len: int | None = option(None, "length: shortest answer.")
    max_len: int | None = option(None, "length: longest answer.")
    unit: str = option("words", "length: chars | words | tokens.")
    lima_length: bool = option(
        False, "lima: answers of 1,200-4,096 characters only.", flag="--lima-length"
    )
    rubric: str | None = option(
        None,
        "rubric: the rubric as text, or YAML {rubric, scale: [1, 5], threshold: 4, reason}.",
        path=True,
    )
    decontaminate: list[str] | None = option(  # benchmark questions (issue 14)
        None,
        "Benchmark file (JSONL, JSON, text or a datasets folder); reject records sharing a "
        "10-gram with it as contaminated. Repeat for more.",
        flag="--decontaminate",
    )


@dataclass
class AnswerOptions:
    """What ``answer`` keeps."""

    allow_truncated: bool = option(False, "Keep answers cut at max tokens.")


@dataclass
class ProbeOptions:
    """What ``probe build`` makes (An et al., 2024, VaL probing)."""

    context_tokens: int = option(32000, "Context length (tokens).")
    buckets: int = option(16, "Position buckets the needles are spread over.")
    seed: int = option(0, "Run seed: the same seed gives the same output.")


@dataclass
class ExportOptions:
    """What ``export`` writes beside the records: the dataset card, and the Hub upload."""

    card: bool = option(
        True, "Do not write README.md (the dataset card).", flag="--no-card", negate=True
    )
    license: str = option("other", "The card's license id, e.g. cc-by-4.0.")
    language: list[str] | None = option(None, "The card's language codes (default en).")
    push_to_hub: str | None = option(
        None, "Upload the export and its card to this Hub dataset repo (user/name)."
    )
    private: bool = option(False, "Create the Hub repo private.", flag="--private")
    tokenizer: str | None = option(  # --to tokens; None: the embedded model's, offline
        None, "--to tokens: a tokenizer folder (default: the embedded model's).", path=True
    )


# ``evoforge demo`` runs the embedded model on a laptop: shorter replies, fewer requests in
# flight, a patient timeout, and a fresh start each time.
DEMO_ENGINE = {
    "max_output_tokens": 160,
    "concurrency": 8,
    "timeout": 600.0,
    "max_attempts": 3,
    "max_retry_wait": 60.0,
    "overwrite": True,
}
DEMO_OUT = "evoforge-demo"


def option_fields(cls: type) -> list[Field[Any]]:
    """The fields of an options dataclass that the command line shows."""
    return [f for f in fields(cls) if f.metadata.get("cli", True)]
