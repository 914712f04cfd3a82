"""The package's shape: imports point down the layers of docs/architecture.md, module-level imports form no
cycle, and no module outside `views/` names a particular view (views are reached through their registry and
protocol only)."""

from __future__ import annotations

import ast
from pathlib import Path

import pytest
import torch

from kdlab.views import STANDARD_VIEWS, VIEWS

PACKAGE = Path(__file__).resolve().parents[1] / "kdlab"

# Lowest first; a module may import from its own layer and the layers below it.
LAYERS: list[set[str]] = [
    {"errors", "registry", "io", "faults", "typed_config", "config", "checkpoint", "version"},
    {"data", "models", "metrics", "losses"},
    {"views"},
    {"methods"},
    {"engine"},
    {"assembly", "experiment", "commands", "report", "ui"},
    {"cli", "__main__", "__init__"},
]


def _layer(module: str) -> int:
    top = module.split(".")[1] if module.count(".") else "__init__"
    for i, names in enumerate(LAYERS):
        if top in names:
            return i
    raise AssertionError(f"{module} is in no layer of the test; add it where docs/architecture.md puts it")


def _modules() -> dict[str, Path]:
    out = {}
    for path in PACKAGE.rglob("*.py"):
        parts = path.relative_to(PACKAGE.parent).with_suffix("").parts
        name = ".".join(parts[:-1] if parts[-1] == "__init__" else parts)
        out[name] = path
    return out


def _imports(path: Path, module_level_only: bool) -> set[str]:
    tree = ast.parse(path.read_text())
    nodes = tree.body if module_level_only else list(ast.walk(tree))
    found = set()
    for node in nodes:
        if isinstance(node, ast.ImportFrom) and node.module and node.module.startswith("kdlab"):
            found.add(node.module)
            found.update(f"{node.module}.{a.name}" for a in node.names)
        elif isinstance(node, ast.Import):
            found.update(a.name for a in node.names if a.name.startswith("kdlab"))
    return found


def test_every_import_points_down_or_sideways():
    modules = _modules()
    upward = []
    for name, path in modules.items():
        for target in _imports(path, module_level_only=False):
            if target not in modules:
                continue  # `from kdlab.x import function`: its module is in the set too
            if _layer(target) > _layer(name) and name != "kdlab":
                upward.append(f"{name} → {target}")
    assert not upward, "upward imports: " + ", ".join(sorted(upward))


def test_no_import_cycle_at_module_level():
    modules = _modules()
    graph = {n: {t for t in _imports(p, module_level_only=True) if t in modules and t != n} for n, p in modules.items()}
    # a package's __init__ re-exporting its submodules is not a cycle with them
    graph = {n: {t for t in ts if not n.startswith(t + ".")} for n, ts in graph.items()}
    state: dict[str, int] = {}
    cycle: list[str] = []

    def visit(n: str, stack: list[str]) -> bool:
        state[n] = 1
        for t in graph[n]:
            if state.get(t) == 1:
                cycle.extend([*stack[stack.index(t) :], t] if t in stack else [n, t])
                return True
            if t not in state and visit(t, [*stack, t]):
                return True
        state[n] = 2
        return False

    for n in sorted(graph):
        if n not in state and visit(n, [n]):
            break
    assert not cycle, "import cycle: " + " → ".join(cycle)


@pytest.mark.parametrize("path", sorted(p for p in PACKAGE.rglob("*.py") if "views" not in p.parts), ids=str)
def test_only_views_name_a_view(path):
    view_names = set(VIEWS.names()) - set(STANDARD_VIEWS)  # the config declares the standard views' names
    class_names = {VIEWS.get(n).__name__ for n in view_names} - set(dir(torch.nn))
    tree = ast.parse(path.read_text())
    named = {
        node.value
        for node in ast.walk(tree)
        if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value in view_names
    }
    named |= {node.id for node in ast.walk(tree) if isinstance(node, ast.Name) and node.id in class_names}
    named |= {node.attr for node in ast.walk(tree) if isinstance(node, ast.Attribute) and node.attr in class_names}
    assert not named, f"{path.relative_to(PACKAGE.parent)} names views {sorted(named)}"
