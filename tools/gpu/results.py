"""The experiment's README: environment, steps, which seeds every method finished, seconds
per DVC stage (from the stamped log), the training runs and the report's accuracy tables;
and the short version printed last (the accuracy table at the end)."""

from __future__ import annotations

import json
import re
from collections import defaultdict
from pathlib import Path

from tools.gpu.steps import STEP_END, Step
from tools.gpu.summary import md_table, steps_table

STAGE_START = re.compile(r"^(\d+(?:\.\d+)?) Running stage '([^']+)'")
STEP_STOP = re.compile(rf"^(\d+(?:\.\d+)?) {STEP_END}\b")
NO_SEED = "no seed finished for every method: no report"


def stage_seconds(log_lines: list[str]) -> list[tuple[str, float]]:
    """(stage, seconds) in run order from stamped `dvc repro` output: from a stage's
    "Running stage" line to the next one or to the end of its step (process start, model
    load, the stage's work and DVC's hashing all included)."""
    out, current = [], None
    for line in log_lines:
        start, end = STAGE_START.match(line), STEP_STOP.match(line)
        if (start or end) and current is not None:
            out.append((current[0], round(float((start or end).group(1)) - current[1], 1)))
            current = None
        if start:
            current = (start.group(2), float(start.group(1)))
    return out


def finished_seeds(predictions: Path, methods: list[str], seeds: list) -> list:
    """The seeds evaluated for every method (the ones the report compares)."""
    return [s for s in seeds if all((predictions / f"{m}-{s}.jsonl").is_file() for m in methods)]


def seeds_line(finished: list, seeds: list) -> str:
    if not finished:
        return NO_SEED
    left = [s for s in seeds if s not in finished]
    return (f"report over seed(s) {', '.join(map(str, finished))}: every method finished them"
            + (f"; not finished: seed(s) {', '.join(map(str, left))}" if left else ""))


def _num(value, spec: str) -> str:
    return "-" if not isinstance(value, (int, float)) or isinstance(value, bool) else format(value, spec)


def training_rows(metrics: Path, details: Path) -> list[list[str]]:
    """One row per run: metrics/train/<run>.json, with logs/train/<run>.json's details."""
    rows = []
    for path in sorted(metrics.glob("*.json")):
        m = json.loads(path.read_text())
        d = json.loads((details / path.name).read_text()) if (details / path.name).exists() else {}
        final = (m.get("final") or {}).get("loss", d.get("final_loss"))
        rows.append([path.stem, _num(m.get("steps"), "d"), _num(d.get("tokens"), ",d"),
                     _num(m.get("tokens_per_s"), ",.0f"), _num(d.get("loop_seconds"), ".1f"),
                     _num(d.get("wall_seconds"), ".1f"), _num(m.get("epochs"), ".3f"),
                     _num(final, ".4f")])
    return rows


def report_sections(report: Path, titles: tuple[str, ...]) -> list[str]:
    """The named ``## `` sections of report.md, heading and body."""
    out, keep = [], False
    for line in report.read_text().splitlines() if report.exists() else []:
        if line.startswith("## "):
            keep = line[3:].startswith(titles)
        if keep:
            out.append(line)
    return out


def readme(results: Path, paths: dict, log: Path, steps: list[Step], env_text: str,
           seeds_note: str) -> tuple[list[str], list[str]]:
    """(README.md lines, the short version) from the collected ``results`` folder."""
    stages = stage_seconds(log.read_text().splitlines() if log.exists() else [])
    by_kind: dict[str, list[float]] = defaultdict(list)
    for name, sec in stages:
        by_kind[name.split("@", 1)[0]].append(sec)
    kinds = md_table(["stage", "runs", "seconds", "mean s/run"],
                     [[k, str(len(v)), f"{sum(v):.1f}", f"{sum(v) / len(v):.1f}"]
                      for k, v in by_kind.items()])
    report = results / paths.get("reports", "reports") / "report.md"
    accuracy = report_sections(report, ("Accuracy", "Constant baselines"))
    train = training_rows(results / paths.get("metrics", "metrics") / "train",
                          results / paths.get("logs", "logs") / "train")
    text = ["# GPU experiment (python -m tools.gpu experiment)", "",
            "## Environment", "", "```", env_text.strip(), "```", "",
            "## Steps", "", *steps_table(steps), "", seeds_note, "",
            "## Seconds per DVC stage", "",
            "From each stage's \"Running stage\" line to the next (process start, model load, "
            "the work and DVC's hashing included).", "", *kinds, "",
            *md_table(["stage", "seconds"], [[n, f"{s:.1f}"] for n, s in stages]), "",
            "## Training runs", "",
            *md_table(["run", "steps", "tokens", "tok/s", "loop s", "wall s", "epochs",
                       "final loss"], train),
            "", *(accuracy or ["## Accuracy", "", "_no report: see experiment.log_"]), "",
            *report_sections(report, ("Generation cost",)), ""]
    short = [*steps_table(steps), "", *kinds, "", seeds_note, "",
             *(accuracy or ["no report (see experiment.log)"])]
    return text, short
