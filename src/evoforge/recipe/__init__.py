"""YAML recipes: one file describes a whole pipeline, ``evoforge run`` executes it.

A recipe names a source (seed records or document folders), a generator
(``answer``, ``evolve``, ``rag`` or ``in2`` with that command's options), an
optional further evolution step (``evolvers``), per-record ``validators`` (the
``evoforge validate`` checks, the LLM-judged rubric included), ``dedup``,
``selection``, the ``llm`` and ``embedder``, engine settings, a ``budget`` and the
run ``seed``. Every step is the command the CLI runs, into one run folder.

- :mod:`evoforge.recipe.model`: the sections, with the commands' defaults
  (:mod:`evoforge.options`);
- :mod:`evoforge.recipe.loader`: strict loading (:func:`load_recipe`);
- :mod:`evoforge.recipe.runner`: the steps in order (:func:`run_recipe`);
- :mod:`evoforge.recipe.plan`: the dry run, the runner on a counting model
  (:func:`plan_recipe`).
"""

from evoforge.recipe.loader import load_recipe
from evoforge.recipe.model import (
    ENGINE_ELSEWHERE,
    GENERATOR_OPTIONS,
    GENERATORS,
    NOT_IN_RECIPE,
    SECTIONS,
    STEP_FILES,
    TOP_KEYS,
    AnswerSpec,
    BudgetSpec,
    DedupSpec,
    LlmSpec,
    OutputsSpec,
    Recipe,
    SourceSpec,
    ValidatorsSpec,
)
from evoforge.recipe.plan import RecipePlan, StepPlan, plan_recipe
from evoforge.recipe.runner import RecipeResult, StepResult, run_recipe, run_recipe_async

# The tables under their names before the split into a package.
_ENGINE_ELSEWHERE = ENGINE_ELSEWHERE
_GENERATOR_OPTIONS = GENERATOR_OPTIONS
_NOT_IN_RECIPE = NOT_IN_RECIPE
_SECTIONS = SECTIONS
_TOP_KEYS = TOP_KEYS

__all__ = [
    "GENERATORS",
    "STEP_FILES",
    "AnswerSpec",
    "BudgetSpec",
    "DedupSpec",
    "LlmSpec",
    "OutputsSpec",
    "Recipe",
    "RecipePlan",
    "RecipeResult",
    "SourceSpec",
    "StepPlan",
    "StepResult",
    "ValidatorsSpec",
    "load_recipe",
    "plan_recipe",
    "run_recipe",
    "run_recipe_async",
]
