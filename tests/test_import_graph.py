"""No import circles between flux2cli's modules, deferred imports included.

A circle that only works because one side imports inside a function still ties the two
layers together (and breaks as soon as someone moves that import to the top). The graph
is read from the source with ``ast``, so nothing is imported: every ``import`` and
``from ... import`` anywhere in a module (functions and ``TYPE_CHECKING`` blocks too)
is an edge. ``from pkg import name`` is an edge to ``pkg.name`` when that is a module,
else to ``pkg`` (a package means its ``__init__``). Importing ``a.b.c`` from outside
``a.b`` also runs ``a.b``'s ``__init__`` first (``flux2cli.server``'s imports its app), so
that is an edge too; from inside ``a.b`` it is not, since that package is already loading.
"""

from __future__ import annotations

import ast
from pathlib import Path
from typing import Any

import pytest

PACKAGE = "flux2cli"
ROOT = Path(__file__).resolve().parent.parent / PACKAGE


def module_sources(root: Path = ROOT) -> dict[str, tuple[Path, bool]]:
    """Module name -> (file, is a package) for every .py file under ``root``."""
    modules = {}
    for path in sorted(root.rglob("*.py")):
        parts = [PACKAGE, *path.relative_to(root).with_suffix("").parts]
        is_package = parts[-1] == "__init__"
        if is_package:
            parts.pop()
        modules[".".join(parts)] = (path, is_package)
    return modules


def imports_of(name: str, source: str, is_package: bool, known: set[str]) -> list[tuple[str, int, str]]:
    """(imported flux2cli module, line, kind) for every import statement in ``source``; the
    kind is "top" (runs on import), "deferred" (inside a function) or "type-only"."""
    found: list[tuple[str, int, str]] = []
    package = name if is_package else name.rpartition(".")[0]

    def visit(node: ast.AST, kind: str) -> None:
        if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.Lambda)):
            kind = "deferred" if kind == "top" else kind
        elif isinstance(node, ast.If) and "TYPE_CHECKING" in ast.unparse(node.test):
            for child in node.body:
                visit(child, "type-only")
            for child in node.orelse:
                visit(child, kind)
            return
        elif isinstance(node, ast.Import):
            found.extend((alias.name, node.lineno, kind) for alias in node.names if _ours(alias.name))
        elif isinstance(node, ast.ImportFrom):
            base = node.module or ""
            if node.level:  # relative: level 1 is this module's package
                anchor = package.split(".")[: len(package.split(".")) - (node.level - 1)]
                base = ".".join(anchor + ([base] if base else []))
            if _ours(base):
                for alias in node.names:
                    candidate = f"{base}.{alias.name}"
                    found.append((candidate if candidate in known else base, node.lineno, kind))
        for child in ast.iter_child_nodes(node):
            visit(child, kind)

    visit(ast.parse(source), "top")
    with_parents = []
    for target, line, kind in found:
        with_parents.append((target, line, kind))
        parts = target.split(".")
        for depth in range(2, len(parts)):  # the packages on the way, below flux2cli itself
            parent = ".".join(parts[:depth])
            if name != parent and not name.startswith(parent + "."):
                with_parents.append((parent, line, kind))
    return [edge for edge in with_parents if edge[0] != name]


def _ours(module: str) -> bool:
    return module == PACKAGE or module.startswith(PACKAGE + ".")


Edge = tuple[int, str]  # the line of the import that binds tightest, and its kind
_TIGHTNESS = {"top": 0, "deferred": 1, "type-only": 2}


def import_graph(modules: dict[str, tuple[Path, bool]]) -> dict[str, dict[str, Edge]]:
    """module -> {imported module: (line, kind)}."""
    known = set(modules)
    graph: dict[str, dict[str, Edge]] = {}
    for name, (path, is_package) in modules.items():
        edges: dict[str, Edge] = {}
        for target, line, kind in imports_of(name, path.read_text(encoding="utf-8"), is_package, known):
            if target not in edges or _TIGHTNESS[kind] < _TIGHTNESS[edges[target][1]]:
                edges[target] = (line, kind)
        graph[name] = edges
    return graph


def cycles(graph: dict[str, dict[str, Any]]) -> list[list[str]]:
    """One circle through each strongly connected group of modules (Tarjan), as a path."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    groups: list[list[str]] = []

    def visit(node: str) -> None:  # recursion depth is bounded by the module count (~100)
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph.get(node, {}):
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            group = []
            while True:
                member = stack.pop()
                on_stack.discard(member)
                group.append(member)
                if member == node:
                    break
            if len(group) > 1:
                groups.append(sorted(group))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return [_circle(graph, group) for group in sorted(groups)]


def _circle(graph: dict[str, dict[str, Any]], group: list[str]) -> list[str]:
    """A shortest path from the group's first module back to itself, inside the group."""
    start, members = group[0], set(group)
    paths = {start: [start]}
    frontier = [start]
    while frontier:
        following = []
        for node in frontier:
            for target in sorted(graph[node]):
                if target == start:
                    return paths[node] + [start]
                if target in members and target not in paths:
                    paths[target] = paths[node] + [target]
                    following.append(target)
        frontier = following
    raise AssertionError(f"no circle through {start} in {group}")  # Tarjan's groups always have one


def describe(graph: dict[str, dict[str, Edge]], circle: list[str], modules: dict[str, tuple[Path, bool]]) -> str:
    steps = [circle[0]]
    for here, there in zip(circle, circle[1:]):
        line, kind = graph[here][there]
        steps.append(f"-> {there} ({modules[here][0].relative_to(ROOT.parent)}:{line}, {kind})")
    return " ".join(steps)


# -- the rule ----------------------------------------------------------------------


def test_no_import_circles_between_modules():
    modules = module_sources()
    graph = import_graph(modules)
    assert len(graph) > 50 and sum(map(len, graph.values())) > 100  # the package was really read
    found = [describe(graph, circle, modules) for circle in cycles(graph)]
    assert not found, "import circles (deferred and type-only imports count):\n" + "\n".join(found)


def test_every_flux2cli_import_names_a_module_that_exists():
    """A deferred import of a moved or deleted module fails only when its function runs."""
    modules = module_sources()
    known = set(modules)
    missing = [f"{modules[name][0].relative_to(ROOT.parent)}:{line} imports {target}"
               for name, (path, is_package) in modules.items()
               for target, line, _kind in imports_of(name, path.read_text(encoding="utf-8"), is_package, known)
               if target not in known]
    assert not missing, "\n".join(missing)


# -- the reader itself -------------------------------------------------------------

KNOWN = {"flux2cli", "flux2cli.a", "flux2cli.pkg", "flux2cli.pkg.sub", "flux2cli.pkg.other"}


@pytest.mark.parametrize("source,expected", [  # as read in flux2cli.pkg.here
    ("import flux2cli.a", ["flux2cli.a"]),
    ("from flux2cli.a import thing", ["flux2cli.a"]),
    ("from flux2cli.pkg import sub, helper", ["flux2cli.pkg.sub", "flux2cli.pkg"]),
    ("from flux2cli import a", ["flux2cli.a"]),
    ("from . import other", ["flux2cli.pkg.other"]),
    ("from .other import x", ["flux2cli.pkg.other"]),
    ("from .. import a", ["flux2cli.a"]),
    ("def later():\n    from flux2cli.a import thing\n", ["flux2cli.a"]),
    ("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flux2cli.a\n", ["flux2cli.a"]),
    ("import os\nfrom json import dumps", []),
])
def test_every_import_form_is_resolved_to_a_module(source, expected):
    assert [target for target, _, _ in imports_of("flux2cli.pkg.here", source, False, KNOWN)] == expected


def test_a_package_imported_from_outside_runs_its_init_first():
    source = "from flux2cli.pkg.sub import thing\nimport flux2cli.pkg.other"
    outside = imports_of("flux2cli.a", source, False, KNOWN)
    assert [target for target, _, _ in outside] == ["flux2cli.pkg.sub", "flux2cli.pkg", "flux2cli.pkg.other",
                                                    "flux2cli.pkg"]
    inside = imports_of("flux2cli.pkg.here", source, False, KNOWN)
    assert [target for target, _, _ in inside] == ["flux2cli.pkg.sub", "flux2cli.pkg.other"]


def test_imports_are_told_apart_by_when_they_run():
    source = ("import flux2cli.a\nfrom typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    import flux2cli.pkg\n"
              "else:\n    import flux2cli.pkg.other\ndef later():\n    import flux2cli.pkg.sub\n")
    assert imports_of("flux2cli.pkg.here", source, False, KNOWN) == [
        ("flux2cli.a", 1, "top"), ("flux2cli.pkg", 4, "type-only"), ("flux2cli.pkg.other", 6, "top"),
        ("flux2cli.pkg.sub", 8, "deferred")]


def test_a_circle_through_a_deferred_import_is_found():
    graph = {"flux2cli.a": {"flux2cli.b": 1}, "flux2cli.b": {"flux2cli.c": 3},
             "flux2cli.c": {"flux2cli.a": 9}, "flux2cli.d": {"flux2cli.a": 2}}
    assert cycles(graph) == [["flux2cli.a", "flux2cli.b", "flux2cli.c", "flux2cli.a"]]
    assert cycles({"flux2cli.a": {"flux2cli.b": 1}, "flux2cli.b": {}}) == []
