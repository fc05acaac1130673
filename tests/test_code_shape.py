"""The code's shape, measured from the source alone (issue 18): docstrings, function length, import cycles, layers.

Pure ``ast`` over the project's packages; nothing of the project is imported, so this runs in well under a second.
``python tests/test_code_shape.py`` prints the full report (coverage per file, long functions, cycles, layer breaks).
"""

from __future__ import annotations

import ast
from dataclasses import dataclass
from pathlib import Path

ROOT = Path(__file__).resolve().parent.parent
PACKAGES = ("agents", "pipeline", "store", "tools", "textbook", "train")
# every top-level package of ours (pyproject's packages.find), for the import graph
OUR_PACKAGES = (*PACKAGES, "prompts")
DOCSTRING_SHARE = 0.90
MAX_FUNCTION_LINES = 80
SHORT_FUNCTION_PACKAGES = ("agents", "pipeline", "store")
# a package may import only the packages listed for it (besides itself); tools: nothing of ours
LAYERS = {
    "textbook": {"agents", "pipeline", "tools", "store", "train", "prompts"},
    "agents": {"pipeline", "tools", "store", "prompts"},
    "pipeline": {"tools", "store", "prompts"},
    "train": {"pipeline", "tools"},
    "store": set(),
    "tools": set(),
    "prompts": set(),
}


def _sources(packages=PACKAGES) -> list[Path]:
    return sorted(p for pkg in packages for p in (ROOT / pkg).rglob("*.py"))


def _rel(path: Path) -> str:
    return path.relative_to(ROOT).as_posix()


def _tree(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


# --- (a) public docstrings -----------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Definition:
    """One public function, class or method: where it is and whether it has a docstring."""

    path: str
    line: int
    name: str
    documented: bool


def _is_accessor(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """``@x.setter`` / ``@x.deleter``: the property's second half, documented by its getter."""
    return any(isinstance(d, ast.Attribute) and d.attr in ("setter", "deleter") for d in node.decorator_list)


def _public_defs(body: list[ast.stmt], path: str, prefix: str = "") -> list[Definition]:
    """Public functions and classes of a module or class body; methods of public classes, recursively.

    Module-level ``if``/``try`` blocks count as the module's body (a def under ``if TYPE_CHECKING:`` is still
    the module's); defs nested inside functions do not count; names starting with ``_`` (dunders included) do not.
    """
    found: list[Definition] = []
    for node in body:
        if isinstance(node, (ast.If, ast.Try)):
            blocks = [node.body, node.orelse]
            if isinstance(node, ast.Try):
                blocks += [h.body for h in node.handlers] + [node.finalbody]
            for block in blocks:
                found += _public_defs(block, path, prefix)
            continue
        if not isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef, ast.ClassDef)):
            continue
        if node.name.startswith("_") or (not isinstance(node, ast.ClassDef) and _is_accessor(node)):
            continue
        found.append(Definition(path, node.lineno, prefix + node.name, ast.get_docstring(node) is not None))
        if isinstance(node, ast.ClassDef):
            found += _public_defs(node.body, path, f"{prefix}{node.name}.")
    return found


def public_definitions(packages=PACKAGES) -> list[Definition]:
    """Every public definition of ``packages``, in file then line order."""
    return [d for path in _sources(packages) for d in _public_defs(_tree(path).body, _rel(path))]


def docstring_report(defs: list[Definition], worst: int = 15) -> str:
    """The share documented, then the files with the most undocumented definitions and their names."""
    missing: dict[str, list[Definition]] = {}
    for d in defs:
        if not d.documented:
            missing.setdefault(d.path, []).append(d)
    documented = sum(d.documented for d in defs)
    lines = [f"public docstrings: {documented}/{len(defs)} = {documented / max(len(defs), 1):.1%}"]
    for path, gone in sorted(missing.items(), key=lambda kv: (-len(kv[1]), kv[0]))[:worst]:
        lines.append(f"  {path}: {len(gone)} missing: " + ", ".join(f"{d.name}:{d.line}" for d in gone))
    return "\n".join(lines)


def test_public_docstrings():
    defs = public_definitions()
    share = sum(d.documented for d in defs) / len(defs)
    assert len(defs) > 300, "the walk found too few definitions: is ROOT right?"
    assert share >= DOCSTRING_SHARE, docstring_report(defs)


# --- (b) function length -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class LongFunction:
    """A function or method longer than the limit: its ``def`` line to its last line, decorators excluded."""

    path: str
    line: int
    name: str
    lines: int


def _registers_commands(node: ast.FunctionDef | ast.AsyncFunctionDef) -> bool:
    """A function that registers CLI commands: it defines functions decorated with ``@<app>.command(...)``."""
    for inner in ast.walk(node):
        if inner is not node and isinstance(inner, (ast.FunctionDef, ast.AsyncFunctionDef)):
            for d in inner.decorator_list:
                call = d.func if isinstance(d, ast.Call) else d
                if isinstance(call, ast.Attribute) and call.attr in ("command", "group", "callback"):
                    return True
    return False


def long_functions(packages=SHORT_FUNCTION_PACKAGES, limit: int = MAX_FUNCTION_LINES) -> list[LongFunction]:
    """Every function or method (nested ones too) over ``limit`` lines, CLI registration aside."""
    found = []
    for path in _sources(packages):
        for node in ast.walk(_tree(path)):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                length = node.end_lineno - node.lineno + 1
                if length > limit and not _registers_commands(node):
                    found.append(LongFunction(_rel(path), node.lineno, node.name, length))
    return found


def test_no_long_functions():
    found = long_functions()
    assert not found, f"functions over {MAX_FUNCTION_LINES} lines:\n" + "\n".join(
        f"  {f.path}:{f.line} {f.name}: {f.lines} lines" for f in found)


# --- (c) import cycles and layers ------------------------------------------------------------------------------------


def _module_name(path: Path) -> str:
    parts = list(path.relative_to(ROOT).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(test: ast.expr) -> bool:
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _imports(tree: ast.Module):
    """Every ``import``/``from`` statement, at any depth (lazy ones inside functions too), except the body of an
    ``if TYPE_CHECKING:`` block, which never runs."""
    stack: list[ast.AST] = [tree]
    while stack:
        node = stack.pop()
        if isinstance(node, (ast.Import, ast.ImportFrom)):
            yield node
        elif isinstance(node, ast.If) and _is_type_checking(node.test):
            stack.extend(node.orelse)
        else:
            stack.extend(ast.iter_child_nodes(node))


def import_graph() -> dict[str, dict[str, list[int]]]:
    """``{module: {imported module: [lines]}}`` over our own modules.

    ``from a.b import c`` ties to ``a.b.c`` when that is a module of ours, else to ``a.b``; relative imports are
    resolved against the importing module's package.
    """
    paths = {_module_name(p): p for p in _sources(OUR_PACKAGES)}
    graph: dict[str, dict[str, list[int]]] = {}
    for name, path in paths.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        ties: dict[str, list[int]] = {}
        for node in _imports(_tree(path)):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            else:
                base = node.module or ""
                if node.level:
                    anchor = package.split(".")[: len(package.split(".")) - node.level + 1]
                    base = ".".join([*anchor, base] if base else anchor)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in paths else base for a in node.names]
            for target in set(targets):
                while target and target not in paths:  # `import a.b.c` of a name inside a.b -> a.b
                    target = target.rpartition(".")[0]
                if target and target != name and node.lineno not in ties.get(target, []):
                    ties.setdefault(target, []).append(node.lineno)
        graph[name] = ties
    return graph


def import_cycles(graph: dict[str, dict[str, list[int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each sorted; sorted by first name."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    on_stack: set[str] = set()
    stack: list[str] = []
    components: list[list[str]] = []

    def visit(v: str) -> None:
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w in graph.get(v, {}):
            if w not in index:
                visit(w)
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
            if len(component) > 1:
                components.append(sorted(component))

    for v in sorted(graph):
        if v not in index:
            visit(v)
    return sorted(components)


def cycles_report(graph, cycles) -> str:
    """Each cycle with the ties inside it: ``a -> b (line 12, 40)``."""
    lines = []
    for cycle in cycles:
        lines.append("cycle: " + ", ".join(cycle))
        for a in cycle:
            for b, at in sorted(graph[a].items()):
                if b in cycle:
                    lines.append(f"  {a} -> {b} (line {', '.join(map(str, at))})")
    return "\n".join(lines)


def layer_breaks(graph) -> list[str]:
    """Every tie from a package to one it may not import (see ``LAYERS``), as ``a.x:12 -> b.y``."""
    breaks = []
    for a, ties in sorted(graph.items()):
        for b, at in sorted(ties.items()):
            pa, pb = a.split(".")[0], b.split(".")[0]
            if pa != pb and pb not in LAYERS[pa]:
                breaks.append(f"{a}:{','.join(map(str, at))} -> {b}")
    return breaks


def test_no_import_cycles():
    graph = import_graph()
    assert "pipeline.runner" in graph and graph["agents.build"], "the import graph is empty: is ROOT right?"
    cycles = import_cycles(graph)
    assert not cycles, cycles_report(graph, cycles)


def test_layers():
    """textbook -> agents -> pipeline -> tools; store below agents, pipeline and textbook; tools import nothing of
    ours."""
    breaks = layer_breaks(import_graph())
    assert not breaks, "imports that break the layers:\n" + "\n".join(f"  {b}" for b in breaks)


def test_measures_find_what_they_should(tmp_path):
    """The walks on a small known module: what counts as public, a long function, a lazy and a TYPE_CHECKING tie."""
    source = '''
from typing import TYPE_CHECKING
if TYPE_CHECKING:
    from b import T
def f():
    """Doc."""
    def inner(): pass
def g(): pass
def _h(): pass
class C:
    def __init__(self): pass
    @property
    def p(self):
        """Doc."""
    @p.setter
    def p(self, v): pass
    def m(self): pass
class _D:
    def m(self): pass
'''
    defs = _public_defs(ast.parse(source).body, "x.py")
    assert [(d.name, d.documented) for d in defs] == [
        ("f", True), ("g", False), ("C", False), ("C.p", True), ("C.m", False)]
    cycle = {"a": {"b": [3]}, "b": {"a": [9]}, "c": {"a": [1]}}
    assert import_cycles(cycle) == [["a", "b"]]
    lazy = ast.parse("def f():\n    import a.b\nif TYPE_CHECKING:\n    import c\n")
    assert [n.names[0].name for n in _imports(lazy)] == ["a.b"]


if __name__ == "__main__":
    print(docstring_report(public_definitions(), worst=200))
    for f in long_functions():
        print(f"long: {f.path}:{f.line} {f.name}: {f.lines} lines")
    g = import_graph()
    print(cycles_report(g, import_cycles(g)) or "no import cycles")
    print("\n".join(f"layer break: {b}" for b in layer_breaks(g)) or "no layer breaks")
