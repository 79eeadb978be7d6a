"""The experiment's copy of the project: every file git would commit (tracked, and
untracked but not ignored; without .git, the tree minus the usual ignores), without the
pipeline's committed outputs, the profile (or its dry-run derivation) as params.yaml,
validated with the copy's own code, then made a git + DVC repo of its own.

    python -m tools.gpu workcopy ROOT REPO --profile FILE [--dry-run]

Run as a step, with PYTHONPATH at REPO/src: the copy's pst_distill, not an installed one.
"""

from __future__ import annotations

import argparse
import importlib
import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

from tools.gpu.dryrun import write_dry_params

# not the project's, where there is no git to ask
PRUNE = {".git", ".venv", ".venv-vllm", ".gpu_bundle", ".cache", "build", ".whl", "__pycache__",
         ".pytest_cache"}


def project_files(root: Path) -> list[str]:
    if shutil.which("git") and (root / ".git").exists():
        out = subprocess.run(["git", "ls-files", "-z", "--cached", "--others", "--exclude-standard"],
                             cwd=root, capture_output=True, check=True).stdout
        return [f for f in os.fsdecode(out).split("\0") if f and (root / f).is_file()]
    found = []
    for here, dirs, files in os.walk(root):
        dirs[:] = [d for d in dirs if d not in PRUNE and not d.endswith(".egg-info")]
        found += [os.path.relpath(os.path.join(here, f), root) for f in files]
    return sorted(found)


def pipeline_paths(repo: Path) -> dict[str, str]:
    """dvc.yaml's ``paths`` variables (data/prepared, metrics, reports, ...)."""
    spec = yaml.safe_load((repo / "dvc.yaml").read_text())
    merged = {k: v for entry in spec.get("vars", []) if isinstance(entry, dict)
              for k, v in entry.items()}
    return merged.get("paths", {})


def copy_project(root: Path, repo: Path) -> int:
    files = project_files(root)
    for rel in files:
        (repo / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(root / rel, repo / rel)
    # only this run's outputs may end up in the results
    for rel in ["dvc.lock", ".dvc/cache", ".dvc/tmp", *pipeline_paths(repo).values()]:
        target = repo / rel
        if target.is_dir():
            shutil.rmtree(target)
        else:
            target.unlink(missing_ok=True)
    return len(files)


def validate(repo: Path) -> str:
    """The params against the schema and this machine, by the copy's own code."""
    import pst_distill
    from pst_distill.config.sections import check_file

    where = Path(pst_distill.__path__[0]).resolve()
    if not where.is_relative_to((repo / "src").resolve()):
        raise SystemExit(f"error: pst_distill imported from {where}, not from the copy (PYTHONPATH)")
    check_file(repo / "params.yaml")
    return f"params ok; pst_distill from {where}"


def make_repo(repo: Path) -> None:
    def run(*cmd: str) -> None:
        subprocess.run(cmd, cwd=repo, check=True)

    if shutil.which("git"):
        run("git", "init", "-q")
        run("git", "add", "-A")
        run("git", "-c", "user.email=gpu@experiment", "-c", "user.name=gpu-experiment",
            "commit", "-qm", "experiment copy")
    else:
        run("dvc", "config", "--local", "core.no_scm", "true")
    run("dvc", "config", "--local", "core.check_update", "false")
    run("dvc", "config", "--local", "cache.type", "reflink,hardlink,copy")  # no second copy of a model


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu workcopy",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("root", type=Path)
    ap.add_argument("repo", type=Path)
    ap.add_argument("--profile", type=Path, required=True)
    ap.add_argument("--dry-run", action="store_true", help="the profile's CPU-sized derivation")
    args = ap.parse_args(argv)
    args.repo.mkdir(parents=True, exist_ok=True)
    n = copy_project(args.root, args.repo)
    if args.dry_run:
        write_dry_params(args.profile, args.repo / "params.yaml")
    else:
        shutil.copy2(args.profile, args.repo / "params.yaml")
    importlib.invalidate_caches()  # REPO/src, on PYTHONPATH, did not exist when this started
    from pst_distill.config import ConfigError  # the copy's, by PYTHONPATH

    try:
        print(validate(args.repo))
    except ConfigError as exc:  # it names every bad key
        print(f"error: {exc}", file=sys.stderr)
        return 2
    make_repo(args.repo)
    print(f"work copy: {args.repo} ({n} files)")
    return 0
