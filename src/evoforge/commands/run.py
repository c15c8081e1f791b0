"""``run``: a whole pipeline from a YAML recipe, or its dry run.

The recipe's steps are the other commands (:mod:`evoforge.recipe.runner`); this
module is what ``evoforge run`` adds on top: the recipe read once, the ``--llm``
override, and the choice between running it and planning it (``--dry-run``: the
same runner on a counting model, :mod:`evoforge.recipe.plan`).
"""

from __future__ import annotations

import os
from dataclasses import replace
from pathlib import Path
from typing import Any

from evoforge.recipe import Recipe, RecipePlan, RecipeResult, load_recipe, plan_recipe, run_recipe


def load(recipe: str | os.PathLike[str] | Recipe, *, llm: str | None = None) -> Recipe:
    """The recipe, checked, with its model spec replaced by ``llm`` when given."""
    loaded = recipe if isinstance(recipe, Recipe) else load_recipe(Path(recipe))
    if llm is not None:
        loaded.llm = replace(loaded.llm, spec=llm)
    return loaded


def run(
    recipe: str | os.PathLike[str] | Recipe,
    *,
    out: str | os.PathLike[str] | None = None,
    llm: str | None = None,
    model: Any = None,
    quiet: bool | None = None,
    overwrite: bool | None = None,
    wait: bool | None = None,
) -> RecipeResult:
    """Run every step of ``recipe`` into its run folder (``out`` overrides it);
    re-running resumes. ``model`` passes a ChatModel or LangChain model instance;
    ``wait`` waits for another run holding the folder (see ``evoforge.io.lock``)."""
    return run_recipe(
        load(recipe, llm=llm), out=out, model=model, quiet=quiet, overwrite=overwrite, wait=wait
    )


def plan(
    recipe: str | os.PathLike[str] | Recipe,
    *,
    out: str | os.PathLike[str] | None = None,
    llm: str | None = None,
    price: tuple[float, float] | None = None,
) -> RecipePlan:
    """What :func:`run` would send, per step, priced at ``price`` ((input, output)
    dollars per 1M tokens): the recipe run on a counting model; no model is called."""
    return plan_recipe(load(recipe, llm=llm), out=out, price=price)


__all__ = ["load", "plan", "run"]
