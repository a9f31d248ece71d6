"""The engine's arrows run one way: model → vectors → trace → comparison → widgets.

Walks every ``explorer`` module's imports (top-level and inside functions) with ``ast``, so a
lazy import cannot hide a cycle, and checks the notebooks use public names only.
"""

from __future__ import annotations

import ast
import json
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
PACKAGE = ROOT / "explorer"

# leaves: module → the only modules of the package it may import
ONLY = {"errors": set(), "hooks": {"errors"}, "stats": {"errors"}, "remote": {"errors"}}
# module → modules of the package it may never import (directly or through others)
NEVER = {
    "models": {"vectors", "tracing", "steering", "decisions", "generation", "comparison", "stats", "headline"},
    "vectors": {"tracing", "steering", "decisions", "generation", "comparison", "headline"},
    "tracing": {"steering", "decisions", "generation", "comparison", "headline"},
    "comparison": {"steering", "decisions", "generation", "headline"},
    "steering": {"stats", "comparison", "tracing", "decisions", "generation"},
    "escalation": {"tracing", "comparison", "controls", "steering", "decisions", "generation", "headline"},
    "controls": {"steering", "decisions", "generation", "headline"},
}


def _imports(path: Path) -> set[str]:
    """Sibling modules of the package that ``path`` imports anywhere in its body."""
    found = set()
    for node in ast.walk(ast.parse(path.read_text())):
        if isinstance(node, ast.ImportFrom) and node.level == 1:
            if node.module:
                found.add(node.module.split(".")[0])
            else:
                found.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom) and (node.module or "").startswith("explorer."):
            found.add(node.module.split(".")[1])
    return found


def graph() -> dict[str, set[str]]:
    modules = {p.stem: p for p in PACKAGE.glob("*.py") if p.stem not in ("__init__", "__main__")}
    return {name: _imports(path) & set(modules) for name, path in modules.items()}


def _reachable(edges: dict[str, set[str]], start: str) -> set[str]:
    seen, todo = set(), list(edges[start])
    while todo:
        node = todo.pop()
        if node not in seen:
            seen.add(node)
            todo += edges.get(node, ())
    return seen


def test_the_import_graph_has_no_cycle():
    edges = graph()
    cycles = [m for m in edges if m in _reachable(edges, m)]
    assert not cycles, f"modules on an import cycle: {sorted(cycles)}"


def test_a_planted_cycle_is_found():
    edges = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": set()}
    assert {m for m in edges if m in _reachable(edges, m)} == {"a", "b", "c"}


@pytest.mark.parametrize("module", sorted(NEVER) + sorted(ONLY))
def test_forbidden_arrows(module):
    edges = graph()
    forbidden = NEVER[module] if module in NEVER else set(edges) - ONLY[module] - {module}
    reached = _reachable(edges, module) & forbidden
    assert not reached, f"explorer.{module} reaches {sorted(reached)}, which it may never import"


def test_the_engine_never_imports_the_widgets():
    for path in PACKAGE.glob("*.py"):
        text = path.read_text()
        assert "import widgets" not in text and "from widgets" not in text, path


def _notebook_sources():
    for path in sorted((ROOT / "notebooks").glob("*.ipynb")):
        cells = json.loads(path.read_text())["cells"]
        yield path.name, "\n".join("".join(c["source"]) for c in cells if c["cell_type"] == "code")


@pytest.mark.parametrize("name,source", list(_notebook_sources()), ids=lambda v: v if v.endswith("ipynb") else "")
def test_notebooks_use_public_names_only(name, source):
    import explorer
    import widgets

    problems = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.ImportFrom) and node.module and node.module.split(".")[0] in ("explorer", "widgets"):
            if node.module not in ("explorer", "widgets"):
                problems.append(f"from {node.module} import …")
            problems += [f"{node.module}.{a.name}" for a in node.names if a.name.startswith("_")]
        elif isinstance(node, ast.Import):
            problems += [
                a.name for a in node.names if a.name.split(".")[0] in ("explorer", "widgets") and "." in a.name
            ]
        elif (
            isinstance(node, ast.Attribute) and isinstance(node.value, ast.Name) and node.value.id in ("ex", "widgets")
        ):
            public = explorer.__all__ if node.value.id == "ex" else widgets.__all__
            if node.attr not in public:
                problems.append(f"{node.value.id}.{node.attr}")
    assert not problems, f"{name} uses names outside the public API: {sorted(set(problems))}"
