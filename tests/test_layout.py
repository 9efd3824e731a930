"""The import graph: no cycles, and no arrow from a lower layer up into a higher one.

storage/ knows only itself and the project's error types; evaluation/ reads stores and never the model;
domain code never imports Prefect (tasks/ and flows/ are the only Prefect layer).
"""

from __future__ import annotations

import ast
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
PACKAGES = ("steadydepth", "smoother", "storage", "evaluation", "tasks", "flows")


def _module_name(path: Path) -> str:
    parts = path.relative_to(REPO).with_suffix("").parts
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _imports(path: Path) -> set[str]:
    """Project modules imported at module level (imports inside functions are deliberate late imports)."""
    found = set()
    for node in ast.parse(path.read_text()).body:
        names = []
        if isinstance(node, ast.Import):
            names = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names = [node.module]
        found |= {n for n in names if n.split(".")[0] in PACKAGES}
    return found


def _graph() -> dict[str, set[str]]:
    modules = {_module_name(p): p for pkg in PACKAGES for p in (REPO / pkg).rglob("*.py")}
    graph = {}
    for name, path in modules.items():
        # `from a.b import c` may name module a.b.c or attribute c of a.b: resolve to a module we have
        graph[name] = {m if m in modules else m.rsplit(".", 1)[0] for m in _imports(path)} - {name}
    return graph


def _all_imports(prefix: str) -> set[str]:
    return {m for name, deps in _graph().items() if name.split(".")[0] == prefix for m in deps}


def test_no_import_cycles() -> None:
    graph = _graph()
    state: dict[str, int] = {}  # 1 = on the current path, 2 = done

    def visit(node: str, path: list[str]) -> None:
        state[node] = 1
        for dep in sorted(graph.get(node, ())):
            if state.get(dep) == 1:
                cycle = path[path.index(dep):] + [dep] if dep in path else [node, dep]
                raise AssertionError("import cycle: " + " -> ".join(cycle))
            if dep not in state:
                visit(dep, [*path, dep])
        state[node] = 2

    for node in sorted(graph):
        if node not in state:
            visit(node, [node])


def test_storage_imports_nothing_above_it() -> None:
    allowed = {"steadydepth.errors"}
    upward = {m for m in _all_imports("storage") if m.split(".")[0] != "storage" and m not in allowed}
    assert not upward, f"storage/ imports {sorted(upward)}"


def test_evaluation_never_imports_the_model() -> None:
    assert not {m for m in _all_imports("evaluation") if m.split(".")[0] in ("smoother", "tasks", "flows")}


def test_domain_code_never_imports_prefect_or_the_orchestration_layer() -> None:
    for pkg in ("steadydepth", "smoother", "storage", "evaluation"):
        for path in (REPO / pkg).rglob("*.py"):
            tree = ast.parse(path.read_text())
            top = {n.module.split(".")[0] for n in tree.body if isinstance(n, ast.ImportFrom) and n.module}
            top |= {a.name.split(".")[0] for n in tree.body if isinstance(n, ast.Import) for a in n.names}
            assert not top & {"prefect", "tasks", "flows"}, f"{path.relative_to(REPO)} imports {top & {'prefect'}}"
