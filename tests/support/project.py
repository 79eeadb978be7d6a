"""Test support: a copy of the project as a fresh git + DVC repo, and DVC run inside it.

``copy_project(dst, params)`` copies every file git would commit (tracked and untracked, not
ignored), writes ``params`` as params.yaml, drops dvc.lock and commits, so ``dvc repro`` in
the copy runs the copy's own code (``PYTHONPATH`` points at its ``src``). With ``dvc_cache``
(the session's ``dvc_cache`` fixture) the copies share one DVC cache, run-cache included: a
stage that another copy already ran with the same code, params and inputs is restored, not
run again, as it would be for a teammate sharing a cache.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[2]


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (ROOT / f).is_file()]


def profile(name: str) -> dict:
    """``profiles/<name>.yaml`` as a dict (the tests' starting params)."""
    return yaml.safe_load((ROOT / "profiles" / f"{name}.yaml").read_text())


def copy_project(dst: Path, params: dict, dvc_cache: Path | None = None) -> Path:
    dst.mkdir(parents=True, exist_ok=True)
    for rel in project_files():
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, dst / rel)
    write_params(dst, params)
    if dvc_cache is not None:  # the local config: git-ignored by .dvc/.gitignore
        (dst / ".dvc" / "config.local").write_text(f"[cache]\n    dir = {dvc_cache}\n")
    (dst / "dvc.lock").unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        subprocess.run(cmd, cwd=dst, check=True, capture_output=True)
    return dst


def write_params(repo: Path, params: dict) -> None:
    (repo / "params.yaml").write_text(yaml.safe_dump(params, sort_keys=False))


def dvc_env(repo: Path, **extra: str) -> dict:
    return {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
            "PYTHONPATH": str(Path(repo) / "src"), **extra}


def dvc(args: list[str], repo: Path, env: dict | None = None, **popen) -> subprocess.Popen:
    """``dvc ARGS`` in ``repo``, stdout and stderr together, not waited for."""
    return subprocess.Popen(["dvc", *args], cwd=repo, env=env or dvc_env(repo),
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, **popen)


def run_dvc(args: list[str], repo: Path, ok: bool = True, timeout: float = 1200,
            env: dict | None = None) -> tuple[int, str]:
    """``dvc ARGS`` to the end: (exit code, output); with ``ok``, a non-zero exit fails."""
    proc = dvc(args, repo, env)
    out, _ = proc.communicate(timeout=timeout)
    if ok:
        assert proc.returncode == 0, f"dvc {' '.join(args)} failed:\n{out[-5000:]}"
    return proc.returncode, out
