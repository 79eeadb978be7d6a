"""The package's shape: no import circle, and no upward import (a leaf or the config never
imports a stage's wing; a wing imports only the leaves, the config, itself and the earlier
wings it reads). Static, from every import statement (function-level ones included)."""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path

import pytest
from test_dvc_deps import PACKAGE, SRC, imported_names, module_file, module_name

WINGS = ("tasks", "teacher", "assemble", "embed", "train", "evaluate", "report")
# the earlier wings a wing may read: training joins its rows to the embeddings; the report
# routes the adaptive student's evaluated modes
READS = {"train": {"embed"}, "report": {"evaluate"}}
TOOLS = {f"{PACKAGE}.__main__", f"{PACKAGE}.timings"}  # commands, imported by no stage


def modules() -> dict[str, Path]:
    return {module_name(p): p for p in sorted((SRC / PACKAGE).rglob("*.py"))}


@lru_cache(maxsize=None)
def graph() -> dict[str, set[str]]:
    """module -> the package's modules it imports (the named ones, not their parents)."""
    out = {}
    for name, path in modules().items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        targets = set()
        for imported in imported_names(path, package):
            if imported.split(".")[0] == PACKAGE and module_file(imported) is not None:
                targets.add(imported)
        out[name] = targets - {name}
    return out


def wing(module: str) -> str | None:
    parts = module.split(".")
    return parts[1] if len(parts) > 1 and parts[1] in WINGS else None


def find_circle(g: dict[str, set[str]]) -> list[str] | None:
    """One import circle of ``g`` (depth-first search), or None."""
    state: dict[str, str] = {}
    path: list[str] = []

    def visit(node: str) -> list[str] | None:
        state[node] = "open"
        path.append(node)
        for nxt in sorted(g.get(node, ())):
            if state.get(nxt) == "open":
                return path[path.index(nxt):] + [nxt]
            if nxt not in state and (found := visit(nxt)):
                return found
        path.pop()
        state[node] = "done"
        return None

    return next((c for n in sorted(g) if n not in state and (c := visit(n))), None)


def test_no_import_circle():
    circle = find_circle(graph())
    assert circle is None, "import circle: " + " -> ".join(circle)


def upward_imports(module: str, g: dict[str, set[str]]) -> list[str]:
    if module in TOOLS:
        return []
    own = wing(module)
    allowed = {own, *READS.get(own, ())} if own else set()
    return sorted(t for t in g.get(module, ()) if wing(t) and wing(t) not in allowed)


@pytest.mark.parametrize("module", sorted(modules()))
def test_no_upward_import(module):
    upward = upward_imports(module, graph())
    assert not upward, f"{module} imports the wing(s) of other stages: {upward}"


def test_the_checker_finds_a_circle_and_an_upward_import():
    assert find_circle({"pst_distill.a": {"pst_distill.b"}, "pst_distill.b": {"pst_distill.c"},
                        "pst_distill.c": {"pst_distill.a"}}) == [
        "pst_distill.a", "pst_distill.b", "pst_distill.c", "pst_distill.a"]
    assert find_circle({"pst_distill.a": {"pst_distill.b"}, "pst_distill.b": set()}) is None
    g = {"pst_distill.formats": {"pst_distill.train.loop"},
         "pst_distill.evaluate.run": {"pst_distill.train.model"},
         "pst_distill.report.build": {"pst_distill.evaluate.routing"}}
    assert upward_imports("pst_distill.formats", g) == ["pst_distill.train.loop"]
    assert upward_imports("pst_distill.evaluate.run", g) == ["pst_distill.train.model"]
    assert upward_imports("pst_distill.report.build", g) == []  # the report reads routing
