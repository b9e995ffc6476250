"""The package's own import graph: layers point one way and no modules import each other.

Layers, top to bottom (``doc/architecture.md``): ``deploy`` → ``api`` / ``client`` →
``core`` → ``model`` → the leaves (``errors``, ``log``, ``constants``). A module may import
its own layer and any layer below it, never one above; ``api`` and ``client`` are siblings
that do not import each other. Every import counts, also those inside functions (a lazy
import still ties the two modules together); only ``if TYPE_CHECKING:`` blocks are skipped.
The graph is read from the source with :mod:`ast`; nothing is imported.
"""

from __future__ import annotations

import ast
import pathlib

import pytest

PKG = pathlib.Path(__file__).resolve().parent.parent / "xinference"

# Rank of each top-level part of the package; higher may import lower.
RANKS = {
    "deploy": 4,
    "api": 3,
    "client": 3,
    "core": 2,
    "model": 1,
    "errors": 0,
    "log": 0,
    "constants": 0,
    "fileio": 0,
    "__init__": 0,
}


def _module_name(path: pathlib.Path) -> str:
    parts = list(path.relative_to(PKG.parent).with_suffix("").parts)
    if parts[-1] == "__init__":
        parts = parts[:-1]
    return ".".join(parts)


def _modules() -> dict[str, pathlib.Path]:
    return {_module_name(p): p for p in PKG.rglob("*.py")}


def _is_type_checking(node: ast.If) -> bool:
    test = node.test
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING"
    )


def _imports(name: str, path: pathlib.Path, known: set[str]) -> set[str]:
    """Project modules that ``name`` imports (submodules resolved where they exist)."""
    tree = ast.parse(path.read_text(), str(path))
    is_pkg = path.name == "__init__.py"
    out: set[str] = set()

    def visit(node):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, ast.If) and _is_type_checking(child):
                for sub in child.orelse:
                    visit_one(sub)
                continue
            visit_one(child)

    def visit_one(child):
        if isinstance(child, ast.Import):
            for alias in child.names:
                if alias.name.split(".")[0] == "xinference":
                    out.add(_closest(alias.name))
        elif isinstance(child, ast.ImportFrom):
            if child.level:
                base = name.split(".") if is_pkg else name.split(".")[:-1]
                base = base[: len(base) - (child.level - 1)]
                mod = ".".join(base + ([child.module] if child.module else []))
            else:
                mod = child.module or ""
            if mod.split(".")[0] != "xinference":
                return
            for alias in child.names:
                sub = f"{mod}.{alias.name}"
                out.add(sub if sub in known else _closest(mod))
        else:
            visit(child)

    def _closest(mod: str) -> str:
        while mod and mod not in known:
            mod = mod.rpartition(".")[0]
        return mod

    visit(tree)
    out.discard(name)
    out.discard("")
    return out


def _graph() -> dict[str, set[str]]:
    mods = _modules()
    known = set(mods)
    return {name: _imports(name, path, known) for name, path in mods.items()}


def _layer(mod: str) -> str:
    parts = mod.split(".")
    return parts[1] if len(parts) > 1 else "__init__"


def test_every_part_of_the_package_has_a_layer():
    unknown = sorted({_layer(m) for m in _modules()} - set(RANKS) - {"ui"})
    assert not unknown, f"give these a rank in RANKS: {unknown}"


def test_no_import_points_up_a_layer():
    bad = []
    for mod, deps in _graph().items():
        src = _layer(mod)
        for dep in deps:
            dst = _layer(dep)
            if dst == src or dep == "xinference":
                continue
            if RANKS[dst] >= RANKS[src]:
                bad.append(f"{mod} -> {dep}")
    assert not bad, "imports against the layers:\n" + "\n".join(sorted(bad))


def _cycles(graph: dict[str, set[str]]) -> list[list[str]]:
    """Strongly connected components of more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    out: list[list[str]] = []
    counter = [0]

    def strong(v):
        index[v] = low[v] = counter[0]
        counter[0] += 1
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, ()):
            if w not in graph:
                continue
            if w not in index:
                strong(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            comp = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                comp.append(w)
                if w == v:
                    break
            if len(comp) > 1:
                out.append(sorted(comp))

    for v in sorted(graph):
        if v not in index:
            strong(v)
    return out


def test_no_import_circles():
    graph = _graph()
    # A package's __init__ re-exporting its submodules is not a circle of design: drop the
    # edges from a package to its own submodules.
    for mod, deps in graph.items():
        graph[mod] = {d for d in deps if not d.startswith(mod + ".")}
    circles = _cycles(graph)
    assert not circles, "import circles:\n" + "\n".join(" <-> ".join(c) for c in circles)


@pytest.mark.parametrize("limit", [700])
def test_no_module_over_the_line_limit(limit):
    long = {
        _module_name(p): n
        for p in PKG.rglob("*.py")
        if (n := len(p.read_text().splitlines())) > limit
    }
    assert not long, f"modules over {limit} lines: {long}"
