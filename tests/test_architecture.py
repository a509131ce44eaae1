"""The package's shape (issue 10): no import cycle between mfsched's modules, and no two public
classes with one name. Both read the source (``ast``), so they cost nothing to run and cannot
be fooled by import order."""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

import mfsched

SRC = Path(mfsched.__file__).resolve().parent


def _modules() -> dict[str, Path]:
    out = {}
    for path in SRC.rglob("*.py"):
        parts = path.relative_to(SRC.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _module_imports(name: str, path: Path, modules: dict[str, Path]) -> set[str]:
    """The mfsched modules ``name`` imports when it is imported (module level, outside
    ``if TYPE_CHECKING``; imports inside functions run later and cannot make a cycle)."""
    package = name if path.name == "__init__.py" else name.rpartition(".")[0]
    out = set()
    for node in ast.parse(path.read_text()).body:
        if isinstance(node, ast.ImportFrom):
            base = package.rsplit(".", node.level - 1)[0] if node.level else ""
            target = ".".join(p for p in (base, node.module) if p)
            for alias in node.names:
                sub = f"{target}.{alias.name}"
                out.add(sub if sub in modules else target)
        elif isinstance(node, ast.Import):
            out.update(a.name for a in node.names)
    return {m for m in out if m in modules and m != name}


def test_the_import_graph_has_no_cycle():
    modules = _modules()
    graph = {name: _module_imports(name, path, modules) for name, path in modules.items()}
    assert len(graph) > 80 and graph["mfsched.sim.engine"]  # the walk found the package
    done: set[str] = set()
    cycles = []

    def visit(name: str, stack: list[str]) -> None:
        if name in stack:
            cycles.append([*stack[stack.index(name):], name])
            return
        if name in done:
            return
        for dep in sorted(graph[name]):
            visit(dep, [*stack, name])
        done.add(name)

    for name in sorted(graph):
        visit(name, [])
    assert not cycles, " -> ".join(cycles[0])


def test_no_two_public_classes_share_a_name():
    where: dict[str, list[str]] = defaultdict(list)
    for name, path in _modules().items():
        for node in ast.parse(path.read_text()).body:
            if isinstance(node, ast.ClassDef) and not node.name.startswith("_"):
                where[node.name].append(name)
    assert len(where) > 50
    assert {cls: mods for cls, mods in where.items() if len(mods) > 1} == {}
