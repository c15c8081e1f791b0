"""Running a recipe: each step calls its command into one run folder.

A step is the command itself (``answer``, ``evolve``, ``rag``, ``in2``, ``validate``,
``dedup``, ``select``, the functions the CLI calls), so everything a command checks
a recipe checks, the rubric included, and the durability is the same: each LLM
step keeps its journal and manifest beside its output, and re-running the recipe
resumes (an identical re-run makes no LLM call). The budget spans all steps.
"""

from __future__ import annotations

import json
import shutil
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from evoforge.commands.answer import answer_async
from evoforge.commands.dedup import dedup
from evoforge.commands.evolve import evolve_async
from evoforge.commands.in2 import in2_async
from evoforge.commands.rag import rag_async
from evoforge.commands.select import select_async
from evoforge.commands.validate import validate_async
from evoforge.io.lock import RunLock
from evoforge.io.readers import load_jsonl
from evoforge.io.writers import atomic_text
from evoforge.options import EngineOptions, EvolveOptions, ValidateOptions
from evoforge.recipe.loader import load_recipe
from evoforge.recipe.model import Recipe


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
            settings = {kind: with_paths(recipe.generator, recipe, self.run_dir)}
            summary = await generate(
                [recipe.resolve(d) for d in source.docs or []], self.run_dir / f"{kind}.jsonl",
                options=self.options(), model=self.model, **settings,
            )  # fmt: skip
            current = self.done(kind, summary).out
            record_kind = kind
        elif kind == "grow":
            current = await self._grow()
        elif kind in ("orca2", "pam"):  # issue 16: training data for a method
            from evoforge.commands.orca2 import orca2_async
            from evoforge.commands.pam import pam_async

            settings = {"orca" if kind == "orca2" else "settings": recipe.generator}
            summary = await (orca2_async if kind == "orca2" else pam_async)(
                recipe.resolve(source.seeds or ""), self.run_dir / f"{kind}.jsonl",
                options=self.options(), field_map=source.field_map, model=self.model, **settings,
            )  # fmt: skip
            current = self.done(kind, summary).out
            record_kind = "chat" if kind == "orca2" else kind
        if self._stopped():
            return current  # type: ignore[return-value]
        if recipe.evolvers is not None:
            current = await self._evolve("evolvers", recipe.evolvers, current, record_kind)
            if self._stopped():
                return current
        assert current is not None
        if recipe.validators is not None:
            current = await self._validate(current)
        if recipe.dedup is not None:
            current = self._dedup(current)
        if recipe.selection is not None:
            current = await self._select(current)
        return current

    async def _grow(self) -> Path:
        """``evoforge grow``: seeds (self-instruct, magpie) or documents (backtranslate)."""
        from evoforge.commands.grow import grow_async

        recipe, source = self.recipe, self.recipe.source
        settings = recipe.generator
        material: Any = None
        if settings.method == "backtranslate":
            material = [recipe.resolve(d) for d in source.docs or []]
        elif source.seeds:
            material = recipe.resolve(source.seeds)
        if settings.chat_template:
            settings = replace(settings, chat_template=str(recipe.resolve(settings.chat_template)))
        summary = await grow_async(
            material, self.run_dir / "grow.jsonl", grow=settings, options=self.options(),
            model=self.model, field_map=source.field_map,
        )  # fmt: skip
        return self.done("grow", summary).out

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

    async def _validate(self, source: Path) -> Path:
        """``evoforge validate`` on the records so far; its judged checks (the rubric)
        call the recipe's model and count against its budget."""
        spec = self.recipe.validators
        assert spec is not None
        validation = ValidateOptions(
            kind=spec.kind, checks=",".join(spec.checks), min_len=spec.min_len,
            max_len=spec.max_len, unit=spec.unit, lima_length=spec.lima_length,
            rubric=spec.rubric,
        )  # fmt: skip
        summary = await validate_async(
            str(source), validation=validation, options=self.options(), model=self.model,
            collect=True,
        )  # fmt: skip
        assert summary.kept is not None and summary.dropped is not None
        calls, hits, prompt, completion = _usage(summary.usage)
        self.calls += calls
        self.tokens += prompt + completion
        settings = asdict(spec)
        if settings["rubric"] is None:  # the manifest of a recipe without one, as before
            del settings["rubric"]
        return self._write_step(
            "validate", "validated.jsonl", summary.kept, summary.dropped, settings,
            usage=(calls, hits, prompt, completion),
        )  # fmt: skip

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
        self,
        name: str,
        filename: str,
        kept: list[dict],
        dropped: list[dict],
        settings: dict,
        usage: tuple[int, int, int, int] = (0, 0, 0, 0),
    ) -> Path:
        """A step without LLM calls: output, rejects and manifest, each written whole."""
        from evoforge.io.outputs import write_outputs

        output = write_outputs(self.run_dir / filename, kept, dropped, fmt="jsonl")
        paths = output.paths
        files = {"out": str(paths["out"]), "rejects": str(paths["rejects"])}
        manifest = {"command": name, "input": len(kept) + len(dropped), "kept": len(kept),
                    "dropped": len(dropped),
                    "dropped_by_reason": output.counts()["rejected_by_reason"],
                    "settings": settings, "files": files,
                    "steps": output.step_counts(name)}  # fmt: skip
        output.write_manifest(manifest, mask=False, ascii_only=True)
        message = f"{len(kept)} kept, {len(dropped)} dropped"
        self.steps.append(StepResult(name, paths["out"], "complete", len(kept), len(dropped),
                                     *usage, message=message))  # fmt: skip
        return paths["out"]


class _BudgetSpent(Exception):
    """The recipe's budget is used up before a step could start."""


def with_paths(options: Any, recipe: Recipe, run_dir: Path) -> Any:
    """Copy of rag / in2 options with file options read from the recipe's folder."""
    values = asdict(options)
    for key in ("general", "decontaminate"):
        if isinstance(values.get(key), list):  # rag's benchmark files (issue 14)
            values[key] = [str(recipe.resolve(item)) for item in values[key]]
        elif values.get(key):
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
    wait: bool | None = None,
) -> RecipeResult:
    """Run every step of ``recipe`` into its run folder; re-running resumes. The run
    holds the folder's lock throughout (``wait``: wait for another run holding it)."""
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    if llm is not None:
        recipe.llm = replace(recipe.llm, spec=llm)
    for name, value in (("quiet", quiet), ("overwrite", overwrite), ("wait", wait)):
        if value is not None:
            recipe.engine[name] = value
    run_dir = recipe.run_dir(out)
    run_dir.mkdir(parents=True, exist_ok=True)
    with RunLock(run_dir, wait=bool(recipe.engine.get("wait"))):
        return await _run_in(recipe, run_dir, model)


async def _run_in(recipe: Recipe, run_dir: Path, model: Any) -> RecipeResult:
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
    wait: bool | None = None,
) -> RecipeResult:
    """Run a YAML recipe end to end (``evoforge run RECIPE``).

    Each step calls the API function of its command with an output in the run
    folder (``outputs.dir``, or ``out``); ``llm`` overrides the recipe's model
    spec and ``model`` passes a ChatModel or LangChain model instance.
    """
    from evoforge.blocking import run_blocking

    return run_blocking(
        run_recipe_async(
            recipe, out=out, llm=llm, model=model, quiet=quiet, overwrite=overwrite, wait=wait
        )
    )


__all__ = ["RecipeResult", "StepResult", "run_recipe", "run_recipe_async"]
