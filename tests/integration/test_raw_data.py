"""Local datasets under data/raw/ are DVC inputs of prepare_data (real DVC, a copy of the repo).

Only ``dvc repro prepare_data`` runs, on a hub-format coin_flip file: cheap, no model.
"""

from __future__ import annotations

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from project import copy_project, profile

pytestmark = pytest.mark.dvc

RAW = "data/raw/coin_flip.jsonl"


def run(cmd: list[str], cwd: Path) -> str:
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-3000:]}"
    return out.stdout


def status(cwd: Path) -> dict:
    """`dvc status --json prepare_data`: {stage or .dvc file: [changes]} for prepare_data and
    what it depends on; {} when they are up to date."""
    return json.loads(run(["dvc", "status", "--json", "prepare_data"], cwd) or "{}")


def commit(cwd: Path, msg: str) -> None:
    run(["git", "add", "-A"], cwd)
    run(["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", msg], cwd)


def flips(names: list[str], flipped: set[str]) -> list[dict]:
    """Rows in skrishna/coin_flip's own layout (inputs/targets)."""
    rows = []
    for i in range(len(names) - 1):
        pair = names[i:i + 2]
        text = " ".join(f"{n} {'flips' if n in flipped else 'does not flip'} the coin." for n in pair)
        heads = sum(n in flipped for n in pair) % 2 == 0
        rows.append({"inputs": f"Q: A coin is heads up. {text} Is the coin still heads up?",
                     "targets": "yes" if heads else "no"})
    return rows


def write_rows(repo: Path, rows: list[dict]) -> None:
    (repo / RAW).write_text("".join(json.dumps(r) + "\n" for r in rows))


def prepared(repo: Path) -> tuple[list[dict], dict]:
    recs = []
    for split in ("train", "test"):
        lines = (repo / f"data/prepared/{split}.jsonl").read_text().splitlines()
        recs += [json.loads(ln) for ln in lines]
    return recs, json.loads((repo / "logs/prepare.json").read_text())


def local_rev(repo: Path) -> str:
    return "local:" + hashlib.sha256((repo / RAW).read_bytes()).hexdigest()


@pytest.fixture
def repo(tmp_path):
    """A git + DVC copy of the project, params = tiny profile with one local hub-format task."""
    params = profile("tiny")
    params["prepare"] = {"test_frac": 0.25, "tasks": [
        {"name": "coin_flip", "source": "hub", "n": 100, "data_files": RAW}]}
    return copy_project(tmp_path / "repo", params)


NAMES = ["ana", "ben", "cy", "dee", "eli", "fay", "gus", "hal", "ivy", "jo"]


def test_changed_local_file_reruns_prepare_data(repo):
    write_rows(repo, flips(NAMES, {"ben", "eli", "hal"}))
    run(["dvc", "add", RAW], repo)
    run(["dvc", "repro", "prepare_data"], repo)
    recs, stats = prepared(repo)
    assert len(recs) == len(NAMES) - 1
    assert stats["sources"]["coin_flip"] == {"source": "hub", "data_files": RAW,
                                             "revision": local_rev(repo)}
    assert status(repo) == {}
    commit(repo, "raw data and prepared")

    # the case: the file replaced by a shorter one with other answers
    write_rows(repo, flips(NAMES[:6], {"ana"}))
    changed = status(repo)
    assert changed == {"prepare_data": [{"changed deps": {"data/raw": "modified"}}]}

    run(["dvc", "repro", "prepare_data"], repo)  # re-adds the file, re-runs the stage
    recs, stats = prepared(repo)
    assert {r["question"]: r["answer"] for r in recs} == {
        r["inputs"].removeprefix("Q: "): r["targets"] for r in flips(NAMES[:6], {"ana"})}
    assert stats["sources"]["coin_flip"]["revision"] == local_rev(repo)
    assert status(repo) == {}


def test_fresh_clone_is_clean(repo, tmp_path):
    """data/raw holds only git files (README) plus what `dvc add` tracks: a fresh clone with
    the cache at hand reports nothing changed."""
    write_rows(repo, flips(NAMES[:4], set()))
    run(["dvc", "add", RAW], repo)
    run(["dvc", "repro", "prepare_data"], repo)
    commit(repo, "prepared")
    clone = tmp_path / "clone"
    run(["git", "clone", "-q", str(repo), str(clone)], tmp_path)
    assert not (clone / RAW).exists()
    run(["dvc", "cache", "dir", "--local", str(repo / ".dvc" / "cache")], clone)
    run(["dvc", "checkout", "--with-deps", "prepare_data"], clone)
    assert status(clone) == {}
