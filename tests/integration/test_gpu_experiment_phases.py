"""The GPU experiment's phases (tools/gpu/experiment.py) with a fake `dvc` first on PATH:
a stage that fails is recorded as failed (dvc's own exit code, no pipeline in between),
the later seeds are skipped, the report covers the seeds every method finished, and the
exit status is non-zero; with no seed finished there is no report and one line says so.
The install, project copy and student steps are replaced (they are the GPU machine's)."""

from __future__ import annotations

import os
import sys
import tarfile

import pytest
import yaml

from tools.gpu import experiment, results, workcopy
from tools.gpu.machine import ROOT

METHODS = ["answer_only", "pst"]
SEEDS = [1, 2, 3]

FAKE_DVC = """\
#!{python}
# prints what `dvc repro` prints, writes each evaluated run's predictions; FAKE_DVC_FAIL
# names a run (e.g. pst-2) whose stage fails after printing its lines
import os, re, sys
from pathlib import Path
args = sys.argv[1:]
with open(os.environ["FAKE_DVC_CALLS"], "a") as f:
    f.write(" ".join(args) + "\\n")
if args[:1] != ["repro"]:
    sys.exit(0)
targets = [a for a in args[1:] if not a.startswith("-")]
if targets == ["embed_rationales"]:
    for stage in ("prepare_data", "generate_rationales", "assemble_dataset", "embed_rationales"):
        print(f"Running stage '{{stage}}':", flush=True)
if any(t.startswith("evaluate_student@") for t in targets):
    import time
    time.sleep(float(os.environ.get("FAKE_DVC_SLEEP", "0")))
for target in targets:
    run = re.fullmatch(r"evaluate_student@(.+)", target)
    if run:
        print(f"Running stage 'train_student@{{run[1]}}':", flush=True)
        if run[1] == os.environ.get("FAKE_DVC_FAIL"):
            print(f"ERROR: failed to reproduce 'train_student@{{run[1]}}'", flush=True)
            sys.exit(1)
        print(f"Running stage 'evaluate_student@{{run[1]}}':", flush=True)
        Path("data/predictions").mkdir(parents=True, exist_ok=True)
        Path(f"data/predictions/{{run[1]}}.jsonl").write_text("{{}}\\n")
if targets in ([], ["report"]):
    print("Running stage 'report':", flush=True)
    Path("reports").mkdir(exist_ok=True)
    Path("reports/report.md").write_text("# Report\\n\\n## Accuracy (flexible)\\n\\n| pst | 0.5 |\\n")
"""


@pytest.fixture
def fake(tmp_path, monkeypatch):
    """The fake dvc on PATH; returns (the experiment's arguments, the file of dvc calls)."""
    bin_dir, calls = tmp_path / "bin", tmp_path / "calls.txt"
    bin_dir.mkdir()
    (bin_dir / "dvc").write_text(FAKE_DVC.format(python=sys.executable))
    (bin_dir / "dvc").chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    monkeypatch.setenv("FAKE_DVC_CALLS", str(calls))

    def prepare(run):  # the work copy, as the workcopy step leaves it
        run.repo.mkdir(parents=True)
        (run.repo / "dvc.yaml").write_text((ROOT / "dvc.yaml").read_text())
        params = {"train": {"methods": {m: {} for m in METHODS}, "seeds": SEEDS}}
        (run.repo / "params.yaml").write_text(yaml.safe_dump(params))
        run.env_text = "python 3.12 | torch (fake)"
        return True

    monkeypatch.setattr(experiment, "prepare", prepare)
    return [str(tmp_path / "out"), "--dry-run", "--budget", "900"], calls


def readme_steps(out) -> dict[str, str]:
    """{step: status} of the README's steps table."""
    text = (out / "README.md").read_text()
    section = text.split("## Steps\n", 1)[1].split("\n## ", 1)[0]
    rows = [line.strip("| ").split(" | ") for line in section.splitlines() if line.startswith("| ")]
    return {r[0]: r[1] for r in rows[1:]}


def test_a_failed_stage_is_failed_the_later_seeds_skipped_and_the_exit_non_zero(
        fake, tmp_path, monkeypatch, capsys):
    args, calls = fake
    monkeypatch.setenv("FAKE_DVC_FAIL", "pst-2")
    assert experiment.main(args) != 0
    out = tmp_path / "out"
    assert readme_steps(out) == {"upstream": "ok", "seed 1": "ok", "seed 2": "failed",
                                 "seed 3": "skipped", "report": "ok"}
    assert calls.read_text().splitlines()[-1] == "repro -s report"  # only the report stage
    assert "evaluate_student@answer_only-3" not in calls.read_text()
    readme = (out / "README.md").read_text()
    assert "report over seed(s) 1: every method finished them; not finished: seed(s) 2, 3" in readme
    assert "| train_student@pst-2 |" in readme  # its seconds, from the stamped log
    assert sorted(p.name for p in (out / "data" / "predictions").iterdir()) == \
        ["answer_only-1.jsonl", "answer_only-2.jsonl", "pst-1.jsonl"]
    log = (out / "experiment.log").read_text()
    assert "ERROR: failed to reproduce 'train_student@pst-2'" in log
    assert "seed 2: failed" in capsys.readouterr().out


def test_no_seed_finished_for_every_method_means_no_report(fake, tmp_path, monkeypatch, capsys):
    args, calls = fake
    monkeypatch.setenv("FAKE_DVC_FAIL", "answer_only-1")
    assert experiment.main(args) != 0
    steps = readme_steps(tmp_path / "out")
    assert steps["seed 1"] == "failed" and steps["report"] == "skipped"
    assert "report" not in calls.read_text()
    assert results.NO_SEED in (tmp_path / "out" / "README.md").read_text()
    assert results.NO_SEED in capsys.readouterr().out


def test_every_seed_finished_gives_the_whole_report_and_exit_zero(fake, tmp_path):
    args, calls = fake
    assert experiment.main([*args, "--tar-only"]) == 0
    assert calls.read_text().splitlines() == [
        "repro embed_rationales",
        *(f"repro evaluate_student@answer_only-{s} evaluate_student@pst-{s}" for s in SEEDS),
        "repro"]
    out = tmp_path / "out"
    assert sorted(p.name for p in out.iterdir()) == ["README.md", "experiment.log", "results.tar.gz"]
    with tarfile.open(out / "results.tar.gz") as tf:
        names = tf.getnames()
    assert {"README.md", "params.yaml", "reports/report.md", "data/predictions/pst-3.jsonl",
            "environment.txt"} <= set(names)
    assert "report over seed(s) 1, 2, 3: every method finished them" in (out / "README.md").read_text()



def test_the_work_copy_has_the_project_without_its_outputs(tmp_path):
    repo = tmp_path / "repo"
    n = workcopy.copy_project(ROOT, repo)
    assert n > 0 and (repo / "dvc.yaml").is_file() and (repo / "tools" / "gpu" / "steps.py").is_file()
    assert (repo / "src" / "pst_distill" / "__init__.py").is_file()
    assert not (repo / "dvc.lock").exists() and not (repo / ".venv").exists()
    paths = workcopy.pipeline_paths(repo)
    assert {"metrics", "reports", "predictions", "logs"} <= set(paths)
    assert not any((repo / rel).exists() for rel in paths.values())
    # a tree without .git (what a device call carries): the same files, walked
    again = workcopy.project_files(repo)
    assert "dvc.yaml" in again and not any(f.startswith((".git/", ".venv/")) for f in again)


def test_a_seed_that_does_not_fit_is_left_out_and_the_report_covers_the_rest(
        fake, tmp_path, monkeypatch):
    """Seed 1 takes 3 s of a 5.5 s budget, so at most 2.5 s are left after it: seeds 2 and
    3 are left out (not run, not a failure), the report covers seed 1 and the exit status
    is 0."""
    from tools.gpu import steps

    args, calls = fake
    monkeypatch.setenv("FAKE_DVC_SLEEP", "3")
    monkeypatch.setattr(experiment, "REPORT_S", 0)
    monkeypatch.setattr(steps, "MIN_STEP_S", 0.5)
    assert experiment.main([*args[:-1], "5.5"]) == 0
    assert readme_steps(tmp_path / "out") == {"upstream": "ok", "seed 1": "ok",
                                               "seed 2": "left out", "seed 3": "left out",
                                               "report": "ok"}
    assert calls.read_text().splitlines()[-1] == "repro -s report"
    assert "evaluate_student@pst-2" not in calls.read_text()
    assert "report over seed(s) 1: every method finished them" in \
        (tmp_path / "out" / "README.md").read_text()
