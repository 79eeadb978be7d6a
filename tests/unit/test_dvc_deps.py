"""dvc.yaml lists, for every stage, exactly the library modules its script can import.

DVC hashes files, not imports: a module a stage imports but does not list can change
without DVC re-running the stage (stale outputs), and a listed module it never imports
re-runs it for nothing. The import closure of each stage script inside ``pst_distill`` is
built statically (``ast``: every import statement, function-level ones included, minus
``if TYPE_CHECKING:`` blocks; ``from pkg import name`` counts the submodule ``pkg/name.py``
when there is one; importing a module runs its packages' ``__init__.py``) and compared with
the stage's ``src/pst_distill/`` and ``stages/`` deps; a folder dep covers every file in it.
"""

from __future__ import annotations

import ast
import re
from functools import lru_cache
from pathlib import Path

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
SRC = ROOT / "src"
PACKAGE = "pst_distill"
CHECKED = ("src/pst_distill/", "stages/")


# ------------------------------------------------------------------ import closure
def module_file(name: str) -> Path | None:
    """The file of a ``pst_distill`` module or package, or None if there is none."""
    base = SRC.joinpath(*name.split("."))
    for candidate in (base.with_suffix(".py"), base / "__init__.py"):
        if candidate.is_file():
            return candidate
    return None


def module_name(path: Path) -> str:
    parts = list(path.relative_to(SRC).with_suffix("").parts)
    return ".".join(parts[:-1] if parts[-1] == "__init__" else parts)


def _is_type_checking(node: ast.AST) -> bool:
    test = node.test if isinstance(node, ast.If) else None
    return (isinstance(test, ast.Name) and test.id == "TYPE_CHECKING") or (
        isinstance(test, ast.Attribute) and test.attr == "TYPE_CHECKING")


def _walk(node: ast.AST):
    """ast.walk without the bodies of ``if TYPE_CHECKING:`` (never run)."""
    yield node
    for child in ast.iter_child_nodes(node):
        if _is_type_checking(child):
            for sub in child.orelse:
                yield from _walk(sub)
            continue
        yield from _walk(child)


def imported_names(path: Path, package: str) -> set[str]:
    """Absolute module names a file imports (``from a import b`` gives a and a.b)."""
    names: set[str] = set()
    for node in _walk(ast.parse(path.read_text(), filename=str(path))):
        if isinstance(node, ast.Import):
            names.update(alias.name for alias in node.names)
        elif isinstance(node, ast.ImportFrom):
            if node.level:  # relative: from the file's package upwards
                base = package.split(".")[: len(package.split(".")) - node.level + 1]
                mod = ".".join(base + ([node.module] if node.module else []))
            else:
                mod = node.module or ""
            names.add(mod)
            names.update(f"{mod}.{alias.name}" for alias in node.names)
    return names


def with_parents(name: str) -> list[str]:
    parts = name.split(".")
    return [".".join(parts[:i]) for i in range(1, len(parts) + 1)]


@lru_cache(maxsize=None)
def closure(script: Path) -> frozenset[Path]:
    """Every file of ``pst_distill`` that importing ``script`` can run, and the script."""
    seen: set[Path] = {script}
    todo = [(script, "")]
    while todo:
        path, package = todo.pop()
        for name in imported_names(path, package):
            if name.split(".")[0] != PACKAGE:
                continue
            for mod in with_parents(name):
                found = module_file(mod)
                if found is not None and found not in seen:
                    seen.add(found)
                    pkg = mod if found.name == "__init__.py" else mod.rpartition(".")[0]
                    todo.append((found, pkg))
    return frozenset(seen)


# ------------------------------------------------------------------ dvc.yaml
def _resolve(text: str, paths: dict) -> str:
    text = re.sub(r"\$\{paths\.(\w+)\}", lambda m: paths[m.group(1)], text)
    return text.replace("${key}", "KEY")  # foreach stages: the key only names data files


def stage_deps() -> dict[str, tuple[Path, list[str]]]:
    """stage -> (its script, its deps under src/pst_distill/ and stages/)."""
    dvc = yaml.safe_load((ROOT / "dvc.yaml").read_text())
    paths = next(v["paths"] for v in dvc.get("vars", []) if isinstance(v, dict) and "paths" in v)
    out = {}
    for name, stage in dvc["stages"].items():
        body = stage.get("do", stage)
        cmd = _resolve(" ".join(body["cmd"]) if isinstance(body["cmd"], list) else body["cmd"],
                       paths)
        script = re.search(r"\bstages/\w+\.py\b", cmd)
        assert script, f"{name}: no stages/<script>.py in its cmd: {cmd}"
        deps = [_resolve(d if isinstance(d, str) else next(iter(d)), paths).rstrip("/")
                for d in body.get("deps", [])]
        out[name] = (ROOT / script.group(0), [d for d in deps if d.startswith(CHECKED)])
    return out


def covers(dep: str, rel: str) -> bool:
    return rel == dep or rel.startswith(dep + "/")


STAGES = stage_deps()


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_stage_deps_are_its_import_closure(stage):
    script, deps = STAGES[stage]
    needed = sorted(p.relative_to(ROOT).as_posix() for p in closure(script))
    missing = [f for f in needed if not any(covers(d, f) for d in deps)]
    stale = [d for d in deps if not any(covers(d, f) for f in needed)]
    problems = []
    if missing:
        problems.append(f"imported but not in deps (DVC would not re-run {stage} when they "
                        f"change): {', '.join(missing)}")
    if stale:
        problems.append(f"in deps but never imported (re-runs {stage} for nothing): "
                        f"{', '.join(stale)}")
    assert not problems, f"dvc.yaml stage {stage}:\n  " + "\n  ".join(problems)


# ------------------------------------------------------------------ what a stage may depend on
# the params sections each stage reads (besides common): its own schema modules
OWN_SECTIONS = {"prepare_data": {"prepare"}, "generate_rationales": {"teacher"},
                "assemble_dataset": {"assemble"}, "embed_rationales": {"embed"},
                "train_student": {"train"}, "evaluate_student": {"evaluate"},
                "report": {"report", "adaptive"}, "teacher_store": set()}
SHARED_CONFIG = {"__init__", "base", "common", "machine"}  # the root, its base, common, probes
WINGS = ("tasks", "teacher", "assemble", "embed", "train", "evaluate", "report")
WING_OF = {"prepare_data": "tasks", "generate_rationales": "teacher",
           "assemble_dataset": "assemble", "embed_rationales": "embed",
           "train_student": "train", "evaluate_student": "evaluate", "report": "report",
           "teacher_store": None}  # makes a folder: imports nothing of the library
# a later stage may use an earlier wing's reader (train joins embeddings; report routes)
MAY_READ = {"train_student": {"embed"}, "report": {"evaluate"}}


def _config_modules(script: Path) -> set[str]:
    return {p.stem for p in closure(script)
            if p.parent == SRC / PACKAGE / "config"}


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_depends_on_its_own_config_section_only(stage):
    """Editing one section's schema re-runs only the stages that read that section."""
    script, _ = STAGES[stage]
    others = _config_modules(script) - SHARED_CONFIG - OWN_SECTIONS[stage]
    assert not others, f"{stage} imports other sections' schemas: {sorted(others)}"
    assert OWN_SECTIONS[stage] <= _config_modules(script)


@pytest.mark.parametrize("stage", sorted(STAGES))
def test_a_stage_imports_its_own_wing_and_no_later_one(stage):
    script, _ = STAGES[stage]
    wings = {p.relative_to(SRC / PACKAGE).parts[0] for p in closure(script)
             if p.is_relative_to(SRC / PACKAGE) and p.parent != SRC / PACKAGE}
    wings &= set(WINGS)
    assert WING_OF[stage] is None or WING_OF[stage] in wings
    extra = wings - {WING_OF[stage]} - MAY_READ.get(stage, set())
    assert not extra, f"{stage} imports the wings of other stages: {sorted(extra)}"


# ------------------------------------------------------------------ the checker itself
def test_closure_follows_function_level_and_from_imports(tmp_path):
    train = closure(ROOT / "stages/train_student.py")
    rel = {p.relative_to(ROOT).as_posix() for p in train}
    # the stage imports the training loop inside main(); the train schema imports the
    # machine probes; both must be found
    assert "src/pst_distill/train/loop.py" in rel
    assert "src/pst_distill/config/machine.py" in rel
    prep = {p.relative_to(ROOT).as_posix() for p in closure(ROOT / "stages/prepare_data.py")}
    assert "src/pst_distill/tasks/__init__.py" in prep  # a package runs its __init__
    assert "src/pst_distill/tasks/generators.py" in prep
    # config (read by every stage) stays narrow: the generators are not everyone's dep
    assert "src/pst_distill/tasks/generators.py" not in rel


def test_type_checking_imports_are_not_run():
    tree = ast.parse("from typing import TYPE_CHECKING\nif TYPE_CHECKING:\n"
                     "    import pst_distill.train.loop\nelse:\n    import pst_distill.io\n")
    names = {n.names[0].name for n in _walk(tree) if isinstance(n, ast.Import)}
    assert names == {"pst_distill.io"}


def test_a_folder_dep_covers_its_files_only():
    assert covers("src/pst_distill/teacher", "src/pst_distill/teacher/base.py")
    assert not covers("src/pst_distill/teacher", "src/pst_distill/teacher_extra.py")
