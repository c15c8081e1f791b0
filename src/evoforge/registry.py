"""One registry of steps per kind, filled by evoforge and by plugins.

Kinds: ``generator``, ``evolver``, ``check``, ``critic``, ``scorer``, ``selector``,
``dedup``. evoforge lists its own steps below as lazy ``"module:attr"`` strings
(imported on first lookup, so this module imports none of them). Other packages
add steps through the entry-point group ``evoforge.steps``; an entry's name is
``KIND.NAME``, its value the object, e.g. in ``pyproject.toml``::

    [project.entry-points."evoforge.steps"]
    "evolver.shorten" = "mypkg.ops:SHORTEN"

A plugin that fails to import gives one warning naming its distribution, and its
steps are left out; on a name clash the built-in step wins (with a warning). In
code, ``register(kind, name, target)`` adds a step for the running process.
What an entry is depends on its kind; see ``docs/extending.md``.
"""

from __future__ import annotations

import importlib
import warnings
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from evoforge.errors import ConfigError, did_you_mean

GROUP = "evoforge.steps"
KINDS = ("generator", "evolver", "check", "critic", "scorer", "selector", "dedup")

_EVOL = "evoforge.evolvers.evol_instruct"
_QUALITY = "evoforge.evolvers.evol_quality"
_REWRITES = "evoforge.evolvers.ragas_rewrites"
_CHECKS = "evoforge.validators.checks"
_SCREENS = "evoforge.validators.critic_checks"
_CRITICS = "evoforge.validators.critics"
_SELECT = "evoforge.validators.select"

BUILTINS: dict[str, dict[str, str]] = {
    "generator": {
        "answer": "evoforge.generators.instructions:AnswerInstructions",
        "rag": "evoforge.generators.rag:RagSampleTask",
        "in2": "evoforge.generators.in2:In2Task",
        "orca2": "evoforge.generators.orca2:Orca2Task",
        "pam": "evoforge.generators.pam:PamTask",
        # grow (issue 18): each a record step run in exact-N passes by commands/grow.py
        "self_instruct": "evoforge.generators.self_instruct:SelfInstructTask",
        "backtranslate": "evoforge.generators.backtranslate:BacktranslateTask",
        "magpie": "evoforge.generators.magpie:MagpieTask",
    },
    # Evolution ops, each run by its family's evolver (EvolInstruct, EvolQuality,
    # QuestionRewrite). Ragas' rewrites carry their prompt's prefix: Evol-Instruct has a
    # "reasoning" op too; in --mix they keep their short names.
    "evolver": {
        **{
            op: f"{_EVOL}:{op.upper()}"
            for op in (
                "constraints",
                "deepen",
                "concretize",
                "reasoning",
                "complicate_input",
                "breadth",
            )
        },  # fmt: skip
        **{
            op: f"{_QUALITY}:{op.upper()}"
            for op in ("helpfulness", "relevance", "depth", "creativity", "details")
        },  # fmt: skip
        **{
            f"rewrite_{op}": f"{_REWRITES}:{op.upper()}"
            for op in ("reasoning", "multi_context", "conditional", "conversational", "compress")
        },  # fmt: skip
    },
    "check": {
        **{
            name: f"{_CHECKS}:CHECK_STEPS.{name}"
            for name in (
                "schema",
                "length",
                "refusal",
                "empty",
                "leak",
                "language",
                "lima",
                "context_reference",
            )
        },  # fmt: skip
        "evol_instruct": f"{_EVOL}:ELIMINATION",
        "strategy_leak": "evoforge.generators.orca2:STRATEGY_LEAK",
        "answer_not_instruction": "evoforge.validators.heuristics:ANSWER_NOT_INSTRUCTION",
        "meta_comment": "evoforge.validators.heuristics:META_COMMENT",
        "evol_quality": f"{_QUALITY}:ELIMINATION",
        "rewrite": f"{_REWRITES}:ELIMINATION",
        **{
            name: f"{_SCREENS}:{name.upper()}"
            for name in (
                "self_contained",
                "well_formed",
                "grounded_overlap",
                "has_context",
                "information_gain",
            )
        },  # fmt: skip
    },
    "critic": {
        "self_contained": f"{_CRITICS}:SelfContained",
        "well_formed": f"{_CRITICS}:WellFormed",
        "grounded": f"{_CRITICS}:Grounded",
        "answerable": f"{_CRITICS}:Answerable",
        "information_gain": f"{_CRITICS}:InformationGain",
        "rubric": f"{_CRITICS}:RubricCritic",
        "panel": f"{_CRITICS}:CriticPanel",
    },
    "scorer": {
        "deita": f"{_SELECT}:DeitaScorer",
        "alpagasus": f"{_SELECT}:AlpagasusRater",
        # Model-signal scorers (issue 17): batched over a LossModel, cached per record.
        "ifd": f"{_SELECT}.ifd:IfdScorer",
        "mining": f"{_SELECT}.mining:MiningScorer",
        "memorisation": f"{_SELECT}.memorisation:MemorisationScorer",
    },
    # Set steps wrapping the selector functions (validators/select/steps.py).
    "selector": {
        **{
            name: f"{_SELECT}.steps:{name.upper()}"
            for name in ("deita", "alpagasus", "kcenter", "random")
        },  # fmt: skip
        **{
            name: f"{_SELECT}.signal_steps:{name.upper()}"
            for name in ("ifd", "mining", "memorisation", "lima", "balanced")
        },  # fmt: skip
    },
    # Set steps (validators/dedup/steps.py); built-ins named together share one graph.
    "dedup": {
        method: f"evoforge.validators.dedup.steps:{method.upper()}"
        for method in ("exact", "minhash", "semantic")
    },
}


def resolve(target: str) -> Any:
    """``"package.module:attr.sub"`` -> that object (``.sub`` may index a mapping)."""
    module_name, _, path = target.partition(":")
    value: Any = importlib.import_module(module_name)
    for part in path.split(".") if path else ():
        value = value[part] if isinstance(value, dict) else getattr(value, part)
    return value


class Registry:
    """The steps of one kind, by name: built-ins first, then plugins, then ``register``."""

    def __init__(self, kind: str) -> None:
        self.kind = kind
        self._targets: dict[str, Any] = dict(BUILTINS.get(kind, {}))
        self._resolved: dict[str, Any] = {}
        self.origins: dict[str, str] = {name: "evoforge" for name in self._targets}

    def add(self, name: str, target: Any, origin: str = "register()") -> None:
        """Add ``name``; a built-in of that name is kept (built-ins win a clash)."""
        if self.origins.get(name) == "evoforge":
            warnings.warn(
                f"evoforge: {origin} registers {self.kind} {name!r}, which evoforge already "
                "has; the built-in one is used",
                stacklevel=3,
            )
            return
        self._targets[name] = target
        self._resolved.pop(name, None)
        self.origins[name] = origin

    def remove(self, name: str) -> None:
        """Drop a step that was added (built-ins stay)."""
        if self.origins.get(name) not in (None, "evoforge"):
            del self._targets[name], self.origins[name]
            self._resolved.pop(name, None)

    def names(self) -> list[str]:
        return list(self._targets)

    def __contains__(self, name: object) -> bool:
        return name in self._targets

    def __iter__(self) -> Iterator[str]:
        return iter(self._targets)

    def lookup(self, name: str, *, flag: str | None = None) -> Any:
        """The step named ``name`` (imported on first use); ``ConfigError`` with a hint."""
        if name not in self._targets:
            where = f"{flag}: " if flag else ""
            hint = did_you_mean(name, self._targets)
            known = f"{self.kind}s: {', '.join(self._targets)}"
            raise ConfigError(
                f"{where}unknown {self.kind} {name!r}"
                + (f"{hint} Known {known}" if hint else f"; known {known}")
            )
        if name not in self._resolved:
            target = self._targets[name]
            self._resolved[name] = resolve(target) if isinstance(target, str) else target
        return self._resolved[name]


_REGISTRIES: dict[str, Registry] = {}


def _check_kind(kind: str) -> None:
    if kind not in KINDS:
        raise ConfigError(f"unknown step kind {kind!r}{did_you_mean(kind, KINDS)}; kinds: "
                          + ", ".join(KINDS))  # fmt: skip


def load_plugins() -> None:
    """(Re)build every registry from the built-ins and the ``evoforge.steps`` entry points.

    Runs on the first lookup; call it again after changing ``sys.path`` (tests do)."""
    fresh = {kind: Registry(kind) for kind in KINDS}
    _REGISTRIES.clear()
    _REGISTRIES.update(fresh)  # a plugin may call register() while it is imported
    failed: dict[str, str] = {}
    for entry in metadata.entry_points(group=GROUP):
        dist = entry.dist.name if entry.dist is not None else entry.value
        kind, _, name = entry.name.partition(".")
        if kind not in fresh or not name:
            warnings.warn(
                f"evoforge: plugin {dist}: entry point {entry.name!r} is not KIND.NAME "
                f"(kinds: {', '.join(KINDS)}); it is ignored",
                stacklevel=2,
            )
            continue
        if dist in failed:
            continue
        try:
            target = entry.load()
        except Exception as exc:  # any import failure of third-party code
            failed[dist] = f"{type(exc).__name__}: {exc}"
            continue
        fresh[kind].add(name, target, origin=f"plugin {dist}")
    for dist, why in failed.items():
        warnings.warn(
            f"evoforge: plugin {dist} failed to import ({why}); its steps are left out",
            stacklevel=2,
        )


def registry(kind: str) -> Registry:
    """The registry of ``kind`` (built-ins plus plugins)."""
    _check_kind(kind)
    if not _REGISTRIES:
        load_plugins()
    return _REGISTRIES[kind]


def register(kind: str, name: str, target: Any) -> None:
    """Add a step for this process: an object, or a lazy ``"module:attr"`` string."""
    registry(kind).add(name, target)


def unregister(kind: str, name: str) -> None:
    registry(kind).remove(name)


def lookup(kind: str, name: str, *, flag: str | None = None) -> Any:
    """The step ``name`` of ``kind``; an unknown name is a ``ConfigError`` with a hint."""
    return registry(kind).lookup(name, flag=flag)


def names(kind: str) -> list[str]:
    """Every name of ``kind``, built-ins first."""
    return registry(kind).names()
