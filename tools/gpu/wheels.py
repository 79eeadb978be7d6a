"""Which distributions to ship, and whether what was shipped has what it needs.

``closure`` walks ``Requires-Dist`` of the distributions installed here from some roots,
with markers evaluated for the target, and stops at every distribution the GPU image
already has (``preinstalled.txt``); each one to ship is pinned to the version installed
here, the one the project is tested with. ``unmet`` runs on the GPU machine (the image's
own versions are not known in advance): are the requirements of the distributions
installed in SITE met by what that Python sees?
"""

from __future__ import annotations

import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version

PREINSTALLED = Path(__file__).with_name("preinstalled.txt")


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_preinstalled(path: Path = PREINSTALLED) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        names.update(canon(n) for n in line.split("#", 1)[0].split())
    return names


def _needed(req: Requirement, env: dict, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(roots: list[str], have: set[str], env: dict) -> tuple[dict[str, str], list[str]]:
    """({canonical name: version installed here} to ship, names not installed here)."""
    ship: dict[str, str] = {}
    missing: list[str] = []
    todo = [Requirement(r) for r in roots]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req = todo.pop()
        name, extras = canon(req.name), frozenset(req.extras)
        if name in have or (name, extras) in seen:
            continue
        seen.add((name, extras))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        ship[name] = dist.version
        todo += [sub for sub in map(Requirement, dist.requires or []) if _needed(sub, env, set(extras))]
    return ship, sorted(set(missing))


def unmet(site: str | Path, python: str | None = None, skip: set[str] = frozenset()) -> list[str]:
    """One line per requirement of a distribution in ``site`` that nothing visible meets
    (``site`` first, then this Python's path); markers for ``python`` where given."""
    env = default_environment()
    if python:
        env.update(python_version=python, python_full_version=f"{python}.0")
    search, skip = [str(site), *sys.path], {canon(s) for s in skip}
    problems = set()
    for dist in md.distributions(path=[str(site)]):
        name = dist.metadata["Name"]
        if canon(name) in skip:
            continue
        for req in map(Requirement, dist.requires or []):
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            found = next(iter(md.distributions(name=req.name, path=search)), None)
            if found is None:
                problems.add(f"{name} needs {req}: not installed")
                continue
            try:
                ok = req.specifier.contains(Version(found.version), prereleases=True)
            except InvalidVersion:
                ok = True
            if not ok:
                problems.add(f"{name} needs {req}: found {found.version}")
    return sorted(problems)
