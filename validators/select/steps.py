"""Selectors as set steps: ``step.run(records) -> SetResult(selected, rejected)``.

A selector is a function ``(records, budget, *, seed=0, ...) -> (selected, dropped)``
(the plugin contract of ``docs/extending.md``). :class:`SelectorStep` makes one a set
step: called, it is that function; ``configure(budget=..., **options)`` binds its
budget and options (checked against its signature); ``run(records)`` selects with
them and returns the selected records in input order and a
:class:`~evoforge.steps.Rejection` for every other one, naming the step
(``selector.deita``; DEITA's ``too_similar`` also names the record it ``lost_to``).

The ``selector`` registry holds :data:`DEITA`, :data:`ALPAGASUS`, :data:`KCENTER` and
:data:`RANDOM`; :func:`selector_step` finds any registered selector by name (a
plugin's function is wrapped) and binds its options.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
from collections.abc import Callable, Iterable
from typing import Any

from evoforge.errors import ConfigError
from evoforge.registry import registry
from evoforge.steps import SetResult
from evoforge.validators.select.selectors import (
    select_alpagasus,
    select_deita,
    select_kcenter,
    select_random,
)

__all__ = ["ALPAGASUS", "DEITA", "KCENTER", "RANDOM", "SelectorStep", "selector_step"]


class SelectorStep:
    """A selector function as a set step (see the module's doc)."""

    def __init__(self, name: str, function: Callable[..., Any], **params: Any) -> None:
        self.name = name
        self.function = function
        self.params = params
        # Its name, docs and signature are the function's (inspect.signature follows
        # __wrapped__).
        functools.update_wrapper(self, function)

    def __repr__(self) -> str:
        return f"SelectorStep({self.name!r}, {self.function.__name__}, **{self.params!r})"

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        """The selector function itself: ``(selected, dropped)``."""
        return self.function(*args, **kwargs)

    def configure(self, budget: int | None = None, **options: Any) -> SelectorStep:
        """This selector bound to ``budget`` and ``options``: a ``ConfigError`` when it
        needs a budget and has none, or does not take an option."""
        parameters = inspect.signature(self.function).parameters
        needs_budget = "budget" in parameters and parameters["budget"].default is inspect._empty
        if budget is None and needs_budget:
            raise ConfigError(f"selection method {self.name!r} needs a budget")
        known = set(parameters) - {"records", "budget"}
        unknown = sorted(set(options) - known)
        if unknown:
            raise ConfigError(
                f"selection method {self.name!r}: unknown option(s) {', '.join(unknown)}; "
                f"known: {', '.join(sorted(known))}"
            )
        return SelectorStep(self.name, self.function, budget=budget, **options)

    def run(self, records: Iterable[Any]) -> SetResult:
        selected, dropped = self.function(list(records), **self.params)
        step = f"selector.{self.name}"
        rejected = [
            r if isinstance(r, dict) or r.step else dataclasses.replace(r, step=step)
            for r in dropped
        ]
        return SetResult(list(selected), rejected)


DEITA = SelectorStep("deita", select_deita)
ALPAGASUS = SelectorStep("alpagasus", select_alpagasus)
KCENTER = SelectorStep("kcenter", select_kcenter)
RANDOM = SelectorStep("random", select_random)


def selector_step(method: str, budget: int | None = None, **options: Any) -> SelectorStep:
    """The selector registered as ``method`` (built-in or a plugin's), bound to
    ``budget`` and ``options``; an unknown name is a ``ConfigError`` with a hint."""
    selectors = registry("selector")
    if method not in selectors:
        methods = selectors.names()
        hint = difflib.get_close_matches(method, methods, n=1)
        suggestion = f" Did you mean {hint[0]!r}?" if hint else ""
        raise ConfigError(  # the words of select()'s error
            f"unknown selection method {method!r}; use one of {', '.join(methods)}.{suggestion}"
        )
    found = selectors.lookup(method)
    step = found if isinstance(found, SelectorStep) else SelectorStep(method, found)
    return step.configure(budget, **options)
