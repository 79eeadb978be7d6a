"""Where a pipeline run's time goes, per stage: ``python -m pst_distill timings [--run ...]``.

Every stage writes ``timings`` into its details file (``logs/``): ``startup`` (interpreter
start-up and imports before the stage's main), one entry per phase (model load,
tokenisation, the work, saving, ...), and ``total`` (the process's age at the end). With
``--run``, the command runs ``dvc repro`` itself (extra arguments are passed on), stamps its
output, and adds what DVC spends around each stage: from its "Running stage" line to the
next one (or to the end), minus the stage's own total. That difference is DVC's
bookkeeping (hashing outputs, the lock file, the run-cache) and the process's exit.
No stage imports this module.
"""

from __future__ import annotations

import argparse
import json
import re
import subprocess
import sys
import time
from pathlib import Path

import yaml

# details file -> stage name (matrix stages: <dir>/<method>-<seed>.json)
SINGLE = {"prepare.json": "prepare_data", "teacher.json": "generate_rationales",
          "assemble.json": "assemble_dataset", "embed.json": "embed_rationales",
          "report.json": "report"}
MATRIX = {"train": "train_student", "eval": "evaluate_student"}
RUNNING = re.compile(r"Running stage '([^']+)'")


def logs_dir(root: Path) -> Path:
    dvc = yaml.safe_load((root / "dvc.yaml").read_text())
    paths = next(v["paths"] for v in dvc.get("vars", []) if isinstance(v, dict) and "paths" in v)
    return root / paths["logs"]


def stage_timings(root: Path) -> dict[str, dict[str, float]]:
    """``{stage: timings}`` from every details file that has them, in pipeline order."""
    logs, out = logs_dir(root), {}
    for name, stage in SINGLE.items():
        path = logs / name
        if path.exists() and "timings" in (data := json.loads(path.read_text())):
            out[stage] = data["timings"]
    for folder, stage in MATRIX.items():
        for path in sorted((logs / folder).glob("*.json")):
            data = json.loads(path.read_text())
            if "timings" in data:
                out[f"{stage}@{path.stem}"] = data["timings"]
    order = ["prepare_data", "generate_rationales", "assemble_dataset", "embed_rationales",
             "train_student", "evaluate_student", "report"]
    return dict(sorted(out.items(), key=lambda kv: order.index(kv[0].split("@")[0])))


def repro_walls(argv: list[str], root: Path) -> tuple[dict[str, float], float]:
    """Run ``dvc repro ARGV`` in ``root``, echoing its output; return the seconds from each
    stage's "Running stage" line to the next (or to the end) and the whole run's seconds."""
    start = time.perf_counter()
    proc = subprocess.Popen(["dvc", "repro", *argv], cwd=root, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    marks: list[tuple[str, float]] = []
    for line in proc.stdout:
        sys.stdout.write(line)
        if (m := RUNNING.search(line)):
            marks.append((m.group(1), time.perf_counter()))
    end = time.perf_counter()
    if proc.wait() != 0:
        raise SystemExit(f"error: dvc repro exited with {proc.returncode}")
    ends = [t for _, t in marks[1:]] + [end]
    return {name: e - t for (name, t), e in zip(marks, ends)}, end - start


def table(timings: dict[str, dict], walls: dict[str, float] | None = None) -> str:
    phases = []
    for t in timings.values():
        phases += [k for k in t if k not in ("startup", "total") and k not in phases]
    head = ["stage", "startup", *phases, "total"] + (["in DVC", "DVC + exit"] if walls else [])
    rows, sums = [], dict.fromkeys(head[1:], 0.0)
    for stage, t in timings.items():
        cells = {k: t.get(k) for k in ("startup", *phases, "total")}
        if walls:
            wall = walls.get(stage)
            cells["in DVC"] = wall
            cells["DVC + exit"] = None if wall is None else wall - t.get("total", 0.0)
        for k, v in cells.items():
            sums[k] += v or 0.0
        rows.append([stage, *("–" if v is None else f"{v:.1f}" for v in cells.values())])
    rows.append(["**all stages**", *(f"**{v:.1f}**" for v in sums.values())])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def add_arguments(ap: argparse.ArgumentParser) -> None:
    ap.add_argument("--root", type=Path, default=Path("."), help="the project (dvc.yaml)")
    ap.add_argument("--run", nargs=argparse.REMAINDER, default=None, metavar="DVC_REPRO_ARGS",
                    help="run `dvc repro` with these arguments first, and time DVC around "
                         "each stage (e.g. --run -f)")


def command(args) -> int:
    walls = total = None
    if args.run is not None:
        walls, total = repro_walls(args.run, args.root)
    timings = stage_timings(args.root)
    if not timings:
        print("error: no stage timings under logs/ (run the pipeline first)", file=sys.stderr)
        return 2
    print(table(timings, walls))
    if total is not None:
        print(f"\n`dvc repro {' '.join(args.run)}`: {total:.1f} s in all")
    return 0
