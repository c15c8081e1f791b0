"""What a recipe says: one dataclass per section, with the defaults of the commands.

Every key a command also takes reads its default from :mod:`evoforge.options`, where
the command line reads it too, so a recipe step and the command behave the same
when a key is left out. The generator, ``evolvers`` and ``selection`` sections are
the options dataclasses themselves.
"""

from __future__ import annotations

import inspect
from dataclasses import dataclass, field, fields
from pathlib import Path
from typing import Any

from evoforge.options import (
    DedupOptions,
    EngineOptions,
    EvolveOptions,
    In2Options,
    RagOptions,
    SelectOptions,
    ValidateOptions,
    default_of,
)
from evoforge.options_grow import GrowOptions
from evoforge.options_training import Orca2Options, PamOptions

GENERATORS = ("answer", "evolve", "rag", "in2", "orca2", "pam")
# What the steps write in the run folder (stems); the final dataset needs another name.
STEP_FILES = (*GENERATORS, "evolved", "validated", "deduped", "selected", "recipe", "graph")
# A mix may be written as a mapping ({reasoning: 0.5}) or as the CLI's string.
MIX_KEYS = ("ops", "quality_ops", "mix")


def option_default(cls: type, name: str) -> Any:
    """The default of option ``name`` of ``cls`` (an options dataclass): a recipe key
    defaults to what its command does, written down once in :mod:`evoforge.options`."""
    return default_of(next(f for f in fields(cls) if f.name == name))


def comma_list(text: str) -> list[str]:
    """``"exact,minhash"`` -> ``["exact", "minhash"]``: the command line's lists as YAML's."""
    return [part.strip() for part in text.split(",") if part.strip()]


def _from(cls: type, name: str) -> Any:
    """A field defaulting to option ``name`` of ``cls``."""
    value = option_default(cls, name)
    if isinstance(value, dict | list):
        return field(default_factory=lambda: option_default(cls, name))
    return field(default=value)


def _list_from(cls: type, name: str) -> Any:
    """A list field defaulting to the comma list option ``name`` of ``cls``."""
    return field(default_factory=lambda: comma_list(option_default(cls, name)))


def _answer_default(parameter: str) -> Any:
    # answer has one setting and no options dataclass: its default is the command's.
    from evoforge.commands.answer import answer_async

    return inspect.signature(answer_async).parameters[parameter].default


@dataclass
class LlmSpec:
    """``llm: local`` or the mapping form with backend arguments and sampling."""

    spec: str = _from(EngineOptions, "llm")  # local | openai:MODEL[@URL] | langchain:...
    args: dict[str, Any] = _from(EngineOptions, "llm_args")
    temperature: float | None = _from(EngineOptions, "temperature")
    max_output_tokens: int | None = _from(EngineOptions, "max_output_tokens")  # None: 512


@dataclass
class SourceSpec:
    """Where the material comes from: ``seeds`` (records) or ``docs`` (files, folders)."""

    seeds: str | None = None
    docs: list[str] | None = None
    field_map: dict[str, str] | None = None


@dataclass
class AnswerSpec:
    allow_truncated: bool = field(default_factory=lambda: _answer_default("allow_truncated"))


@dataclass
class ValidatorsSpec:
    """The ``evoforge validate`` step (``commands/validate.py``): every check the command
    runs, the LLM-judged ``rubric`` included (``rubric`` names its file or text)."""

    checks: list[str] = _list_from(ValidateOptions, "checks")
    kind: str | None = _from(ValidateOptions, "kind")
    min_len: int | None = _from(ValidateOptions, "min_len")
    max_len: int | None = _from(ValidateOptions, "max_len")
    unit: str = _from(ValidateOptions, "unit")
    lima_length: bool = _from(ValidateOptions, "lima_length")
    rubric: str | None = _from(ValidateOptions, "rubric")


@dataclass
class DedupSpec:
    """``evoforge dedup`` (``commands/dedup.py``)."""

    methods: list[str] = _list_from(DedupOptions, "method")
    threshold: float = _from(DedupOptions, "threshold")
    semantic_threshold: float = _from(DedupOptions, "semantic_threshold")
    fields: list[str] | None = _from(DedupOptions, "fields")  # default: by kind
    prefer: str | None = _from(DedupOptions, "prefer")  # keep the highest of this field
    embedder: str | None = None  # semantic; default: the recipe's embedder, not the command's


@dataclass
class BudgetSpec:
    """Caps for the whole recipe, across its steps; a run that reaches one stops
    cleanly and re-running resumes."""

    max_calls: int | None = _from(EngineOptions, "max_calls")
    max_tokens: int | None = _from(EngineOptions, "max_tokens")


@dataclass
class OutputsSpec:
    """The run folder and the final dataset (a copy of the last step's output)."""

    dir: str | None = None  # default: <recipe name>-out beside the recipe
    name: str = "dataset.jsonl"
    format: str | None = None  # jsonl json csv parquet ragas deepeval plain; default: by name
    export: list[str] = field(default_factory=list)  # evoforge export formats, with a card
    report: bool = True  # report.html and summary.md of the run folder (evoforge report)


@dataclass
class Recipe:
    """A whole pipeline. ``generator`` holds the options of ``generator_type``."""

    path: Path
    seed: int = _from(EngineOptions, "seed")
    llm: LlmSpec = field(default_factory=LlmSpec)
    embedder: str = "minilm"
    source: SourceSpec = field(default_factory=SourceSpec)
    generator_type: str | None = None
    generator: Any = None  # AnswerSpec | EvolveOptions | RagOptions | In2Options
    evolvers: EvolveOptions | None = None
    validators: ValidatorsSpec | None = None
    dedup: DedupSpec | None = None
    selection: SelectOptions | None = None
    engine: dict[str, Any] = field(default_factory=dict)  # EngineOptions the recipe sets
    budget: BudgetSpec = field(default_factory=BudgetSpec)
    outputs: OutputsSpec = field(default_factory=OutputsSpec)

    def run_dir(self, out: str | Path | None = None) -> Path:
        if out is not None:
            return Path(out)
        if self.outputs.dir:
            return self.resolve(self.outputs.dir)
        return self.path.parent / f"{self.path.stem}-out"

    def resolve(self, value: str) -> Path:
        path = Path(value).expanduser()
        return path if path.is_absolute() else self.path.parent / path

    def engine_options(self, *, max_calls: int | None, max_tokens: int | None) -> EngineOptions:
        return EngineOptions(
            llm=self.llm.spec,
            llm_args=dict(self.llm.args),
            temperature=self.llm.temperature,
            max_output_tokens=self.llm.max_output_tokens,
            max_calls=max_calls,
            max_tokens=max_tokens,
            seed=self.seed,
            **self.engine,
        )


# Top-level sections and their dataclasses (generator, seed and embedder are read apart).
SECTIONS: dict[str, type] = {
    "llm": LlmSpec,
    "source": SourceSpec,
    "evolvers": EvolveOptions,
    "validators": ValidatorsSpec,
    "dedup": DedupSpec,
    "selection": SelectOptions,
    "engine": EngineOptions,
    "budget": BudgetSpec,
    "outputs": OutputsSpec,
}
TOP_KEYS = ("seed", "embedder", "generator", *SECTIONS)
GENERATOR_OPTIONS: dict[str, type] = {
    "answer": AnswerSpec,
    "evolve": EvolveOptions,
    "rag": RagOptions,
    "in2": In2Options,
    "grow": GrowOptions,
    "orca2": Orca2Options,
    "pam": PamOptions,
}
# Options a recipe sets elsewhere (outputs.format, the run folder, the embedder).
NOT_IN_RECIPE = {"rag": ("format",), "in2": ("format",)}
# grow (issue 18): a generator step writing grow.jsonl in the run folder
GENERATORS = (*GENERATORS, "grow")
STEP_FILES = (*STEP_FILES, "grow")
# The engine section takes EngineOptions but the model (llm), seed and budget.
ENGINE_ELSEWHERE = (
    "llm", "llm_args", "temperature", "max_output_tokens", "max_calls", "max_tokens", "seed",
)  # fmt: skip
# Recipe keys whose options have another name (or shape) in evoforge.options.
OPTION_OF = {
    LlmSpec: {"spec": (EngineOptions, "llm"), "args": (EngineOptions, "llm_args")},
    DedupSpec: {"methods": (DedupOptions, "method")},
}
