"""Dry runs by simulation: run the real command on a model that answers at once.

``simulate(evoforge.answer, "seeds.jsonl", "out/answers.jsonl", options=...)`` calls
the command itself with ``model=CountingChatModel()`` (:mod:`evoforge.llm.counting`),
the response cache off, no progress bar, and its output in a temporary folder that
is deleted afterwards, then reports the calls and tokens per operator from the
run's own accounting (``RunSummary.usage``, or the manifests the command wrote).
The plan is what the composition does, not a second description of it, so the two
cannot drift (issue 12, item 8; the hand-written planner is gone).

What the simulation cannot know is what a real model will say: every reply is a
minimal valid one, so the plan is exact for calls whose prompts depend only on the
input (``answer``, a first round of ``evolve``, the first pass of ``rag`` and
``in2``), and counts calls exactly where no record is rejected. Prompt tokens that
quote an earlier reply are counted over the counting model's short replies, and
completion tokens are those replies' lengths, so both are lower bounds there; a
dry run prints that (see :meth:`DryRunPlan.render`).

The plan is priced online and at the batch price (issue 19): at ``price`` when given
(``run --price IN,OUT``), else at the price of the model ``--llm`` names, from
``--prices FILE`` or ``models.yaml`` (:mod:`evoforge.llm.prices`); a model with no
price says so instead of guessing one, and the local model costs 0.
"""

from __future__ import annotations

import asyncio
import inspect
import json
import tempfile
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field, is_dataclass, replace
from pathlib import Path
from typing import Any

from evoforge.errors import ConfigError
from evoforge.llm.counting import CountingChatModel
from evoforge.llm.prices import Pricing, format_usd, parse_override, pricing
from evoforge.options import DEFAULT_LLM, EngineOptions


@dataclass
class OperatorPlan:
    """What one operator (``answer``, ``evolve_deepen``, ``evolve_judge``, ...) sends."""

    calls: int = 0
    prompt_tokens: int = 0
    completion_tokens: int = 0

    def cost(self, price: tuple[float, float] | None) -> float | None:
        if price is None:
            return None
        return (self.prompt_tokens * price[0] + self.completion_tokens * price[1]) / 1e6


@dataclass
class DryRunPlan:
    """A command's simulated run: usage per operator, records kept and rejected, and
    its cost online and at the batch price: at ``price`` ((input, output) dollars per
    1M tokens) when given, else at ``pricing`` (the model's price, or why there is none)."""

    command: str
    operators: dict[str, OperatorPlan] = field(default_factory=dict)
    accepted: int = 0
    rejected: int = 0
    price: tuple[float, float] | None = None
    pricing: Pricing | None = None
    batch: bool = False  # --batch: the run pays the batch column
    notes: list[str] = field(default_factory=list)  # what the simulation counted, not ran

    def __post_init__(self) -> None:
        if self.price is not None:
            self.pricing = Pricing(None, parse_override(self.price), "--price (given)")

    @property
    def calls(self) -> int:
        return sum(op.calls for op in self.operators.values())

    @property
    def prompt_tokens(self) -> int:
        return sum(op.prompt_tokens for op in self.operators.values())

    @property
    def completion_tokens(self) -> int:
        return sum(op.completion_tokens for op in self.operators.values())

    def _usd(self, op: OperatorPlan) -> float | None:
        if self.pricing is None:
            return None
        return self.pricing.usd(op.prompt_tokens, op.completion_tokens)

    @property
    def cost(self) -> float | None:
        """USD online; None without a price."""
        return self._usd(OperatorPlan(self.calls, self.prompt_tokens, self.completion_tokens))

    @property
    def cost_batch(self) -> float | None:
        """USD at the batch price; None without a price or a batch price."""
        return None if self.pricing is None else self.pricing.batch_usd(self.cost)

    def to_json(self) -> dict[str, Any]:
        return {
            "command": self.command,
            "operators": {
                name: {
                    "calls": op.calls,
                    "prompt_tokens": op.prompt_tokens,
                    "completion_tokens": op.completion_tokens,
                }
                for name, op in self.operators.items()
            },  # fmt: skip
            "accepted": self.accepted,
            "rejected": self.rejected,
            "calls": self.calls,
            "prompt_tokens": self.prompt_tokens,
            "completion_tokens": self.completion_tokens,
            "cost": self.cost,
            "cost_batch": self.cost_batch,
            "price_source": self.pricing.source if self.pricing is not None else None,
        } | ({"notes": list(self.notes)} if self.notes else {})

    def render(self) -> str:
        """A table for a terminal: one row per operator and a total, priced online and
        at the batch price, and a line saying where the price came from."""
        rows = [("operator", "LLM calls", "prompt tok", "completion tok", "USD online",
                 "USD batch")]  # fmt: skip
        for name, op in self.operators.items():
            rows.append((name, *_cells(op.calls, op.prompt_tokens, op.completion_tokens,
                                       *self._costs(op))))  # fmt: skip
        total = OperatorPlan(self.calls, self.prompt_tokens, self.completion_tokens)
        rows.append(("total", *_cells(total.calls, total.prompt_tokens,
                                      total.completion_tokens, self.cost,
                                      self.cost_batch)))  # fmt: skip
        head = (f"dry run of {self.command}: {self.accepted} records kept, {self.rejected} "
                "rejected on a counting model; no model was called")  # fmt: skip
        priced = [f"priced: {self.pricing.source}"] if self.pricing is not None else []
        if self.batch and priced:
            priced.append("--batch: this run pays the USD batch column")
        return "\n".join([head, *table(rows), *priced, *self.notes, SIMULATION_NOTE])

    def _costs(self, op: OperatorPlan) -> tuple[float | None, float | None]:
        online = self._usd(op)
        return online, (None if self.pricing is None else self.pricing.batch_usd(online))


SIMULATION_NOTE = (
    "calls and prompt tokens come from running the command on a counting model that "
    "answers minimal valid replies (tokens: words, as the fake server counts them); "
    "where a prompt quotes an earlier reply, or a real reply is rejected and retried, "
    "a real run sends more"
)


def _cells(calls: int, prompt: int, completion: int, *costs: float | None) -> tuple[str, ...]:
    shown = tuple("" if cost is None else format_usd(cost) for cost in costs)
    return (str(calls), f"{prompt:,}", f"{completion:,}", *shown)


def plan_pricing(
    options: EngineOptions | None, price: tuple[float, float] | None, model: Any = None
) -> Pricing:
    """What a dry run is priced at: ``price`` (``--price``), else the price of the model
    given (``model=``) or named by ``--llm``, from ``--prices`` or ``models.yaml``."""
    from evoforge.engine.context_window import model_name_of_spec

    options = options or EngineOptions()
    identity = getattr(model, "identity", None)
    if isinstance(identity, dict) and identity.get("backend") != "counting":
        backend, name = str(identity.get("backend")), identity.get("model")
    else:
        spec = options.llm or DEFAULT_LLM
        backend, name = spec.partition(":")[0].strip(), model_name_of_spec(spec) or None
    return pricing(backend, name, prices_file=options.prices, override=price)


def table(rows: list[tuple[str, ...]]) -> list[str]:
    """Rows as aligned lines: the first column left, the rest right, rules around the
    body and above the last (total) row."""
    widths = [max(len(row[i]) for row in rows) for i in range(len(rows[0]))]
    lines = [
        "  ".join(
            cell.ljust(w) if i == 0 else cell.rjust(w)
            for i, (cell, w) in enumerate(zip(row, widths, strict=True))
        )
        for row in rows
    ]
    lines.insert(1, "-" * len(lines[0]))
    lines.insert(len(lines) - 1, "-" * len(lines[0]))
    return lines


def parse_price(text: str) -> tuple[float, float]:
    """``"0.15,0.60"`` -> (input, output) per 1M tokens; one number prices both."""
    try:
        values = [float(part) for part in text.split(",")]
    except ValueError:
        values = []  # refused below, with the other malformed prices
    if len(values) not in (1, 2) or any(v < 0 for v in values):
        raise ConfigError(f"--price {text!r}: give IN_PER_1M[,OUT_PER_1M], e.g. 0.15,0.60")
    return (values[0], values[-1])


def dry_run_options(options: EngineOptions | None) -> EngineOptions:
    """The engine settings of a simulation: the cache off (a counting reply must never be
    stored or a real one replayed), no progress bar, a fresh run (nothing to resume), and
    no Batch API (the counting model answers at once; the plan prices the batch)."""
    return replace(options or EngineOptions(), cache=False, quiet=True, overwrite=True, batch=False)


def operators(usage: dict[str, dict[str, int]]) -> dict[str, OperatorPlan]:
    """``RunSummary.usage`` (op -> OpStats as a dict) as operator plans."""
    return {
        op: OperatorPlan(stats["calls"], stats["prompt_tokens"], stats["completion_tokens"])
        for op, stats in sorted(usage.items())
    }


def merge(plans: Iterable[dict[str, OperatorPlan]]) -> dict[str, OperatorPlan]:
    total: dict[str, OperatorPlan] = {}
    for plan in plans:
        for op, one in plan.items():
            into = total.setdefault(op, OperatorPlan())
            into.calls += one.calls
            into.prompt_tokens += one.prompt_tokens
            into.completion_tokens += one.completion_tokens
    return total


async def simulate_async(
    command_fn: Callable[..., Any],
    *args: Any,
    price: tuple[float, float] | None = None,
    **kwargs: Any,
) -> DryRunPlan:
    """:func:`simulate` inside a running event loop (``command_fn`` sync or async; a
    sync one runs in a worker thread, as it starts its own loop)."""
    signature = inspect.signature(command_fn)
    bound = signature.bind_partial(*args, **kwargs)
    parameters = signature.parameters
    if "model" not in parameters:
        raise ConfigError(f"{command_fn.__name__} calls no model: there is nothing to dry-run")
    name = command_fn.__name__.removesuffix("_async")
    with tempfile.TemporaryDirectory(prefix="evoforge-dry-run-") as folder:
        tmp = Path(folder)
        arguments = bound.arguments
        priced = plan_pricing(arguments.get("options"), price, arguments.get("model"))
        batch = bool(getattr(arguments.get("options"), "batch", False))
        model = arguments["model"] = CountingChatModel()
        if "options" in parameters:
            arguments["options"] = dry_run_options(arguments.get("options"))
        if "out" in parameters:
            out = arguments.get("out")
            arguments["out"] = tmp / (Path(out).name if out else f"{name}.jsonl")
        for key, value in arguments.items():
            arguments[key] = unsaved_graph_in(value, tmp)
        if inspect.iscoroutinefunction(command_fn):
            result = await command_fn(*bound.args, **bound.kwargs)
        else:
            result = await asyncio.to_thread(command_fn, *bound.args, **bound.kwargs)
        plan = _plan(name, result, tmp, model, price)
        plan.pricing = priced
        plan.batch = batch
        return plan


def unsaved_graph_in(settings: Any, folder: Path) -> Any:
    """``settings`` with a knowledge graph that does not exist yet (``rag``'s ``graph``,
    saved when built) saved in ``folder`` instead: a dry run writes nothing of the user's.
    An existing graph is read as the run reads it."""
    graph = getattr(settings, "graph", None)
    if not is_dataclass(settings) or not isinstance(graph, str) or Path(graph).exists():
        return settings
    return replace(settings, graph=str(folder / Path(graph).name))


def simulate(
    command_fn: Callable[..., Any],
    *args: Any,
    price: tuple[float, float] | None = None,
    **kwargs: Any,
) -> DryRunPlan:
    """Run ``command_fn(*args, **kwargs)`` (``evoforge.answer``, ``evolve``, ``rag``,
    ``in2``, ``select``, ``validate`` or their ``_async`` forms) on a counting model, in a
    temporary folder, and return its calls and tokens per operator (see the module
    docstring). ``price`` is (input, output) dollars per 1M tokens."""
    from evoforge.blocking import run_blocking

    return run_blocking(simulate_async(command_fn, *args, price=price, **kwargs))


def _plan(
    name: str,
    result: Any,
    folder: Path,
    model: CountingChatModel,
    price: tuple[float, float] | None,
) -> DryRunPlan:
    """The plan from what the command returned: a ``RunSummary`` carries its usage;
    ``select`` wrote it in the manifest of its scoring run; a command that keeps no
    usage per operator (``validate``'s judge) is one operator, as the model counted it."""
    plan = DryRunPlan(name, price=price)
    usage = getattr(result, "usage", None)
    if isinstance(usage, dict):
        plan.operators = operators(usage)
    else:
        plan.operators = merge(
            operators(json.loads(path.read_text("utf-8")).get("usage") or {})
            for path in sorted(folder.glob("*.manifest.json"))
        )
    if sum(op.calls for op in plan.operators.values()) != model.calls:
        plan.operators = {name: OperatorPlan(model.calls, model.usage.prompt_tokens,
                                             model.usage.completion_tokens)}  # fmt: skip
    if isinstance(result, dict):  # select's report
        plan.accepted = int(result.get("selected", 0))
        plan.rejected = int(sum((result.get("dropped_by_reason") or {}).values()))
        plan.notes += [result["plan_note"]] if result.get("plan_note") else []
    elif hasattr(result, "invalid") and hasattr(result, "total"):  # validate's summary
        plan.accepted, plan.rejected = result.total - result.invalid, result.invalid
    else:  # a RunSummary
        plan.accepted, plan.rejected = result.accepted, result.rejected
    return plan


__all__ = ["DryRunPlan", "OperatorPlan", "parse_price", "simulate", "simulate_async"]
