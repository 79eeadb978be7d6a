"""End to end: copy the repo, `dvc repro` the tiny profile, check metrics, then a clean status."""

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[2]
pytestmark = pytest.mark.slow


def run(cmd, cwd, timeout=1200):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}"}
    out = subprocess.run(cmd, cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert out.returncode == 0, f"{' '.join(cmd)} failed:\n{out.stdout[-3000:]}\n{out.stderr[-5000:]}"
    return out.stdout


def project_files() -> list[str]:
    out = subprocess.run(["git", "ls-files", "--cached", "--others", "--exclude-standard"],
                         cwd=ROOT, capture_output=True, text=True, check=True).stdout.split()
    return [f for f in out if (ROOT / f).is_file()]


@pytest.fixture(scope="module")
def repo(tmp_path_factory):
    dst = tmp_path_factory.mktemp("repo")
    for rel in project_files():
        target = dst / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / rel, target)
    shutil.copy2(ROOT / "profiles/tiny.yaml", dst / "params.yaml")
    (dst / "dvc.lock").unlink(missing_ok=True)
    for cmd in (["git", "init", "-q"], ["git", "add", "-A"],
                ["git", "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "copy"]):
        run(cmd, dst)
    run(["dvc", "repro"], dst)
    return dst


def test_repro_writes_metrics(repo):
    prep = json.loads((repo / "metrics/prepare.json").read_text())
    assert set(prep["train"]) == {"coin_flip", "multistep_arithmetic"}
    teacher = json.loads((repo / "metrics/teacher.json").read_text())
    assert teacher["kept"] == sum(prep["train"].values())
    assert teacher["dropped"] == {}
    lines = (repo / "data/rationales/train.jsonl").read_text().splitlines()
    assert len(lines) == teacher["kept"]
    assert all(json.loads(ln)["correct"] for ln in lines)


METHODS = ["answer_only", "pre_thinking", "step_by_step", "post_thinking", "pst"]


def test_every_method_trained_evaluated_and_reported(repo):
    shown = json.loads(run(["dvc", "metrics", "show", "--json"], repo))
    files = next(iter(shown.values()))["data"]
    for m in METHODS:
        metrics = files[f"metrics/{m}.json"]["data"]
        assert 0.0 <= metrics["accuracy_flexible"] <= 1.0 and metrics["n"] == 6
        assert set(metrics["tasks"]) == {"coin_flip", "multistep_arithmetic"}
        assert metrics["generated_tokens_per_question"] > 0
        assert (repo / "models" / m / "config.json").exists()
    assert (repo / "models/pst/semantic_head.safetensors").exists()
    report = (repo / "reports/report.md").read_text()
    assert all(m in report for m in METHODS)
    assert (repo / "reports/accuracy.png").stat().st_size > 1000


def test_second_repro_is_a_noop_and_status_clean(repo):
    out = run(["dvc", "repro"], repo)
    assert "didn't change, skipping" in out or "is cached" in out
    assert "Running stage" not in out
    status = run(["dvc", "status"], repo)
    assert "up to date" in status, status
