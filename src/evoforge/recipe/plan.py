"""The dry run of a recipe: the recipe itself, run on a counting model.

``plan_recipe`` (``evoforge run --dry-run``) runs the real recipe runner, every
step the command the CLI calls, on :class:`~evoforge.llm.counting.CountingChatModel`
in a temporary folder, and reports per step the LLM calls, prompt tokens and
completion tokens the run sent, priced when given a price per 1M tokens. There is
no second description of how an operator fills its prompts, so plan and run
cannot drift (issue 12, item 8). See :mod:`evoforge.dry_run` for what a counting
model's minimal replies can and cannot tell.
"""

from __future__ import annotations

import asyncio
import copy
import tempfile
from collections import Counter
from dataclasses import asdict, dataclass, replace
from pathlib import Path
from typing import Any

from evoforge.dry_run import (
    SIMULATION_NOTE,
    dry_run_options,
    parse_price,
    plan_pricing,
    table,
    unsaved_graph_in,
)
from evoforge.io.readers import load_jsonl
from evoforge.llm.counting import CountingChatModel
from evoforge.llm.prices import Pricing, format_usd
from evoforge.options import EngineOptions
from evoforge.recipe.loader import load_recipe
from evoforge.recipe.model import Recipe
from evoforge.recipe.runner import run_recipe_async


@dataclass
class StepPlan:
    """What one step sent on the counting model. ``max_calls`` is kept for callers of
    the hand-written planner's bound; the simulation's counts need none (None)."""

    name: str
    calls: int
    prompt_tokens: int
    completion_tokens: int
    records_in: int
    records_out: int
    max_calls: int | None = None
    note: str = ""

    def cost(self, price: tuple[float, float] | None) -> float | None:
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6


@dataclass
class RecipePlan:
    recipe: Path
    run_dir: Path
    steps: list[StepPlan]
    price: tuple[float, float] | None = None
    pricing: Pricing | None = None  # issue 19: the price used (evoforge.dry_run.plan_pricing)
    batch: bool = False  # the recipe's engine.batch: the run pays the batch column

    @property
    def calls(self) -> int:
        return sum(step.calls for step in self.steps)

    @property
    def prompt_tokens(self) -> int:
        return sum(step.prompt_tokens for step in self.steps)

    @property
    def completion_tokens(self) -> int:
        return sum(step.completion_tokens for step in self.steps)

    @property
    def cost(self) -> float | None:
        """USD online (None without a price)."""
        return self._usd(self.prompt_tokens, self.completion_tokens)

    @property
    def cost_batch(self) -> float | None:
        return None if self.pricing is None else self.pricing.batch_usd(self.cost)

    def _usd(self, prompt: int, completion: int) -> float | None:
        if self.pricing is None:
            return (
                None
                if self.price is None
                else (prompt * self.price[0] + completion * self.price[1]) / 1e6
            )
        return self.pricing.usd(prompt, completion)

    def _costs(self, prompt: int, completion: int) -> list[str]:
        online = self._usd(prompt, completion)
        batch = None if self.pricing is None else self.pricing.batch_usd(online)
        return ["" if usd is None else format_usd(usd) for usd in (online, batch)]

    def to_json(self) -> dict[str, Any]:
        return {
            "recipe": str(self.recipe),
            "run_dir": str(self.run_dir),
            "steps": [asdict(step) for step in self.steps],
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "cost_batch": self.cost_batch,
            "price_source": self.pricing.source if self.pricing is not None else None,
        }

    def render(self) -> str:
        """A table for a terminal: per step and in total, USD online and at the batch
        price, and where the price came from."""
        rows = [("step", "records in->out", "LLM calls", "prompt tok", "completion tok",
                 "USD online", "USD batch")]  # fmt: skip
        for step in self.steps:
            rows.append((step.name, f"{step.records_in} -> {step.records_out}", str(step.calls),
                         f"{step.prompt_tokens:,}", f"{step.completion_tokens:,}",
                         *self._costs(step.prompt_tokens, step.completion_tokens)))  # fmt: skip
        rows.append(("total", "", str(self.calls), f"{self.prompt_tokens:,}",
                     f"{self.completion_tokens:,}",
                     *self._costs(self.prompt_tokens, self.completion_tokens)))  # fmt: skip
        notes = [f"  {step.name}: {step.note}" for step in self.steps if step.note]
        if self.pricing is not None:
            notes.append(f"priced: {self.pricing.source}")
            if self.batch:
                notes.append("engine.batch: this run pays the USD batch column")
        head = f"plan for {self.recipe} (run folder {self.run_dir}); no model was called"
        return "\n".join([head, *table(rows), *notes, SIMULATION_NOTE])


def simulation_of(recipe: Recipe) -> Recipe:
    """A copy of ``recipe`` for the simulation: the dry-run engine settings (cache off,
    quiet, a fresh run), and neither exports nor a report (they call no model)."""
    copied = copy.deepcopy(recipe)
    settings = dry_run_options(EngineOptions(**copied.engine))
    copied.engine.update(cache=settings.cache, quiet=settings.quiet, overwrite=settings.overwrite)
    copied.outputs = replace(copied.outputs, export=[], report=False)
    return copied


def plan_recipe(
    recipe: str | Path | Recipe,
    *,
    out: str | Path | None = None,
    price: tuple[float, float] | None = None,
) -> RecipePlan:
    """What ``run_recipe`` will send, by running it on a counting model (``--dry-run``).

    Per step: LLM calls, prompt tokens and completion tokens, as the step's own
    accounting reports them, and the records in and out on the counting model. The
    calls are the run's where no record is rejected (every reply is a minimal valid
    one, so a real model's rejected replies and their retries or replacement passes
    are not foreseen); prompt tokens are exact where prompts quote only the input
    (``answer``, a first Evol-Instruct round), and completion tokens count the
    counting model's short replies, a lower bound. ``price`` is (input, output)
    dollars per 1M tokens; without it, the plan is priced at the recipe's model's
    price (``engine.prices`` or ``models.yaml``), online and at the batch price.
    """
    recipe = recipe if isinstance(recipe, Recipe) else load_recipe(recipe)
    steps = []
    with tempfile.TemporaryDirectory(prefix="evoforge-dry-run-") as folder:
        copied = simulation_of(recipe)
        if copied.generator is not None and getattr(copied.generator, "graph", None):
            graph = str(recipe.resolve(copied.generator.graph))
            copied.generator = unsaved_graph_in(
                replace(copied.generator, graph=graph), Path(folder)
            )
        simulation = run_recipe_async(copied, out=folder, model=CountingChatModel())
        result = asyncio.run(simulation)
        records = None
        for step in result.steps:
            records_in = step.accepted + step.rejected if records is None else records
            note = step.message if step.status == "complete" else f"stopped: {step.message}"
            reasons = rejected_by_reason(step.out)
            if reasons:
                note += "; rejects: " + ", ".join(
                    f"{reason} {n}" for reason, n in reasons.most_common()
                )
            steps.append(StepPlan(step.name, step.calls, step.prompt_tokens,
                                  step.completion_tokens, records_in, step.accepted,
                                  note=note))  # fmt: skip
            records = step.accepted
    engine = EngineOptions(llm=recipe.llm.spec, prices=recipe.engine.get("prices"))
    return RecipePlan(recipe.path, recipe.run_dir(out), steps, price,
                      pricing=plan_pricing(engine, price),
                      batch=bool(recipe.engine.get("batch")))  # fmt: skip


def rejected_by_reason(out: Path) -> Counter[str]:
    """The reasons in a step's rejects, its scoring run's included (``select``): what a
    plan shows so that a step which would reject everything says why."""
    stem = out.name[: -len(out.suffix)] if out.suffix else out.name
    reasons: Counter[str] = Counter()
    for name in (f"{stem}.rejects.jsonl", f"{stem}.scored.rejects.jsonl"):
        path = out.with_name(name)
        if path.exists():
            reasons.update(str(row.get("reason")) for row in load_jsonl(path))
    return reasons


__all__ = ["RecipePlan", "StepPlan", "parse_price", "plan_recipe"]
