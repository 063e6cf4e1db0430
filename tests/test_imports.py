"""Imports inside lmcourse flow one way: no cycles, and none tucked into a function.

Every module of the package is parsed (not imported, so a cycle that breaks the
import is still reported, with its path). An edge A -> B means that module A has
an import statement naming module B, at any depth: top level, under an ``if``,
inside a function. Relative imports are resolved to absolute names.
"""

from __future__ import annotations

import ast
import importlib.util
import pkgutil
from pathlib import Path

PACKAGE = "lmcourse"
# The command-line dispatcher imports a command's module only when it runs, so
# that ``python -m lmcourse --help`` does not wait for PyTorch.
LAZY_IMPORTS_ALLOWED = {"lmcourse.__main__"}


def package_modules(package: str = PACKAGE) -> dict[str, tuple[Path, bool]]:
    """Every module of ``package``: name -> (file, is_package), found without importing any."""
    spec = importlib.util.find_spec(package)
    assert spec is not None and spec.submodule_search_locations, f"{package} is not a package"
    root = Path(next(iter(spec.submodule_search_locations)))
    modules = {package: (root / "__init__.py", True)}

    def walk(folder: Path, prefix: str) -> None:
        for info in pkgutil.iter_modules([str(folder)]):
            name = f"{prefix}.{info.name}"
            if info.ispkg:
                modules[name] = (folder / info.name / "__init__.py", True)
                walk(folder / info.name, name)
            else:
                modules[name] = (folder / f"{info.name}.py", False)

    walk(root, package)
    return modules


def _in_function(node: ast.AST, parents: dict[ast.AST, ast.AST]) -> bool:
    while node in parents:
        node = parents[node]
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            return True
    return False


def _resolve(name: str, known: dict) -> str | None:
    """``name`` if it is a module of the package, else its closest enclosing one (``None`` outside)."""
    parts = name.split(".")
    while parts:
        candidate = ".".join(parts)
        if candidate in known:
            return candidate
        parts.pop()
    return None


def imports_of(module: str, path: Path, is_package: bool, known: dict) -> list[tuple[str, int, bool]]:
    """The package modules that ``module`` imports: (target, line, inside a function)."""
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    parents = {child: node for node in ast.walk(tree) for child in ast.iter_child_nodes(node)}
    here = module.split(".") if is_package else module.split(".")[:-1]
    found: list[tuple[str, int, bool]] = []
    for node in ast.walk(tree):
        names: list[str] = []
        if isinstance(node, ast.Import):
            names = [alias.name for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base_parts = here[: len(here) - (node.level - 1)] if node.level > 1 else here
                base = ".".join(base_parts + ([node.module] if node.module else []))
            else:
                base = node.module or ""
            # ``from . import x`` and ``from .pkg import mod`` import modules x and mod.
            names = [f"{base}.{alias.name}" if f"{base}.{alias.name}" in known else base for alias in node.names]
        else:
            continue
        for name in dict.fromkeys(names):
            if name != PACKAGE and not name.startswith(PACKAGE + "."):
                continue
            target = _resolve(name, known)
            if target is not None and target != module:
                found.append((target, node.lineno, _in_function(node, parents)))
    return found


def import_graph() -> tuple[dict[str, set[str]], list[str]]:
    """The graph of intra-package imports and the function-level imports (``module:line -> target``)."""
    known = package_modules()
    graph: dict[str, set[str]] = {name: set() for name in known}
    lazy: list[str] = []
    for name, (path, is_package) in sorted(known.items()):
        for target, line, in_function in sorted(imports_of(name, path, is_package, known), key=lambda t: t[1]):
            graph[name].add(target)
            if in_function and name not in LAZY_IMPORTS_ALLOWED:
                lazy.append(f"{name}:{line} imports {target} inside a function")
    return graph, lazy


def find_cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """One cycle (``[a, b, ..., a]``) through each strongly connected component that has one."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    components: list[list[str]] = []

    def connect(v: str) -> None:  # Tarjan's algorithm
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in sorted(graph[v]):
            if w not in index:
                connect(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            components.append(component)

    for v in sorted(graph):
        if v not in index:
            connect(v)

    cycles = []
    for component in components:
        members = set(component)
        if len(component) == 1 and component[0] not in graph[component[0]]:
            continue
        start = min(component)
        # shortest path from start back to itself inside the component (breadth first)
        previous: dict[str, str] = {}
        frontier, end = [start], None
        while frontier and end is None:
            nxt = []
            for v in frontier:
                for w in sorted(graph[v] & members):
                    if w == start:
                        end = v
                        break
                    if w not in previous:
                        previous[w] = v
                        nxt.append(w)
                if end is not None:
                    break
            frontier = nxt
        path = [start]
        v = end
        while v != start:
            path.append(v)
            v = previous[v]
        cycles.append([start, *reversed(path[1:]), start])
    return cycles


def test_the_walk_finds_every_module():
    graph, _ = import_graph()
    for name in ("lmcourse", "lmcourse.__main__", "lmcourse.transformer", "lmcourse.bench.ngram",
                 "lmcourse.course.grade", "lmcourse.course.grade_runner"):
        assert name in graph, name
    assert "lmcourse.course.exercises" in graph["lmcourse.course.grade"]  # a relative import, resolved


def test_find_cycles_reports_the_path():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}, "e": set()}
    assert find_cycles(graph) == [["a", "b", "c", "a"]]
    assert find_cycles({"a": {"b"}, "b": set()}) == []


def test_no_import_cycles():
    graph, _ = import_graph()
    cycles = find_cycles(graph)
    assert not cycles, "import cycles in lmcourse:\n" + "\n".join("  " + " -> ".join(c) for c in cycles)


def test_no_imports_of_lmcourse_inside_functions():
    _, lazy = import_graph()
    assert not lazy, ("imports of lmcourse modules inside functions (move them to the top of the module; "
                      "if that makes a cycle, the dependency points the wrong way):\n"
                      + "\n".join("  " + x for x in lazy))
