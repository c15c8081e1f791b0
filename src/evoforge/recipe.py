"""YAML recipes: one file describes a whole pipeline, ``evoforge run`` executes it.

A recipe names a source (seed records or document folders), a generator
(``answer``, ``evolve``, ``rag`` or ``in2`` with that command's options), an
optional further evolution step (``evolvers``), per-record ``validators`` (the
``validate --checks`` chain), ``dedup``, ``selection``, the ``llm`` and
``embedder``, engine settings, a ``budget`` and the run ``seed``. Every step
calls the same API function as its single command, into one run folder, so the
durability is the same: each LLM step keeps its journal and manifest beside its
output, and re-running the recipe resumes (an identical re-run makes no LLM call).

Loading is strict: an unknown key is an error naming the file, the line and the
key path, with a "did you mean" hint; a value of the wrong type names its field.
Relative paths are read from the recipe file's folder.

The dry run (``evoforge run --dry-run``) lives in :mod:`evoforge.recipe_plan`:
it counts the LLM calls and tokens each step expects without calling a model.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import shutil
import types
import typing
from collections.abc import Sequence
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any

import yaml

from evoforge.api import (
    EngineOptions,
    EvolveOptions,
    In2Options,
    RagOptions,
    SelectOptions,
    answer_async,
    dedup,
    evolve_async,
    in2_async,
    rag_async,
    select_async,
)
from evoforge.errors import ConfigError, InputError, did_you_mean
from evoforge.io.readers import load_jsonl
from evoforge.io.writers import atomic_text
from evoforge.validators.checks import DEFAULT_CHECKS, Bounds, CheckSettings

GENERATORS = ("answer", "evolve", "rag", "in2")
# What the steps write in the run folder (stems); the final dataset needs another name.
STEP_FILES = (*GENERATORS, "evolved", "validated", "deduped", "selected", "recipe", "graph")
# A mix may be written as a mapping ({reasoning: 0.5}) or as the CLI's string.
_MIX_KEYS = ("ops", "quality_ops", "mix")


# --------------------------------------------------------------------------- the model


def _default(function: Any, parameter: str) -> Any:
    """The default of ``function``'s ``parameter``: a recipe key defaults to what its
    command does, written down once there."""
    return inspect.signature(function).parameters[parameter].default


@dataclass
class LlmSpec:
    """``llm: local`` or the mapping form with backend arguments and sampling."""

    spec: str = EngineOptions.llm  # local | openai:MODEL[@BASE_URL] | langchain:pkg.module:Class
    args: dict[str, Any] = field(default_factory=dict)
    temperature: float | None = EngineOptions.temperature
    max_output_tokens: int | None = EngineOptions.max_output_tokens  # per reply; None: 512


@dataclass
class SourceSpec:
    """Where the material comes from: ``seeds`` (records) or ``docs`` (files, folders)."""

    seeds: str | None = None
    docs: list[str] | None = None
    field_map: dict[str, str] | None = None


@dataclass
class AnswerSpec:
    allow_truncated: bool = _default(answer_async, "allow_truncated")


@dataclass
class ValidatorsSpec:
    """The ``evoforge validate`` chain (``validators/checks.py``)."""

    checks: list[str] = field(default_factory=lambda: list(DEFAULT_CHECKS))
    kind: str | None = None
    min_len: int | None = None
    max_len: int | None = None
    unit: str = Bounds.unit
    lima_length: bool = CheckSettings.lima_length


@dataclass
class DedupSpec:
    """``evoforge dedup`` (``validators/dedup.py``)."""

    methods: list[str] = field(default_factory=lambda: _default(dedup, "method").split(","))
    threshold: float = _default(dedup, "threshold")
    semantic_threshold: float = _default(dedup, "semantic_threshold")
    fields: list[str] | None = None  # default: by kind
    prefer: str | None = None  # keep the highest of this numeric field per group
    embedder: str | None = None  # semantic; default: the recipe's embedder


@dataclass
class BudgetSpec:
    """Caps for the whole recipe, across its steps; a run that reaches one stops
    cleanly and re-running resumes."""

    max_calls: int | None = None
    max_tokens: int | None = None


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
    seed: int = 0
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
_SECTIONS: dict[str, type] = {
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
_TOP_KEYS = ("seed", "embedder", "generator", *_SECTIONS)
_GENERATOR_OPTIONS: dict[str, type] = {
    "answer": AnswerSpec,
    "evolve": EvolveOptions,
    "rag": RagOptions,
    "in2": In2Options,
}
# Options a recipe sets elsewhere (outputs.format, the run folder, the embedder).
_NOT_IN_RECIPE = {"rag": ("format",), "in2": ("format",)}
# The engine section takes EngineOptions but the model (llm), seed and budget.
_ENGINE_ELSEWHERE = (
    "llm", "llm_args", "temperature", "max_output_tokens", "max_calls", "max_tokens", "seed",
)  # fmt: skip


# --------------------------------------------------------------------------- loading


class _Loader:
    """Turns composed YAML nodes into the dataclasses above, with marks for errors."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        self._yaml = yaml.SafeLoader(text)
        self.given: dict[str, set[str]] = {}  # section -> the keys the file sets

    def root(self) -> yaml.Node | None:
        try:
            return self._yaml.get_single_node()
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.path}: not valid YAML: {exc}") from None

    def fail(self, node: yaml.Node, where: str, message: str) -> ConfigError:
        line = node.start_mark.line + 1
        return ConfigError(f"{self.path} line {line}: {where}: {message}")

    def value(self, node: yaml.Node) -> Any:
        return self._yaml.construct_object(node, deep=True)

    def mapping(self, node: yaml.Node, where: str) -> list[tuple[str, yaml.Node, yaml.Node]]:
        if not isinstance(node, yaml.MappingNode):
            raise self.fail(node, where, "expected a mapping of keys to values")
        items = []
        for key_node, value_node in node.value:
            key = self.value(key_node)
            if not isinstance(key, str):
                raise self.fail(key_node, where, f"keys must be names, got {key!r}")
            items.append((key, key_node, value_node))
        return items

    def unknown(self, key: str, key_node: yaml.Node, where: str, known: Sequence[str]) -> Any:
        hint = did_you_mean(key, known)
        path = f"{where}.{key}" if where else key
        return self.fail(key_node, path, f"unknown key {key!r}{hint} (known: {', '.join(known)})")

    def build(self, cls: type, node: yaml.Node, where: str, *, skip: Sequence[str] = ()) -> Any:
        """``cls(**values)`` from a mapping node: keys checked, values typed."""
        hints = typing.get_type_hints(cls)
        names = [f.name for f in fields(cls) if f.init and f.name not in skip and f.name != "path"]
        values: dict[str, Any] = {}
        self.given[where] = set()
        for key, key_node, value_node in self.mapping(node, where):
            self.given[where].add(key)
            if key not in names:
                raise self.unknown(key, key_node, where, names)
            value = self.value(value_node)
            if key in _MIX_KEYS and isinstance(value, dict):
                value = _mix_string(value, self, value_node, f"{where}.{key}")
            if key == "styles" and isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if key in ("checks", "methods") and isinstance(value, str):
                value = [part.strip() for part in value.split(",") if part.strip()]
            problem = _type_problem(value, hints[key])
            if problem:
                raise self.fail(value_node, f"{where}.{key}", problem)
            if cls is OutputsSpec and key == "export":
                self._check_export(value, value_node)
            values[key] = value
        try:
            return cls(**values)
        except ConfigError as exc:
            raise self.fail(node, where, str(exc)) from None

    def _check_export(self, names: list[str], node: yaml.Node) -> None:
        from evoforge.export import EXPORT_FORMATS

        for name in names:
            if name not in EXPORT_FORMATS:
                raise self.fail(
                    node, "outputs.export", f"unknown format {name!r}"
                    f"{did_you_mean(name, EXPORT_FORMATS)} (formats: {', '.join(EXPORT_FORMATS)})",
                )  # fmt: skip


def _mix_string(value: dict, loader: _Loader, node: yaml.Node, where: str) -> str:
    parts = []
    for name, weight in value.items():
        if isinstance(weight, bool) or not isinstance(weight, int | float):
            raise loader.fail(node, where, f"{name}: the weight must be a number, got {weight!r}")
        parts.append(f"{name}={weight}")
    return ",".join(parts)


def _type_name(hint: Any) -> str:
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return " or ".join(_type_name(arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return "null"
    if origin is not None:
        args = ", ".join(_type_name(arg) for arg in typing.get_args(hint))
        return f"{getattr(origin, '__name__', str(origin))}[{args}]"
    return {"str": "a string", "int": "an integer", "float": "a number", "bool": "true/false"}.get(
        getattr(hint, "__name__", str(hint)), getattr(hint, "__name__", str(hint))
    )


def _matches(value: Any, hint: Any) -> bool:
    if hint is Any:
        return True
    origin = typing.get_origin(hint)
    if origin in (typing.Union, types.UnionType):
        return any(_matches(value, arg) for arg in typing.get_args(hint))
    if hint is type(None):
        return value is None
    if origin is list:
        (item,) = typing.get_args(hint) or (Any,)
        return isinstance(value, list) and all(_matches(v, item) for v in value)
    if origin is dict:
        key_type, value_type = typing.get_args(hint) or (Any, Any)
        return isinstance(value, dict) and all(
            _matches(k, key_type) and _matches(v, value_type) for k, v in value.items()
        )
    if hint is bool:
        return isinstance(value, bool)
    if hint is int:
        return isinstance(value, int) and not isinstance(value, bool)
    if hint is float:
        return isinstance(value, int | float) and not isinstance(value, bool)
    if isinstance(hint, type):
        return isinstance(value, hint)
    return True


def _type_problem(value: Any, hint: Any) -> str | None:
    if _matches(value, hint):
        return None
    return f"expected {_type_name(hint)}, got {value!r} ({type(value).__name__})"


def load_recipe(path: str | Path) -> Recipe:
    """Read and check a recipe file: see the module docstring and README for the keys."""
    path = Path(path)
    try:
        text = path.read_text("utf-8")
    except OSError as exc:
        raise InputError(f"cannot read the recipe: {exc.strerror}", path=str(path)) from None
    loader = _Loader(path, text)
    root = loader.root()
    if root is None:
        raise ConfigError(f"{path}: the recipe is empty")
    recipe = Recipe(path=path.resolve())
    for key, key_node, node in loader.mapping(root, ""):
        if key not in _TOP_KEYS:
            raise loader.unknown(key, key_node, "", _TOP_KEYS)
        if key == "seed" or key == "embedder":
            value = loader.value(node)
            problem = _type_problem(value, int if key == "seed" else str)
            if problem:
                raise loader.fail(node, key, problem)
            setattr(recipe, key, value)
        elif key == "llm" and isinstance(node, yaml.ScalarNode):
            value = loader.value(node)
            if not isinstance(value, str):
                raise loader.fail(node, "llm", f"expected a string or a mapping, got {value!r}")
            recipe.llm = LlmSpec(spec=value)
        elif key == "generator":
            recipe.generator_type, recipe.generator = _generator(loader, node)
        elif key == "engine":
            options = loader.build(EngineOptions, node, key, skip=_ENGINE_ELSEWHERE)
            recipe.engine = {name: getattr(options, name) for name in loader.given[key]}
        else:
            setattr(recipe, key, loader.build(_SECTIONS[key], node, key))
    _check(recipe, loader, root)
    # The recipe's embedder is the default of every step that embeds.
    if recipe.selection is not None and "embedder" not in loader.given["selection"]:
        recipe.selection.embedder = recipe.embedder
    if isinstance(recipe.generator, RagOptions) and "embedder" not in loader.given["generator"]:
        recipe.generator.embedder = recipe.embedder
    return recipe


def _generator(loader: _Loader, node: yaml.Node) -> tuple[str, Any]:
    items = loader.mapping(node, "generator")
    kind = next((loader.value(v) for k, _, v in items if k == "type"), None)
    if kind not in GENERATORS:
        raise loader.fail(node, "generator.type", f"{kind!r}: give one of {', '.join(GENERATORS)}")
    rest = yaml.MappingNode(
        node.tag, [(k, v) for k, v in node.value if loader.value(k) != "type"],
        start_mark=node.start_mark, end_mark=node.end_mark,
    )  # fmt: skip
    options = loader.build(
        _GENERATOR_OPTIONS[kind], rest, "generator", skip=_NOT_IN_RECIPE.get(kind, ())
    )
    return kind, options


def _check(recipe: Recipe, loader: _Loader, root: yaml.Node) -> None:
    source = recipe.source
    kind = recipe.generator_type
    if kind is None and recipe.evolvers is None:
        raise loader.fail(root, "generator", "a recipe needs a generator or an evolvers step")
    if kind in ("rag", "in2"):
        if not source.docs:
            raise loader.fail(root, "source.docs", f"the {kind} generator reads documents")
    elif not source.seeds:
        raise loader.fail(root, "source.seeds", "answer and evolve read seed records")
    if kind == "in2" and recipe.evolvers is not None:
        raise loader.fail(root, "evolvers", "IN2 samples are not evolved further")
    if recipe.validators is not None:
        from evoforge.validators.checks import ValidatorChain, parse_checks

        # The validate step runs ValidatorChain.check, which skips the LLM-judged checks.
        judged = ValidatorChain(parse_checks(recipe.validators.checks)).judged
        if judged:
            raise loader.fail(
                root, "validators.checks", f"{', '.join(judged)} asks an LLM judge, which a "
                "recipe's validate step does not run; judge the dataset afterwards with "
                f"evoforge validate --checks {','.join(judged)}",
            )  # fmt: skip
    if recipe.outputs.name.split(".")[0] in STEP_FILES:
        raise loader.fail(
            root, "outputs.name", f"{recipe.outputs.name!r} is a step's own file in the run "
            f"folder; name the dataset otherwise (taken: {', '.join(STEP_FILES)})",
        )  # fmt: skip
    if recipe.outputs.export:
        from evoforge.export import EXPORT_FORMATS

        record_kind = _final_kind(recipe)
        for to in recipe.outputs.export:
            if record_kind not in EXPORT_FORMATS[to].kinds:
                takes = " and ".join(EXPORT_FORMATS[to].kinds)
                raise loader.fail(
                    root, "outputs.export", f"{to} takes {takes} records; this recipe "
                    f"writes {record_kind} records",
                )  # fmt: skip


def _final_kind(recipe: Recipe) -> str:
    """The kind of the records the recipe writes."""
    if recipe.generator_type in ("rag", "in2"):
        return recipe.generator_type
    if recipe.generator_type == "evolve":
        return recipe.generator.kind
    if recipe.generator_type is None and recipe.evolvers is not None:
        return recipe.evolvers.kind
    return "instruction"


# --------------------------------------------------------------------------- running


@dataclass
class StepResult:
    """What one step did: its output, status, records and LLM usage."""

    name: str
    out: Path
    status: str = "complete"
    accepted: int = 0
    rejected: int = 0
    calls: int = 0
    cache_hits: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0
    message: str = ""
    exit_code: int = 0  # as the step's own command would exit (3 stopped, 4 quota, 130)

    @property
    def tokens(self) -> int:
        return self.prompt_tokens + self.completion_tokens


@dataclass
class RecipeResult:
    """A recipe run: each step's result, the final dataset and the manifest."""

    recipe: Path
    run_dir: Path
    steps: list[StepResult]
    dataset: Path | None
    manifest: Path
    status: str = "complete"
    exports: dict[str, list[Path]] = field(default_factory=dict)  # format -> files written
    report: Path | None = None  # report.html, when outputs.report
    report_error: str | None = None  # why the report could not be written (the run stands)

    @property
    def calls(self) -> int:
        return sum(step.calls for step in self.steps)

    def cost(self, price: tuple[float, float]) -> float:
        """What this invocation's calls cost at (input, output) dollars per 1M tokens."""
        prompt = sum(step.prompt_tokens for step in self.steps)
        completion = sum(step.completion_tokens for step in self.steps)
        return (prompt * price[0] + completion * price[1]) / 1e6

    @property
    def exit_code(self) -> int:
        """The first stopped step's exit code (see ``RunSummary.exit_code``); 3 when the
        recipe's budget ran out between steps."""
        if self.status == "complete":
            return 0
        return next((step.exit_code for step in self.steps if step.exit_code), 3)


def _usage(usage: dict[str, dict[str, int]]) -> tuple[int, int, int, int]:
    """(calls, cache hits, prompt tokens, completion tokens) over a run's operators."""
    calls = hits = prompt = completion = 0
    for stats in usage.values():
        calls += stats["calls"]
        hits += stats["cache_hits"]
        prompt += stats["prompt_tokens"]
        completion += stats["completion_tokens"]
    return calls, hits, prompt, completion


class _RecipeRun:
    """Runs a recipe's steps in order into ``run_dir``; the budget spans all steps."""

    def __init__(self, recipe: Recipe, run_dir: Path, model: Any = None) -> None:
        self.recipe = recipe
        self.run_dir = run_dir
        self.model = model
        self.steps: list[StepResult] = []
        self.calls = 0
        self.tokens = 0

    def options(self) -> EngineOptions:
        budget = self.recipe.budget
        max_calls = None if budget.max_calls is None else budget.max_calls - self.calls
        max_tokens = None if budget.max_tokens is None else budget.max_tokens - self.tokens
        if (max_calls is not None and max_calls <= 0) or (
            max_tokens is not None and max_tokens <= 0
        ):
            raise _BudgetSpent
        return self.recipe.engine_options(max_calls=max_calls, max_tokens=max_tokens)

    def done(self, name: str, summary: Any) -> StepResult:
        calls, hits, prompt, completion = _usage(summary.usage)
        self.calls += calls
        self.tokens += prompt + completion
        step = StepResult(
            name, Path(summary.out), summary.status, summary.accepted, summary.rejected,
            calls, hits, prompt, completion, summary.message, summary.exit_code,
        )  # fmt: skip
        self.steps.append(step)
        return step

    async def execute(self) -> Path:
        recipe = self.recipe
        source = recipe.source
        kind = recipe.generator_type
        current: Path | None = None
        record_kind = "instruction"
        if kind == "answer":
            seeds = recipe.resolve(source.seeds or "")
            summary = await answer_async(
                seeds, self.run_dir / "answer.jsonl", options=self.options(),
                field_map=source.field_map, model=self.model,
                allow_truncated=recipe.generator.allow_truncated,
            )  # fmt: skip
            current = self.done("answer", summary).out
        elif kind == "evolve":
            current = await self._evolve("evolve", recipe.generator, None)
            record_kind = recipe.generator.kind
        elif kind in ("rag", "in2"):
            generate = rag_async if kind == "rag" else in2_async
            settings = {kind: _with_paths(recipe.generator, recipe, self.run_dir)}
            summary = await generate(
                [recipe.resolve(d) for d in source.docs or []], self.run_dir / f"{kind}.jsonl",
                options=self.options(), model=self.model, **settings,
            )  # fmt: skip
            current = self.done(kind, summary).out
            record_kind = kind
        if self._stopped():
            return current  # type: ignore[return-value]
        if recipe.evolvers is not None:
            current = await self._evolve("evolvers", recipe.evolvers, current, record_kind)
            if self._stopped():
                return current
        assert current is not None
        if recipe.validators is not None:
            current = self._validate(current)
        if recipe.dedup is not None:
            current = self._dedup(current)
        if recipe.selection is not None:
            current = await self._select(current)
        return current

    def _stopped(self) -> bool:
        return any(step.status != "complete" for step in self.steps)

    async def _evolve(
        self, name: str, evolution: EvolveOptions, seeds: Path | None, previous: str = ""
    ) -> Path:
        recipe = self.recipe
        if seeds is None:
            seeds = recipe.resolve(recipe.source.seeds or "")
            field_map = recipe.source.field_map
        else:
            field_map = None
            if previous and previous != evolution.kind:  # evolve the records of the step before
                evolution = replace(evolution, kind=previous)
        out = self.run_dir / ("evolve.jsonl" if name == "evolve" else "evolved.jsonl")
        summary = await evolve_async(
            seeds, out, evolution=evolution, options=self.options(), field_map=field_map,
            model=self.model,
        )  # fmt: skip
        return self.done(name, summary).out

    def _validate(self, source: Path) -> Path:
        from evoforge.validators.checks import ValidatorChain, parse_checks

        spec = self.recipe.validators
        assert spec is not None
        settings = CheckSettings(
            kind=spec.kind, length=Bounds(spec.min_len, spec.max_len, spec.unit),
            lima_length=spec.lima_length,
        )  # fmt: skip
        chain = ValidatorChain(parse_checks(spec.checks), settings)
        kept, dropped = [], []
        for record in load_jsonl(source):
            verdict = chain.check(record)
            if verdict.ok:
                kept.append(record)
            else:
                dropped.append({"id": record.get("id"), "reason": verdict.reason,
                                "detail": verdict.detail, "record": record})  # fmt: skip
        return self._write_step("validate", "validated.jsonl", kept, dropped, asdict(spec))

    def _dedup(self, source: Path) -> Path:
        spec = self.recipe.dedup
        assert spec is not None
        out = self.run_dir / "deduped.jsonl"
        result = dedup(
            source, out, method=",".join(spec.methods), threshold=spec.threshold,
            semantic_threshold=spec.semantic_threshold, fields=spec.fields,
            embedder=spec.embedder or self.recipe.embedder, prefer=spec.prefer,
            seed=self.recipe.seed,
        )  # fmt: skip
        message = f"{len(result.kept)} kept, {len(result.dropped)} dropped"
        self.steps.append(StepResult("dedup", out, "complete", len(result.kept),
                                     len(result.dropped), message=message))  # fmt: skip
        return out

    async def _select(self, source: Path) -> Path:
        spec = self.recipe.selection
        assert spec is not None
        out = self.run_dir / "selected.jsonl"
        report = await select_async(
            source, out, selection=spec, options=self.options(), model=self.model
        )
        scoring = report.get("scoring") or {}
        calls = hits = prompt = completion = exit_code = 0
        status = "complete"
        if scoring:  # the judges' run (DEITA, AlpaGasus) has its own manifest
            from evoforge.engine.runner import STOP_EXIT_CODES

            scored = json.loads((self.run_dir / "selected.scored.manifest.json").read_text("utf-8"))
            calls, hits, prompt, completion = _usage(scored.get("usage", {}))
            status = scored.get("status", status)
            if status != "complete":
                exit_code = STOP_EXIT_CODES.get(scored.get("stop_reason") or "", 3)
        self.calls += calls
        self.tokens += prompt + completion
        dropped = sum(report["dropped_by_reason"].values())
        message = f"{report['selected']} of {report['input']} selected"
        if scoring:
            message += f"; scored {scoring.get('scored')}"
        step = StepResult("select", out, status, report["selected"], dropped, calls, hits,
                          prompt, completion, message, exit_code)  # fmt: skip
        self.steps.append(step)
        return out

    def _write_step(
        self, name: str, filename: str, kept: list[dict], dropped: list[dict], settings: dict
    ) -> Path:
        """A step without LLM calls: output, rejects and manifest, each written whole."""
        from collections import Counter

        from evoforge.engine.runner import output_paths
        from evoforge.io.writers import open_writer

        paths = output_paths(self.run_dir / filename)
        for path, rows in ((paths["out"], kept), (paths["rejects"], dropped)):
            writer = open_writer(path, "jsonl")
            for row in rows:
                writer.write(row)
            writer.close()
        reasons = Counter(str(r["reason"]) for r in dropped)
        files = {"out": str(paths["out"]), "rejects": str(paths["rejects"])}
        manifest = {"command": name, "input": len(kept) + len(dropped), "kept": len(kept),
                    "dropped": len(dropped), "dropped_by_reason": dict(reasons.most_common()),
                    "settings": settings, "files": files}  # fmt: skip
        atomic_text(paths["manifest"], json.dumps(manifest, indent=2, default=str) + "\n")
        message = f"{len(kept)} kept, {len(dropped)} dropped"
        self.steps.append(StepResult(name, paths["out"], "complete", len(kept), len(dropped),
                                     message=message))  # fmt: skip
        return paths["out"]


class _BudgetSpent(Exception):
    """The recipe's budget is used up before a step could start."""


def _with_paths(options: Any, recipe: Recipe, run_dir: Path) -> Any:
    """Copy of rag / in2 options with file options read from the recipe's folder."""
    values = asdict(options)
    for key in ("general", "decontaminate"):
        if values.get(key):
            values[key] = str(recipe.resolve(values[key]))
    tokenizer = values.get("tokenizer")
    if tokenizer and tokenizer not in ("regex", "default"):
        values["tokenizer"] = str(recipe.resolve(tokenizer))
    if "graph" in values:
        values["graph"] = (
            str(recipe.resolve(values["graph"])) if values["graph"] else str(run_dir / "graph.json")
        )
    return type(options)(**values)


def _write_dataset(recipe: Recipe, last: Path, run_dir: Path) -> Path:
    """The final dataset: the last step's records, in ``outputs.format``."""
    from evoforge.io.writers import format_for, open_writer

    target = run_dir / recipe.outputs.name
    fmt = format_for(target, recipe.outputs.format)
    if fmt == "jsonl" and last.suffix == ".jsonl":
        shutil.copyfile(last, target)
        return target
    writer = open_writer(target, fmt)
    for record in load_jsonl(last):
        writer.write(record)
    writer.close()
    return target


def _export(recipe: Recipe, dataset: Path, run_dir: Path) -> list[tuple[str, list[Path]]]:
    """``outputs.export``: the dataset in each format (``evoforge export``), each in
    ``export-<format>/`` with its dataset card."""
    from evoforge.export import EXPORT_FORMATS, export

    written = []
    for to in recipe.outputs.export:
        out = run_dir / f"export-{to}" / f"{dataset.stem}{EXPORT_FORMATS[to].suffix}"
        written.append((to, export(dataset, to=to, out=out).files))
    return written


async def run_recipe_async(
    recipe: str | Path | Recipe,
    *,
    out: str | Path | None = None,
    llm: str | None = None,
    model: Any = None,
    quiet: bool | None = None,
    overwrite: bool | None = None,
) -> RecipeResult:
    """Run every step of ``recipe`` into its run folder; re-running resumes."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if llm is not None:
        recipe.llm = replace(recipe.llm, spec=llm)
    if quiet is not None:
        recipe.engine["quiet"] = quiet
    if overwrite is not None:
        recipe.engine["overwrite"] = overwrite
    run_dir = recipe.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    runner = _RecipeRun(recipe, run_dir, model)
    status = "complete"
    last: Path | None = None
    try:
        last = await runner.execute()
    except _BudgetSpent:
        status = "stopped"
    if runner._stopped():
        status = "stopped"
    dataset = _write_dataset(recipe, last, run_dir) if status == "complete" and last else None
    exports = _export(recipe, dataset, run_dir) if dataset is not None else []
    manifest = run_dir / "recipe.manifest.json"
    data = {
        "recipe": str(recipe.path),
        "status": status,
        "seed": recipe.seed,
        "llm": {**asdict(recipe.llm), "args": sorted(recipe.llm.args)},
        "steps": [{**asdict(step), "out": str(step.out)} for step in runner.steps],
        "dataset": str(dataset) if dataset else None,
        "exports": {to: [str(f) for f in files] for to, files in exports},
        "calls": runner.calls,
        "tokens": runner.tokens,
    }
    atomic_text(manifest, json.dumps(data, indent=2, default=str) + "\n")
    result = RecipeResult(
        recipe.path, run_dir, runner.steps, dataset, manifest, status, dict(exports)
    )
    if recipe.outputs.report and runner.steps:
        _write_report(result)
    return result


def _write_report(result: RecipeResult) -> None:
    """The run folder's report, done or stopped; a report that fails is noted, and
    the run's outputs stand."""
    from evoforge.report import write_report

    try:
        result.report = write_report(result.run_dir)["html"]
    except Exception as exc:  # the data is written; the report is a view of it
        result.report_error = f"{type(exc).__name__}: {exc}"


def run_recipe(
    recipe: str | Path | Recipe,
    *,
    out: str | Path | None = None,
    llm: str | None = None,
    model: Any = None,
    quiet: bool | None = None,
    overwrite: bool | None = None,
) -> RecipeResult:
    """Run a YAML recipe end to end (``evoforge run RECIPE``).

    Each step calls the API function of its command with an output in the run
    folder (``outputs.dir``, or ``out``); ``llm`` overrides the recipe's model
    spec and ``model`` passes a ChatModel or LangChain model instance.
    """
    return asyncio.run(
        run_recipe_async(recipe, out=out, llm=llm, model=model, quiet=quiet, overwrite=overwrite)
    )


__all__ = [
    "Recipe",
    "RecipeResult",
    "StepResult",
    "load_recipe",
    "run_recipe",
    "run_recipe_async",
]
