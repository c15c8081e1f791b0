"""Arrows point down only: the import graph of the package, read from the source.

Every import statement counts, wherever it is: at module level, inside a function
(a lazy import still ties the two modules together) and under ``if TYPE_CHECKING:``.
The card folders are read under the names pyproject's ``package-dir`` maps them to.
"""

from __future__ import annotations

import ast
import sys
from pathlib import Path

if sys.version_info >= (3, 11):
    import tomllib
else:  # pragma: no cover
    import tomli as tomllib  # pytest, which runs this, depends on it below 3.11

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = "evoforge"
# Above the engine: the engine may import none of them (nor anything inside them).
ABOVE_ENGINE = ("commands", "export", "card", "report", "recipe", "cli", "api")
MAX_LINES = 500


def _package_roots() -> dict[str, Path]:
    """Package name -> folder, from pyproject's ``package-dir`` (``"" = "src"`` included)."""
    config = tomllib.loads((ROOT / "pyproject.toml").read_text("utf-8"))
    package_dir = config["tool"]["setuptools"]["package-dir"]
    roots = {PACKAGE: ROOT / package_dir.get("", ".") / PACKAGE}
    for name, folder in package_dir.items():
        if name:
            roots[name] = ROOT / folder
    return roots


def _modules() -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is_package) for every .py file under the package roots."""
    found: dict[str, tuple[Path, bool]] = {}
    roots = _package_roots()
    # Longest package name first, so a mapped card folder wins over src/evoforge/<same name>.
    for package, folder in sorted(roots.items(), key=lambda item: -len(item[0])):
        for path in sorted(folder.rglob("*.py")):
            parts = list(path.relative_to(folder).with_suffix("").parts)
            is_package = parts[-1] == "__init__"
            if is_package:
                parts = parts[:-1]
            found.setdefault(".".join([package, *parts]), (path, is_package))
    return found


def _imported_names(module: str, is_package: bool, tree: ast.AST) -> list[str]:
    """Absolute names every import statement of ``tree`` asks for (``from a import b``
    gives ``a.b`` as well as ``a``: ``b`` may be a submodule)."""
    base = module.split(".") if is_package else module.split(".")[:-1]
    names: list[str] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names += [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                anchor = base[: len(base) - (node.level - 1)]
                target = ".".join(anchor + ([node.module] if node.module else []))
            else:
                target = node.module or ""
            names.append(target)
            names += [f"{target}.{alias.name}" for alias in node.names if alias.name != "*"]
    return names


def _resolve(name: str, modules: dict[str, tuple[Path, bool]]) -> str | None:
    """The module of ours that ``name`` is, or lives in (``a.b.func`` -> ``a.b``)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in modules:
            return candidate
        parts.pop()
    return None


def import_graph() -> dict[str, set[str]]:
    modules = _modules()
    graph: dict[str, set[str]] = {}
    for module, (path, is_package) in modules.items():
        tree = ast.parse(path.read_text("utf-8"), filename=str(path))
        edges = set()
        for name in _imported_names(module, is_package, tree):
            target = _resolve(name, modules)
            # A package's __init__ is imported with each of its submodules: an edge to the
            # package itself from inside it is how Python runs, not a cycle between ideas.
            if target is not None and target != module and not module.startswith(f"{target}."):
                edges.add(target)
        graph[module] = edges
    return graph


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle for each strongly connected component of more than one module
    (Tarjan), each printed as a path that returns to its start."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[set[str]] = []
    counter = 0

    def connect(node: str) -> None:
        nonlocal counter
        # Iterative: the graph is deep enough that recursion is not worth the risk.
        work = [(node, iter(sorted(graph[node])))]
        index[node] = low[node] = counter
        counter += 1
        stack.append(node)
        on_stack.add(node)
        while work:
            current, children = work[-1]
            child = next(children, None)
            if child is not None:
                if child not in index:
                    index[child] = low[child] = counter
                    counter += 1
                    stack.append(child)
                    on_stack.add(child)
                    work.append((child, iter(sorted(graph[child]))))
                elif child in on_stack:
                    low[current] = min(low[current], index[child])
                continue
            work.pop()
            if work:
                parent = work[-1][0]
                low[parent] = min(low[parent], low[current])
            if low[current] == index[current]:
                component = set()
                while True:
                    member = stack.pop()
                    on_stack.discard(member)
                    component.add(member)
                    if member == current:
                        break
                if len(component) > 1:
                    components.append(component)

    for node in sorted(graph):
        if node not in index:
            connect(node)
    return [_cycle_in(component, graph) for component in components]


def _cycle_in(component: set[str], graph: dict[str, set[str]]) -> list[str]:
    """A shortest path from the component's first module back to itself."""
    start = min(component)
    previous: dict[str, str] = {}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for child in sorted(graph[node] & component):
                if child == start:
                    path = [node]
                    while path[-1] != start:
                        path.append(previous[path[-1]])
                    return [start, *reversed(path[:-1]), start]
                if child not in previous:
                    previous[child] = node
                    following.append(child)
        frontier = following
    raise AssertionError(f"no cycle in {component}")  # Tarjan gave a component that has one


def test_the_graph_sees_imports_inside_functions_and_type_checking() -> None:
    source = (
        "from typing import TYPE_CHECKING\n"
        "if TYPE_CHECKING:\n    from evoforge import errors\n"
        "def f():\n    from ..io.readers import iter_rows\n    from . import client\n"
    )
    modules = _modules()
    names = _imported_names("evoforge.engine.runner", False, ast.parse(source))
    resolved = {_resolve(name, modules) for name in names}
    assert {"evoforge.errors", "evoforge.io.readers", "evoforge.engine.client"} <= resolved
    assert find_cycles({"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}) == [["a", "b", "c", "a"]]


def test_no_import_cycles() -> None:
    graph = import_graph()
    assert "evoforge.engine.runner" in graph and "evoforge.validators.dedup" in graph
    cycles = find_cycles(graph)
    text = "\n".join(" -> ".join(cycle) for cycle in cycles)
    print(text)
    assert not cycles, f"import cycles (imports inside functions count):\n{text}"


def test_engine_imports_nothing_above_it() -> None:
    above = tuple(f"{PACKAGE}.{name}" for name in ABOVE_ENGINE)
    wrong = sorted(
        f"{module} -> {target}"
        for module, targets in import_graph().items()
        if module.startswith(f"{PACKAGE}.engine")
        for target in targets
        if target in above or target.startswith(tuple(f"{a}." for a in above))
    )
    assert not wrong, "the engine imports from above it:\n" + "\n".join(wrong)


def test_no_module_over_500_lines() -> None:
    testing = _package_roots()[PACKAGE] / "testing"
    long = sorted(
        f"{path.relative_to(ROOT)}: {lines} lines"
        for path, _ in _modules().values()
        if testing not in path.parents
        and (lines := len(path.read_text("utf-8").splitlines())) > MAX_LINES
    )
    assert not long, f"modules over {MAX_LINES} lines:\n" + "\n".join(long)
