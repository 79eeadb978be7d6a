"""The Python distributions a GPU run needs that the GPU image lacks, pinned to the versions
installed in this environment (the ones the project is tested with).

    python scripts/lib/wheel_closure.py [--python 3.12] [--preinstalled FILE] NAME[extra] ...

Walks ``Requires-Dist`` of the installed distributions from the named roots, evaluating
markers for the target Python on Linux x86-64, and stops at every distribution the image
already has. Prints ``name==version`` lines (one per distribution to ship) on stdout and
the reasons on stderr. Exits 1 when a needed distribution is not installed here (its
version cannot be pinned).
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import re
import sys
from pathlib import Path

from packaging.markers import default_environment
from packaging.requirements import Requirement


def canon(name: str) -> str:
    return re.sub(r"[-_.]+", "-", name).lower()


def read_preinstalled(path: Path) -> set[str]:
    names = set()
    for line in path.read_text(encoding="utf-8").splitlines():
        line = line.split("#", 1)[0]
        names.update(canon(n) for n in line.split())
    return names


def target_env(python: str) -> dict:
    env = default_environment()
    env.update({"python_version": python, "python_full_version": f"{python}.0",
                "implementation_name": "cpython", "platform_python_implementation": "CPython",
                "sys_platform": "linux", "platform_system": "Linux", "os_name": "posix",
                "platform_machine": "x86_64"})
    return env


def needed(req: Requirement, env: dict, extras: set[str]) -> bool:
    if req.marker is None:
        return True
    return any(req.marker.evaluate({**env, "extra": e}) for e in (extras or {""}))


def closure(roots: list[str], have: set[str], env: dict) -> tuple[dict[str, str], list[str]]:
    """{canonical name: installed version} to ship, and the names not installed here."""
    ship: dict[str, str] = {}
    missing: list[str] = []
    todo = [(Requirement(r), set()) for r in roots]
    seen: set[tuple[str, frozenset]] = set()
    while todo:
        req, _ = todo.pop()
        name, extras = canon(req.name), set(req.extras)
        if name in have or (name, frozenset(extras)) in seen:
            continue
        seen.add((name, frozenset(extras)))
        try:
            dist = md.distribution(name)
        except md.PackageNotFoundError:
            missing.append(name)
            continue
        ship[name] = dist.version
        for sub in dist.requires or []:
            sub_req = Requirement(sub)
            if needed(sub_req, env, extras):
                todo.append((sub_req, set()))
    return ship, missing


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("roots", nargs="+", help="requirements, e.g. dvc pydantic gguf")
    ap.add_argument("--python", default="3.12")
    ap.add_argument("--preinstalled", type=Path,
                    default=Path(__file__).with_name("gpu_preinstalled.txt"))
    args = ap.parse_args()
    ship, missing = closure(args.roots, read_preinstalled(args.preinstalled), target_env(args.python))
    for name in sorted(ship):
        print(f"{name}=={ship[name]}")
    if missing:
        print(f"not installed here (cannot pin): {', '.join(sorted(missing))}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
