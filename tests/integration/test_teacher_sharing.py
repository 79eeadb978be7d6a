"""Teacher generations that travel with the team through a DVC remote, and survive a change
of the teacher stage's code: two clones of a project copy and a local folder remote, with
the real ``dvc`` CLI and the transformers teacher on the packaged SmolLM2.

* A generates, shares (``python -m pst_distill teacher-share --push``), changes a file of
  the teacher stage and commits; B clones and runs ``dvc repro --pull``: the store arrives
  before the teacher stage runs, B generates nothing, and its outputs equal A's byte for byte.
* A's run is killed (SIGKILL) part-way; A shares what was finished; B generates only the rest.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
from project import copy_project, dvc, dvc_env, profile, run_dvc

pytestmark = [pytest.mark.model, pytest.mark.dvc]
STAGE = "generate_rationales"
OUTS = ("data/rationales/generations.jsonl", "data/rationales/train.jsonl")


def params() -> dict:
    p = profile("tiny")
    p["prepare"] = {"test_frac": 0.25, "tasks": [
        {"name": "multistep_arithmetic", "n": 8, "options": {"steps": 1, "max_value": 9}}]}
    p["teacher"] = {"backend": "transformers", "max_new_tokens": 12, "batch_size": 1,
                    "device": "cpu", "only_correct": False, "cache": {"flush_s": 0}}
    return p


def sh(repo: Path, *cmd: str) -> str:
    env = dvc_env(repo, OMP_NUM_THREADS="1")
    done = subprocess.run(cmd, cwd=repo, env=env, capture_output=True, text=True, timeout=600)
    assert done.returncode == 0, f"{' '.join(cmd)}:\n{done.stdout[-2000:]}\n{done.stderr[-3000:]}"
    return done.stdout + done.stderr


def share(repo: Path) -> str:
    return sh(repo, sys.executable, "-m", "pst_distill", "teacher-share", "--push")


def clone(a: Path, dest: Path, remote: Path) -> Path:
    subprocess.run(["git", "clone", "-q", str(a), str(dest)], check=True, capture_output=True)
    sh(dest, "dvc", "remote", "add", "-f", "-d", "team", str(remote))
    return dest


def questions(repo: Path) -> int:
    """Training questions prepared: one greedy generation each."""
    return len((repo / "data/prepared/train.jsonl").read_text().splitlines())


def teacher_log(repo: Path) -> dict:
    return json.loads((repo / "logs/teacher.json").read_text())


def new_repo(root: Path, name: str) -> tuple[Path, Path]:
    a, remote = copy_project(root / name, params()), root / f"{name}-remote"
    sh(a, "dvc", "remote", "add", "-d", "team", str(remote))
    sh(a, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qam", "remote")
    return a, remote


def commit_all(repo: Path, message: str) -> None:
    sh(repo, "git", "add", "-A")
    sh(repo, "git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", message)


@pytest.fixture(scope="module")
def first(tmp_path_factory) -> tuple[Path, Path, dict[str, bytes]]:
    """A's uninterrupted run: the repo, its remote, and its outputs as they were then."""
    a, remote = new_repo(tmp_path_factory.mktemp("first"), "a")
    run_dvc(["repro", STAGE], a, env=dvc_env(a, OMP_NUM_THREADS="1"))
    return a, remote, {path: (a / path).read_bytes() for path in OUTS}


def test_a_code_change_regenerates_nothing_a_teammate_pulled(tmp_path, first):
    a, remote, outputs = first
    items = questions(a)
    assert teacher_log(a)["cache"]["written"] == items > 0
    assert f"{items} generations in the store" in share(a)
    generate = a / "src/pst_distill/teacher/generate.py"  # a teacher-stage dependency
    generate.write_text(generate.read_text() + "\n# a comment: the code changed\n")
    commit_all(a, "generations shared; teacher code changed")

    b = clone(a, tmp_path / "b", remote)
    _, out = run_dvc(["repro", "--pull", STAGE], b, env=dvc_env(b, OMP_NUM_THREADS="1"))
    assert "Running stage 'generate_rationales'" in out  # its code changed: it runs ...
    stats = teacher_log(b)["cache"]
    assert stats["written"] == 0 and stats["hits"] == items, stats  # ... and generates nothing
    for path in OUTS:
        assert (b / path).read_bytes() == outputs[path], path


def test_what_a_killed_run_finished_and_shared_is_not_generated_again(tmp_path, first):
    a, remote = new_repo(tmp_path, "a")
    run_dvc(["repro", "prepare_data"], a, env=dvc_env(a))
    items = questions(a)
    proc = dvc(["repro", STAGE], a, env=dvc_env(a, OMP_NUM_THREADS="1"), start_new_session=True)
    cache = a / ".cache/teacher"
    deadline = time.monotonic() + 300
    while len(list(cache.glob("*.idx"))) < 2:  # two generations on disk
        assert proc.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.05)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    share(a)
    kept = teacher_generations(a / "data/teacher_store")
    assert 2 <= kept < items, kept
    commit_all(a, "what the killed run finished, shared")

    b = clone(a, tmp_path / "b", remote)
    run_dvc(["repro", "--pull", STAGE], b, env=dvc_env(b, OMP_NUM_THREADS="1"))
    stats = teacher_log(b)["cache"]
    assert stats["hits"] == kept and stats["written"] == items - kept, stats
    for path in OUTS:  # the same outputs as an uninterrupted run
        assert (b / path).read_bytes() == first[2][path], path


def teacher_generations(store: Path) -> int:
    from pst_distill.teacher.cache import GenerationCache

    return len(GenerationCache(None, read=[store]).keys())
