"""The package stays as it is laid out: imports point down the layers of ``docs/reference/architecture.md``, no import
cycles, no private cross-module imports, small modules.

Static: imports are read with ``ast`` (function-level imports included), nothing is imported.
"""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
from conftest import ROOT

PACKAGE = ROOT / "b12screen"
MAX_LINES = 450

#: The layers of docs/reference/architecture.md, lowest first: a module may import its own layer and those below.
LAYERS: tuple[tuple[str, ...], ...] = (
    ("errors", "_version"),
    ("core", "rules", "hookspecs", "plugins"),
    ("sources", "sinks"),
    ("screening",),
    ("batch", "cdshooks", "library", "testing"),
    ("cli", "__main__"),
)


def module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts.pop()
    return ".".join(parts)


MODULES = {module_name(p): p for p in sorted(PACKAGE.rglob("*.py"))}


def _is_package(name: str) -> bool:
    return MODULES[name].name == "__init__.py"


def _absolute(module: str, node: ast.ImportFrom) -> str:
    if node.level == 0:
        return node.module or ""
    base = module.split(".")
    if not _is_package(module):
        base.pop()
    base = base[: len(base) - (node.level - 1)]
    return ".".join(base + ([node.module] if node.module else []))


def imports_of(module: str, tree: ast.AST) -> list[tuple[str, list[str]]]:
    """(target module inside the package, names imported from it) for every import statement."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            found += [(a.name, []) for a in node.names if a.name.split(".")[0] == "b12screen"]
        elif isinstance(node, ast.ImportFrom):
            target = _absolute(module, node)
            if target.split(".")[0] != "b12screen":
                continue
            names = [a.name for a in node.names]
            submodules = [n for n in names if f"{target}.{n}" in MODULES]
            found += [(f"{target}.{n}", []) for n in submodules]
            rest = [n for n in names if n not in submodules]
            if rest or not submodules:
                found.append((target, rest))
    return found


def import_graph() -> dict[str, set[str]]:
    graph: dict[str, set[str]] = {}
    for name, path in MODULES.items():
        tree = ast.parse(path.read_text(encoding="utf-8"))
        graph[name] = {t for t, _ in imports_of(name, tree) if t in MODULES and t != name}
    return graph


def find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    """One import cycle (as a path that returns to its start), or None."""
    state: dict[str, int] = {}
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return [*stack[stack.index(nxt):], nxt]
            if nxt not in state and (cycle := visit(nxt)):
                return cycle
        stack.pop()
        state[node] = 2
        return None

    for start in sorted(graph):
        if start not in state and (cycle := visit(start)):
            return cycle
    return None


def test_cycle_finder_sees_a_cycle_through_a_function_level_import() -> None:
    code = {"b12screen.a": "from .b import x\n", "b12screen.b": "def f():\n    from . import a\n"}
    MODULES.setdefault("b12screen.a", PACKAGE / "a.py")
    MODULES.setdefault("b12screen.b", PACKAGE / "b.py")
    try:
        graph = {name: {t for t, _ in imports_of(name, ast.parse(src)) if t in code} for name, src in code.items()}
    finally:
        del MODULES["b12screen.a"], MODULES["b12screen.b"]
    assert find_cycle(graph) == ["b12screen.a", "b12screen.b", "b12screen.a"]
    assert find_cycle({"x": {"y"}, "y": set()}) is None


def test_no_import_cycle_in_the_package() -> None:
    assert find_cycle(import_graph()) is None


def test_no_module_imports_another_modules_private_names() -> None:
    offenders = []
    for name, path in MODULES.items():
        for target, names in imports_of(name, ast.parse(path.read_text(encoding="utf-8"))):
            private = [n for n in names if n.startswith("_") and not n.startswith("__")]
            if private and target != name:
                offenders.append(f"{name} imports {', '.join(private)} from {target}")
    assert offenders == []


@pytest.mark.parametrize("name", sorted(MODULES))
def test_module_is_small(name: str) -> None:
    lines = len(MODULES[name].read_text(encoding="utf-8").splitlines())
    assert lines <= MAX_LINES, f"{name} has {lines} lines (at most {MAX_LINES})"


def layer_of(module: str) -> int | None:
    """The layer of a module of the package (``b12screen`` itself, which only re-exports, has none)."""
    parts = module.split(".")
    if len(parts) < 2:
        return None
    for level, names in enumerate(LAYERS):
        if parts[1] in names:
            return level
    raise AssertionError(f"{module} is in no layer of docs/reference/architecture.md: add it to LAYERS and the page")


def upward_imports(graph: dict[str, set[str]]) -> list[str]:
    """Every import (module level, function level or under TYPE_CHECKING) of a higher layer."""
    found = []
    for name, targets in sorted(graph.items()):
        for target in sorted(targets):
            low, high = layer_of(name), layer_of(target)
            if low is not None and high is not None and high > low:
                found.append(f"{name} imports {target}")
    return found


def test_layer_check_sees_an_upward_import_in_a_function_and_under_type_checking() -> None:
    code = {"b12screen.core.a": "def f():\n    from ..sources import x\n",
            "b12screen.sources.b": "from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n    from ..cli import y\n",
            "b12screen.cli.c": "from ..core import a\n"}
    names = ("b12screen.core.a", "b12screen.sources.b", "b12screen.cli.c", "b12screen.sources", "b12screen.cli")
    added = [n for n in names if n not in MODULES]
    for n in added:
        MODULES[n] = PACKAGE / (n.replace(".", "/") + ".py")
    try:
        graph = {name: {t for t, _ in imports_of(name, ast.parse(src)) if t in MODULES} for name, src in code.items()}
    finally:
        for n in added:
            del MODULES[n]
    assert upward_imports(graph) == ["b12screen.core.a imports b12screen.sources",
                                     "b12screen.sources.b imports b12screen.cli"]


def test_imports_point_down_the_layers() -> None:
    assert upward_imports(import_graph()) == []


def test_architecture_page_draws_the_layers_the_test_checks() -> None:
    page = (ROOT / "docs" / "reference" / "architecture.md").read_text(encoding="utf-8")
    drawn = page.split("```")[1].removeprefix("text")
    rows = [line for line in drawn.splitlines() if line.strip()]
    assert len(rows) == len(LAYERS)
    for row, names in zip(reversed(rows), LAYERS, strict=True):
        assert sorted(n.strip("`/ ") for n in row.split("|")[1].split(",")) == sorted(names), row
