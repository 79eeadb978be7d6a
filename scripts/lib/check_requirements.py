"""Are the requirements of the distributions installed in SITE met by what this Python
sees (SITE first, then its own packages)? The GPU image's own versions are not known in
advance, so scripts/gpu_check.sh asks there.

    python scripts/lib/check_requirements.py SITE [--python 3.12] [--skip NAME ...]

Prints one line per unmet requirement and exits 1 if there is any.
"""

from __future__ import annotations

import argparse
import importlib.metadata as md
import sys

from packaging.markers import default_environment
from packaging.requirements import Requirement
from packaging.version import InvalidVersion, Version


def unmet(site: str, python: str | None, skip: set[str] = frozenset()) -> list[str]:
    env = default_environment()
    if python:
        env.update(python_version=python, python_full_version=f"{python}.0")
    search = [site, *sys.path]
    problems = []
    for dist in md.distributions(path=[site]):
        if dist.metadata["Name"].lower() in skip:
            continue
        for text in dist.requires or []:
            req = Requirement(text)
            if req.marker is not None and not req.marker.evaluate({**env, "extra": ""}):
                continue
            found = next(iter(md.distributions(name=req.name, path=search)), None)
            if found is None:
                problems.append(f"{dist.metadata['Name']} needs {req}: not installed")
                continue
            try:
                ok = req.specifier.contains(Version(found.version), prereleases=True)
            except InvalidVersion:
                ok = True
            if not ok:
                problems.append(f"{dist.metadata['Name']} needs {req}: found {found.version}")
    return sorted(set(problems))


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("site")
    ap.add_argument("--python", help="evaluate markers for this Python version (a dry run)")
    ap.add_argument("--skip", action="append", default=[],
                    help="a distribution whose declared requirements are not used")
    args = ap.parse_args()
    problems = unmet(args.site, args.python, {s.lower() for s in args.skip})
    n = len(list(md.distributions(path=[args.site])))
    for line in problems:
        print(f"unmet: {line}")
    print(f"requirements of {n} shipped distributions: {'ok' if not problems else f'{len(problems)} unmet'}")
    return 1 if problems else 0


if __name__ == "__main__":
    raise SystemExit(main())
