"""Imports point one way: v2a_runtime (runtime/) never imports v2a_export, at module level or
inside a function, and neither package's modules import each other in a cycle.

The checks read the source (the AST of every file), so an import hidden in a function body
that no test happens to call is found too.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from pathlib import Path

from conftest import REPO

PACKAGES = {"v2a_runtime": REPO / "runtime", "v2a_export": REPO / "v2a_export"}


def _modules(package: str) -> dict[str, Path]:
    """Module name -> file, for every .py file of ``package``."""
    root = PACKAGES[package]
    out = {}
    for path in sorted(root.rglob("*.py")):
        parts = list(path.relative_to(root).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts = parts[:-1]
        out[".".join([package, *parts])] = path
    return out


def _imports(module: str, path: Path, *, top_level_only: bool = False) -> list[tuple[str, int]]:
    """(absolute module name, line) of every import in the file (or only its module-level
    statements), relative ones resolved."""
    is_package = path.name == "__init__.py"
    tree = ast.parse(path.read_text(encoding="utf-8"), str(path))
    nodes = tree.body if top_level_only else ast.walk(tree)
    found = []
    for node in nodes:
        if isinstance(node, ast.Import):
            found += [(alias.name, node.lineno) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = module.split(".")
                base = base[: len(base) - node.level + (1 if is_package else 0)]
                prefix = ".".join(base)
                name = f"{prefix}.{node.module}" if node.module else prefix
            else:
                name = node.module
            found.append((name, node.lineno))
            # "from pkg import sub" may import the submodule pkg.sub
            found += [(f"{name}.{alias.name}", node.lineno) for alias in node.names]
    return found


def test_the_runtime_never_imports_v2a_export():
    offenders = [
        f"{path.relative_to(REPO)}:{line}: imports {name}"
        for module, path in _modules("v2a_runtime").items()
        for name, line in _imports(module, path)
        if name == "v2a_export" or name.startswith("v2a_export.")
    ]
    assert not offenders, "the runtime must not import the torch side:\n" + "\n".join(offenders)


def test_the_walker_sees_imports_inside_functions(tmp_path):
    source = "def f():\n    from v2a_export.models import configs\n    import v2a_export\n"
    path = tmp_path / "probe.py"
    path.write_text(source)
    names = {n for n, _ in _imports("v2a_runtime.probe", path)}
    assert {"v2a_export.models", "v2a_export"} <= names


def test_no_import_cycles_between_modules():
    """Module-level imports of each package form no cycle (a function-level import may break
    one on purpose, so only module-level statements count here)."""
    graph: dict[str, set[str]] = defaultdict(set)
    modules = {**_modules("v2a_runtime"), **_modules("v2a_export")}
    for module, path in modules.items():
        for name, _ in _imports(module, path, top_level_only=True):
            if name in modules and name != module and not module.startswith(f"{name}."):
                graph[module].add(name)
    cycle = _find_cycle(graph)
    assert cycle is None, "import cycle: " + " -> ".join(cycle or [])


def _find_cycle(graph: dict[str, set[str]]) -> list[str] | None:
    state: dict[str, int] = {}  # 1 on the stack, 2 done
    stack: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = 1
        stack.append(node)
        for nxt in sorted(graph.get(node, ())):
            if state.get(nxt) == 1:
                return stack[stack.index(nxt) :] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        stack.pop()
        state[node] = 2
        return None

    for node in sorted(graph):
        if node not in state and (found := visit(node)):
            return found
    return None
