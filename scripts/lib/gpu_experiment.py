"""Helpers of scripts/gpu_experiment.sh (stdlib + PyYAML; pst_distill only to validate).

    python scripts/lib/gpu_experiment.py dry-params PROFILE OUT      # tiny CPU copy of a profile
    python scripts/lib/gpu_experiment.py targets PARAMS              # one line per training seed
    python scripts/lib/gpu_experiment.py stamp                       # stdin -> stdout, timestamped
    python scripts/lib/gpu_experiment.py summary --work DIR --log FILE --steps TSV --env TXT --out MD

``targets`` prints ``SEED<TAB>evaluate_student@<method>-<seed> ...`` for each seed of
``train.seeds`` (the dvc.yaml matrix names), so the script can run whole seeds in turn.
``stamp`` prefixes each line with the epoch seconds (and ignores SIGINT, so the end of an
interrupted `dvc repro` is still logged). ``summary`` writes OUT_DIR/README.md (environment,
steps, seconds per DVC stage from the stamped log, training runs, the report's accuracy
tables) and prints the short version, the accuracy table last.
"""

from __future__ import annotations

import argparse
import copy
import json
import re
import signal
import sys
import time
from collections import defaultdict
from pathlib import Path

import yaml

# the dry run: every size cut down, every device on CPU, the structure (tasks, methods,
# seeds, packing, full finetune, per-method steps and batch ratios) kept
DRY_ITEMS_PER_TASK = 16
DRY_STEPS = 2
DRY_BATCH = 2


def dry_params(profile: dict) -> dict:
    """A CPU-sized copy of ``profile`` with the same sections, tasks, methods and seeds."""
    p = copy.deepcopy(profile)
    p["prepare"]["test_frac"] = 0.25
    for task in p["prepare"]["tasks"]:
        if task.get("source", "offline") == "offline":
            task["n"] = DRY_ITEMS_PER_TASK
    if "embed" in p:
        p["embed"].update(device="cpu", batch_size=16)
    train = p["train"]
    base = train.setdefault("defaults", {})
    base_batch = base.get("batch_size", 8)
    base.update(device="cpu", steps=DRY_STEPS, epochs=None, batch_size=DRY_BATCH,
                save_every=DRY_STEPS, warmup_steps=0)
    for name, block in train["methods"].items():
        block = train["methods"][name] = dict(block or {})
        if "steps" in block or "epochs" in block:
            block.update(steps=DRY_STEPS, epochs=None)
        if "batch_size" in block:  # keep a method's own ratio to the default batch
            block["batch_size"] = max(1, round(DRY_BATCH * block["batch_size"] / base_batch))
        for key in ("device", "save_every"):
            block.pop(key, None)
    if "sem" in train:
        train["sem"]["hidden"] = 64
    ev = p.setdefault("evaluate", {})
    ev.update(device="cpu", batch_size=6, per_task=3, max_new_tokens=8, max_new_tokens_rationale=24)
    if "adaptive" in p:  # a few held-out questions, leaving the rest to train on
        p["adaptive"]["holdout_per_task"] = 2
        p["adaptive"].setdefault("perception", {})["epochs"] = 20
    p.setdefault("report", {})["n_boot"] = 200
    return p


def cmd_dry_params(args) -> int:
    profile = yaml.safe_load(Path(args.profile).read_text())
    text = (f"# CPU dry run of {args.profile} (scripts/lib/gpu_experiment.py dry-params): the same "
            "structure, tiny sizes\n" + yaml.safe_dump(dry_params(profile), sort_keys=False))
    Path(args.out).write_text(text)
    try:  # validate where pst_distill is importable (the dry run's venv)
        from pst_distill.config import load_params
    except ImportError:
        return 0
    load_params(args.out)
    return 0


def seed_targets(params: dict) -> list[tuple[int, list[str]]]:
    train = params["train"]
    return [(seed, [f"evaluate_student@{m}-{seed}" for m in train["methods"]])
            for seed in train.get("seeds", [1])]


def cmd_targets(args) -> int:
    params = yaml.safe_load(Path(args.params).read_text())
    for seed, targets in seed_targets(params):
        print(f"{seed}\t{' '.join(targets)}")
    return 0


def cmd_stamp(_args) -> int:
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for line in sys.stdin:
        sys.stdout.write(f"{time.time():.2f} {line}")
        sys.stdout.flush()
    return 0


# ------------------------------------------------------------------ summary
STAGE_START = re.compile(r"^(\d+(?:\.\d+)?) Running stage '([^']+)'")
PHASE_END = re.compile(r"^(\d+(?:\.\d+)?) ##phase-end")


def stage_seconds(log_lines: list[str]) -> list[tuple[str, float]]:
    """(stage, seconds) in run order from the stamped `dvc repro` output: from its "Running
    stage" line to the next one or to the end of its phase (process start, model load,
    the stage's work and DVC's hashing all included)."""
    out, current = [], None
    for line in log_lines:
        start, end = STAGE_START.match(line), PHASE_END.match(line)
        if (start or end) and current is not None:
            t = float((start or end).group(1))
            out.append((current[0], round(t - current[1], 1)))
            current = None
        if start:
            current = (start.group(2), float(start.group(1)))
    return out


def stage_kind(stage: str) -> str:
    return stage.split("@", 1)[0]


def read_tsv(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [ln.split("\t") for ln in path.read_text().splitlines() if ln.strip()]


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(r) + " |" for r in rows]]


def _num(value, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, spec)


def training_rows(work: Path) -> list[list[str]]:
    rows = []
    for path in sorted((work / "metrics" / "train").glob("*.json")):
        m = json.loads(path.read_text())
        extra = work / "logs" / "train" / path.name  # non-metric details, where they are split off
        if extra.exists():
            m = {**json.loads(extra.read_text()), **m}
        rows.append([path.stem, _num(m.get("steps"), "d"), _num(m.get("tokens"), ",d"),
                     _num(m.get("tokens_per_s"), ",.0f"), _num(m.get("loop_seconds"), ".1f"),
                     _num(m.get("wall_seconds"), ".1f"), _num(m.get("epochs"), ".3f"),
                     _num(m.get("final_loss"), ".4f")])
    return rows


def report_sections(report: Path, titles: tuple[str, ...]) -> list[str]:
    """The named ``## `` sections of report.md (heading and body)."""
    if not report.exists():
        return []
    out, keep = [], False
    for line in report.read_text().splitlines():
        if line.startswith("## "):
            keep = line[3:].startswith(titles)
        if keep:
            out.append(line)
    return out


def summary_text(work: Path, log: Path, steps: Path, env: Path) -> tuple[list[str], list[str]]:
    """(README.md lines, the short table printed last)."""
    step_rows = [(r + ["", "", "", ""])[:4] for r in read_tsv(steps)]
    stages = stage_seconds(log.read_text().splitlines() if log.exists() else [])
    by_kind: dict[str, list[float]] = defaultdict(list)
    for name, sec in stages:
        by_kind[stage_kind(name)].append(sec)
    kind_rows = [[k, str(len(v)), f"{sum(v):.1f}", f"{sum(v) / len(v):.1f}"] for k, v in by_kind.items()]
    accuracy = report_sections(work / "reports" / "report.md", ("Accuracy", "Constant baselines"))
    cost = report_sections(work / "reports" / "report.md", ("Generation cost",))
    steps_md = md_table(["step", "status", "seconds", "note"], step_rows)
    kinds_md = md_table(["stage", "runs", "seconds", "mean s/run"], kind_rows)
    readme = ["# GPU experiment (scripts/gpu_experiment.sh)", "",
              "## Environment", "", "```", env.read_text().strip() if env.exists() else "", "```", "",
              "## Steps", "", *steps_md, "",
              "## Seconds per DVC stage", "",
              "From each stage's \"Running stage\" line to the next (process start, model load, "
              "the work and DVC's hashing included).", "", *kinds_md, "",
              *md_table(["stage", "seconds"], [[n, f"{s:.1f}"] for n, s in stages]), "",
              "## Training runs", "",
              *md_table(["run", "steps", "tokens", "tok/s", "loop s", "wall s", "epochs", "final loss"],
                        training_rows(work)), "",
              *(accuracy or ["## Accuracy", "", "_no report: see experiment.log_"]), "", *cost, ""]
    short = [*steps_md, "", *kinds_md, "", *(accuracy or ["no report (see experiment.log)"])]
    return readme, short


def cmd_summary(args) -> int:
    readme, short = summary_text(Path(args.work), Path(args.log), Path(args.steps), Path(args.env))
    Path(args.out).write_text("\n".join(readme) + "\n")
    print("\n".join(short))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    p = sub.add_parser("dry-params")
    p.add_argument("profile")
    p.add_argument("out")
    p.set_defaults(fn=cmd_dry_params)
    p = sub.add_parser("targets")
    p.add_argument("params")
    p.set_defaults(fn=cmd_targets)
    sub.add_parser("stamp").set_defaults(fn=cmd_stamp)
    p = sub.add_parser("summary")
    for key in ("work", "log", "steps", "env", "out"):
        p.add_argument(f"--{key}", required=True)
    p.set_defaults(fn=cmd_summary)
    args = ap.parse_args(argv)
    return args.fn(args)


if __name__ == "__main__":
    raise SystemExit(main())
