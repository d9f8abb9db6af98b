"""The import structure of ``core``: no cycles and no upward imports beyond the known, listed ones.

Every ``import`` statement counts, also those inside functions (a lazy import hides a cycle, it does not
remove it); importing a module's own parent package does not (Python does that for every submodule).
"""

from __future__ import annotations

import ast
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

KNOWN_CYCLES: list[set[str]] = []  # none left; a new one fails
KNOWN_UPWARD: set[tuple[str, str]] = set()
LOWER = ("core.data", "core.backbones", "core.bundle", "core.runtime", "core.progress", "core.training",
         "core.distributed", "core.retrieval", "core.results", "core.loaded", "core.settings",
         "core.lazy", "core.atomic")  # fmt: skip
HIGHER = (
    "core.ceir",
    "core.concepthash",
    "core.cli",
    "core.reproduce",
    "core.bench",
    "core.encode",
    "core.kinds",
)


def import_graph() -> dict[str, set[str]]:
    """Module -> the ``core`` modules it imports anywhere in its source."""
    files = {}
    for path in (ROOT / "core").rglob("*.py"):
        name = ".".join(path.relative_to(ROOT).with_suffix("").parts).removesuffix(".__init__")
        files[name] = path
    graph: dict[str, set[str]] = {name: set() for name in files}
    for name, path in files.items():
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                targets = [alias.name for alias in node.names]
            elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
                subs = [f"{node.module}.{a.name}" for a in node.names if f"{node.module}.{a.name}" in files]
                targets = subs if len(subs) == len(node.names) else [node.module, *subs]
            else:
                continue
            graph[name] |= {t for t in targets if t in files and t != name and not name.startswith(t + ".")}
    return graph


def cycles(graph: dict[str, set[str]]) -> list[set[str]]:
    """Strongly connected components with more than one module (Tarjan)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    on_stack: set[str] = set()
    found: list[set[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        on_stack.add(node)
        for target in graph[node]:
            if target not in index:
                visit(target)
                low[node] = min(low[node], low[target])
            elif target in on_stack:
                low[node] = min(low[node], index[target])
        if low[node] == index[node]:
            component = set()
            while True:
                member = stack.pop()
                on_stack.discard(member)
                component.add(member)
                if member == node:
                    break
            if len(component) > 1:
                found.append(component)

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return found


def test_cycle_finder_finds_a_planted_cycle():
    graph = {"a": {"b"}, "b": {"c"}, "c": {"a"}, "d": {"a"}}
    assert cycles(graph) == [{"a", "b", "c"}]
    assert cycles({"a": {"b"}, "b": set()}) == []


def test_core_has_no_new_import_cycles():
    new = [sorted(c) for c in cycles(import_graph()) if c not in KNOWN_CYCLES]
    assert new == [], f"import cycles: {new}"


def test_lower_layers_never_import_higher_ones():
    upward = {
        (module, target)
        for module, targets in import_graph().items()
        if module.startswith(LOWER)
        for target in targets
        if target.startswith(HIGHER)
    }
    assert upward <= KNOWN_UPWARD, sorted(upward - KNOWN_UPWARD)
