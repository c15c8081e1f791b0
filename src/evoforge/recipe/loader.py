"""Reading a recipe file: strict, with the file, line and key path in every error.

An unknown key is an error with a "did you mean" hint; a value of the wrong type
names its field; relative paths are read from the recipe file's folder. Every
check that needs no model runs here, before any step calls one.
"""

from __future__ import annotations

import types
import typing
from collections.abc import Sequence
from dataclasses import fields
from pathlib import Path
from typing import Any

import yaml

from evoforge.errors import ConfigError, InputError, did_you_mean, yaml_problem
from evoforge.options import EngineOptions, RagOptions
from evoforge.recipe.model import (
    ENGINE_ELSEWHERE,
    GENERATOR_OPTIONS,
    GENERATORS,
    MIX_KEYS,
    NOT_IN_RECIPE,
    SECTIONS,
    STEP_FILES,
    TOP_KEYS,
    LlmSpec,
    OutputsSpec,
    Recipe,
    comma_list,
)


class _Loader:
    """Turns composed YAML nodes into the dataclasses above, with marks for errors."""

    def __init__(self, path: Path, text: str) -> None:
        self.path = path
        try:
            self._yaml = yaml.SafeLoader(text)
        except yaml.YAMLError as exc:  # a character YAML does not allow
            raise ConfigError(f"{path}: not valid YAML: {yaml_problem(exc)}") from None
        self.given: dict[str, set[str]] = {}  # section -> the keys the file sets

    def root(self) -> yaml.Node | None:
        try:
            return self._yaml.get_single_node()
        except yaml.YAMLError as exc:
            raise ConfigError(f"{self.path}: not valid YAML: {yaml_problem(exc)}") from None

    def fail(self, node: yaml.Node, where: str, message: str) -> ConfigError:
        line = node.start_mark.line + 1
        where = where if where.isprintable() else repr(where)  # a key of control characters
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
            if key in MIX_KEYS and isinstance(value, dict):
                value = _mix_string(value, self, value_node, f"{where}.{key}")
            if key == "styles" and isinstance(value, list):
                value = ",".join(str(v) for v in value)
            if key in ("checks", "methods") and isinstance(value, str):
                value = comma_list(value)
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
        if key not in TOP_KEYS:
            raise loader.unknown(key, key_node, "", TOP_KEYS)
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
            options = loader.build(EngineOptions, node, key, skip=ENGINE_ELSEWHERE)
            recipe.engine = {name: getattr(options, name) for name in loader.given[key]}
        else:
            setattr(recipe, key, loader.build(SECTIONS[key], node, key))
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
        GENERATOR_OPTIONS[kind], rest, "generator", skip=NOT_IN_RECIPE.get(kind, ())
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
    elif kind == "grow":
        _check_grow(recipe, loader, root)
    elif not source.seeds:
        raise loader.fail(root, "source.seeds", "answer and evolve read seed records")
    if kind in ("in2", "orca2", "pam") and recipe.evolvers is not None:
        raise loader.fail(root, "evolvers", f"{kind} records are not evolved further")
    if recipe.validators is not None:
        _check_validators(recipe, loader, root)
    if recipe.outputs.name.split(".")[0] in STEP_FILES:
        raise loader.fail(
            root, "outputs.name", f"{recipe.outputs.name!r} is a step's own file in the run "
            f"folder; name the dataset otherwise (taken: {', '.join(STEP_FILES)})",
        )  # fmt: skip
    if recipe.outputs.export:
        from evoforge.export import EXPORT_FORMATS

        record_kind = final_kind(recipe)
        for to in recipe.outputs.export:
            if record_kind not in EXPORT_FORMATS[to].kinds:
                takes = " and ".join(EXPORT_FORMATS[to].kinds)
                raise loader.fail(
                    root, "outputs.export", f"{to} takes {takes} records; this recipe "
                    f"writes {record_kind} records",
                )  # fmt: skip


def _check_grow(recipe: Recipe, loader: _Loader, root: yaml.Node) -> None:
    """grow reads documents (backtranslate), seeds (self-instruct) or either (magpie)."""
    method = recipe.generator.method
    if method == "backtranslate" and not recipe.source.docs:
        raise loader.fail(root, "source.docs", "grow's backtranslate method reads documents")
    if method == "self-instruct" and not recipe.source.seeds:
        raise loader.fail(root, "source.seeds", "grow's self-instruct method reads seeds")


def _check_validators(recipe: Recipe, loader: _Loader, root: yaml.Node) -> None:
    """The checks exist, and a rubric is one the judge can read (a file beside the
    recipe); the validate step is ``evoforge validate``, the judged checks included."""
    from evoforge.commands.validate import rubric_critic
    from evoforge.validators.checks import ValidatorChain, parse_checks

    spec = recipe.validators
    assert spec is not None
    judged = ValidatorChain(parse_checks(spec.checks)).judged
    if spec.rubric is None:
        return
    if not judged:
        raise loader.fail(
            root, "validators.rubric", "the rubric is for the rubric check: add rubric to checks"
        )
    spec.rubric = str(recipe.resolve(spec.rubric))
    try:
        rubric_critic(spec.rubric)
    except ConfigError as exc:
        raise loader.fail(root, "validators.rubric", str(exc)) from None


def final_kind(recipe: Recipe) -> str:
    """The kind of the records the recipe writes."""
    if recipe.generator_type in ("rag", "in2", "pam"):
        return recipe.generator_type
    if recipe.generator_type == "orca2":
        return "chat"
    if recipe.generator_type == "evolve":
        return recipe.generator.kind
    if recipe.generator_type is None and recipe.evolvers is not None:
        return recipe.evolvers.kind
    return "instruction"
