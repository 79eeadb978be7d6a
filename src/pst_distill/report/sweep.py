"""The robustness sweep: accuracy against the fraction of corrupted rationales, per method.

``python -m pst_distill sweep run`` (``make sweep``) queues one DVC experiment per
``assemble.corrupt_frac`` (``dvc exp run --queue -S assemble.corrupt_frac=0,0.25,0.5``), with
``train.methods`` restricted to the compared methods (:func:`sweep_overrides`), runs the
queue, reads ``dvc exp show --json``, picks the sweep's experiments by name
(:func:`collect_points`), lines up each method's accuracy with its 95% interval from each
experiment's ``reports/summary.json`` (:func:`accuracy_curves`; the layout written by
:mod:`pst_distill.report.build`), and writes ``robustness.md`` and ``robustness.png``.

Everything but the runner and the plot is a pure function on dicts, tested on constructed
summaries.
"""

from __future__ import annotations

import argparse
import json
import logging
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Sequence

import yaml

from pst_distill.io import write_text
from pst_distill.methods import METHODS
from pst_distill.report.tables import markdown_table

log = logging.getLogger(__name__)

SWEEP_METHODS = ("pre_thinking", "post_thinking", "pst")
FRACTIONS = (0.0, 0.25, 0.5)
OVERALL = "overall"  # the report's pooled group (pst_distill.report.tables.OVERALL)
SUMMARY = "reports/summary.json"
ASSEMBLE_METRICS = "metrics/assemble.json"
PARAMS = "params.yaml"


class SweepError(ValueError):
    """The sweep's params or its experiments do not allow the comparison."""


# ------------------------------------------------------------------ queueing
def sweep_overrides(params: dict, methods: Sequence[str] = SWEEP_METHODS) -> list[str]:
    """``dvc exp run -S`` overrides that keep only ``methods`` in ``train.methods`` (Hydra's
    ``~key`` deletes the others). Raises :class:`SweepError` if a method is not trained or
    not assembled by ``params``, before anything is queued."""
    unknown = [m for m in methods if m not in METHODS]
    if unknown or not methods:
        raise SweepError(f"sweep methods {', '.join(unknown) or '(none)'}: allowed "
                         f"{', '.join(METHODS)}")
    trained = list(((params.get("train") or {}).get("methods") or {}))
    assembled = (params.get("assemble") or {}).get("methods", list(METHODS))
    for key, have in (("train.methods", trained), ("assemble.methods", assembled)):
        missing = [m for m in methods if m not in have]
        if missing:
            raise SweepError(f"{key} lacks {', '.join(missing)}: the sweep compares "
                             f"{', '.join(methods)}; add them to params.yaml")
    return [f"~train.methods.{m}" for m in trained if m not in methods]


def grid_override(fractions: Sequence[float]) -> str:
    """One ``-S`` grid over the fractions (DVC expands it into one queued experiment each)."""
    if not fractions or any(not 0.0 <= f <= 1.0 for f in fractions):
        raise SweepError(f"corrupt fractions must lie in [0, 1], got {list(fractions)}")
    if len(set(fractions)) != len(fractions):
        raise SweepError(f"a corrupt fraction is listed twice: {list(fractions)}")
    return "assemble.corrupt_frac=" + ",".join(format(f, "g") for f in fractions)


# ------------------------------------------------------------------ collecting
@dataclass(frozen=True)
class Point:
    """One experiment of the sweep."""

    name: str
    rev: str
    frac: float
    mode: str
    semantic_target: str
    seeds: list
    score: str
    summary: dict
    corrupted: dict = field(default_factory=dict)  # {"total": n, task: n}; empty if unknown


def _experiments(exp_show: list[dict]):
    for baseline in exp_show:
        for exp in baseline.get("experiments") or []:
            for rev in exp.get("revs") or []:
                yield rev


def _file_data(data: dict, kind: str, path: str) -> dict | None:
    entry = (data.get(kind) or {}).get(path) or {}
    return entry.get("data")


def point_of(rev: dict) -> Point:
    """A :class:`Point` from one experiment of ``dvc exp show --json``."""
    data, name = rev.get("data") or {}, rev.get("name") or rev.get("rev", "?")[:7]
    params, summary = _file_data(data, "params", PARAMS), _file_data(data, "metrics", SUMMARY)
    if not params:
        raise SweepError(f"experiment {name}: no {PARAMS} in `dvc exp show --json`")
    if not summary or "methods" not in summary:
        raise SweepError(f"experiment {name}: no {SUMMARY} metrics (did its report stage run?)")
    asm = params.get("assemble") or {}
    stats = _file_data(data, "metrics", ASSEMBLE_METRICS) or {}
    corrupt = stats.get("corrupt") or {}
    corrupted = ({"total": stats["corrupted"], **corrupt.get("per_task", {})}
                 if "corrupted" in stats else {})
    return Point(name=name, rev=str(rev.get("rev", ""))[:7],
                 frac=float(asm.get("corrupt_frac", 0.0)),
                 mode=str(asm.get("corrupt_mode", "numbers")),
                 semantic_target=str(asm.get("semantic_target", "seen")),
                 seeds=list((params.get("train") or {}).get("seeds") or []),
                 score=str((params.get("report") or {}).get("score", "flexible")),
                 summary=summary, corrupted=corrupted)


def collect_points(exp_show: list[dict], prefix: str) -> list[Point]:
    """The experiments named ``prefix`` or ``prefix-<n>``, sorted by fraction; checks that
    they differ only in the fraction (one mode, one semantic target, the same seeds)."""
    revs = [r for r in _experiments(exp_show)
            if (r.get("name") or "") == prefix or (r.get("name") or "").startswith(prefix + "-")]
    if not revs:
        raise SweepError(f"no experiment named {prefix} or {prefix}-<n> in `dvc exp show`")
    points = sorted((point_of(r) for r in revs), key=lambda p: p.frac)
    fracs = [p.frac for p in points]
    if len(set(fracs)) != len(fracs):
        raise SweepError(f"sweep {prefix}: a corrupt_frac appears twice: {fracs}")
    for what in ("mode", "semantic_target", "seeds", "score"):
        values = {json.dumps(getattr(p, what)) for p in points}
        if len(values) > 1:
            raise SweepError(f"sweep {prefix}: experiments differ in {what} ({', '.join(sorted(values))}); "
                             "only assemble.corrupt_frac may vary")
    return points


# ------------------------------------------------------------------ curves
def accuracy_curves(points: Sequence[Point]) -> dict[str, dict[str, list[dict]]]:
    """``{group: {method: [{frac, mean, lo, hi, n_seeds}, ...]}}``, groups = the tasks then
    ``overall``, methods in METHODS order; a point lacking a method or group is skipped."""
    groups: list[str] = []
    methods: set[str] = set()
    for p in points:
        for method, fig in p.summary["methods"].items():
            methods.add(method)
            groups += [g for g in fig["accuracy"] if g not in groups]
    groups = [g for g in groups if g != OVERALL] + ([OVERALL] if OVERALL in groups else [])
    order = sorted(methods, key=lambda m: (METHODS.index(m) if m in METHODS else len(METHODS), m))
    curves = {}
    for group in groups:
        curves[group] = {}
        for method in order:
            line = [{"frac": p.frac, **p.summary["methods"][method]["accuracy"][group]}
                    for p in points
                    if group in p.summary["methods"].get(method, {}).get("accuracy", {})]
            if line:
                curves[group][method] = line
    return curves


def baselines(points: Sequence[Point]) -> dict[str, dict]:
    """Constant baselines per group (the test set does not depend on the fraction: the first
    point's)."""
    return dict(points[0].summary.get("baselines") or {}) if points else {}


# ------------------------------------------------------------------ markdown
def _cell(fig: dict | None) -> str:
    if fig is None:
        return "–"
    return f"{fig['mean']:.3f} [{fig['lo']:.3f}, {fig['hi']:.3f}]"


def group_table(group: str, curves: dict, fracs: list[float], base: dict) -> str:
    """Methods × fractions, each cell mean [lo, hi]; the constant baselines last."""
    rows = []
    for method, line in curves[group].items():
        at = {pt["frac"]: pt for pt in line}
        rows.append([method] + [_cell(at.get(f)) for f in fracs])
    for key, label in (("majority", "majority of train"), ("best_constant", "best constant")):
        if key in base.get(group, {}):
            rows.append([f"_{label}_"] + [f"{base[group][key]:.3f}"] * len(fracs))
    return markdown_table(["method"] + [f"corrupt_frac {f:g}" for f in fracs], rows)


def markdown(prefix: str, points: Sequence[Point], plot_name: str | None) -> str:
    """robustness.md: the settings, the corrupted counts, one table per group, the plot."""
    if not points:
        raise SweepError("no experiments to report")
    p0, fracs = points[0], [p.frac for p in points]
    curves, base = accuracy_curves(points), baselines(points)
    target = {"seen": "the embedding of the rationale the student sees",
              "clean": "the embedding of the CLEAN rationale (PST alone gets clean "
                       "information: not a fair comparison)"}.get(p0.semantic_target, "?")
    lines = ["# Robustness to corrupted rationales", "",
             f"Sweep `{prefix}`: `assemble.corrupt_mode` = `{p0.mode}`; "
             f"`assemble.semantic_target` = `{p0.semantic_target}` (PST's target: {target}); "
             f"training seeds {p0.seeds}; score `{p0.score}`.", "",
             "Experiments: " + ", ".join(f"`{p.name}` ({p.rev}, corrupt_frac {p.frac:g})"
                                         for p in points) + ".", ""]
    if any(p.corrupted for p in points):
        tasks = sorted({k for p in points for k in p.corrupted if k != "total"})
        rows = [[f"{p.frac:g}", str(p.corrupted.get("total", "–")),
                 *[str(p.corrupted.get(t, 0)) for t in tasks]] for p in points]
        lines += ["Corrupted training rationales (the same items for every method):", "",
                  markdown_table(["corrupt_frac", "total", *tasks], rows), ""]
    lines += ["Accuracy with its 95% interval (over seeds and questions) on the same test "
              "questions at every fraction. The intervals are per point, not paired "
              "differences: a change between fractions is resolved only where they do not "
              "overlap.", ""]
    for group in curves:
        lines += [f"## {group}", "", group_table(group, curves, fracs, base), ""]
    if plot_name:
        lines += [f"![accuracy against corrupt_frac]({plot_name})", ""]
    return "\n".join(lines)


# ------------------------------------------------------------------ plot
# ------------------------------------------------------------------ plot
def plot_robustness(points, path) -> None:
    """One panel per group: accuracy against corrupt_frac per method, 95% error bars,
    the majority baseline dashed."""
    from pst_distill.report.plots import pyplot, save_figure

    plt = pyplot()
    curves, base = accuracy_curves(points), baselines(points)
    fig, axes = plt.subplots(1, len(curves), figsize=(3.6 * len(curves), 3.4), squeeze=False)
    fracs = [p.frac for p in points]
    span = (max(fracs) - min(fracs)) or 1.0
    for ax, (group, by_method) in zip(axes[0], curves.items()):
        for i, (method, line) in enumerate(by_method.items()):
            dx = (i - (len(by_method) - 1) / 2) * 0.015 * span  # side by side, not on top
            x = [pt["frac"] + dx for pt in line]
            y = [pt["mean"] for pt in line]
            err = [[pt["mean"] - pt["lo"] for pt in line], [pt["hi"] - pt["mean"] for pt in line]]
            ax.errorbar(x, y, yerr=err, marker="o", capsize=3, label=method)
        if "majority" in base.get(group, {}):
            ax.axhline(base[group]["majority"], color="gray", linestyle="--", linewidth=1,
                       label="majority of train")
        ax.set_title(group, fontsize=9)
        ax.set_xlabel("corrupt_frac")
        ax.set_xticks(fracs)
        ax.set_ylim(0, 1)
    axes[0][0].set_ylabel(f"accuracy ({points[0].score}), 95% interval")
    axes[0][-1].legend(fontsize=7, loc="best")
    fig.suptitle(f"corrupt_mode {points[0].mode}, semantic_target {points[0].semantic_target}",
                 fontsize=9)
    save_figure(fig, path)


# ------------------------------------------------------------------ running it
def _dvc(args: list[str], **kw) -> subprocess.CompletedProcess:
    log.info("dvc %s", " ".join(args))
    return subprocess.run(["dvc", *args], text=True, **kw)


def failed_experiments(queue_status: str, name: str) -> list[str]:
    """Names of the sweep's experiments that ``dvc queue status`` lists as Failed."""
    out = []
    for line in queue_status.splitlines():
        cols = line.split()
        if len(cols) >= 2 and cols[-1] == "Failed" and (cols[1] == name
                                                        or cols[1].startswith(name + "-")):
            out.append(cols[1])
    return out


def report(name: str, out_dir: Path, exp_show: Path | None = None) -> list[Point]:
    """robustness.md and robustness.png in ``out_dir`` from the experiments named ``name``,
    read from ``dvc exp show --json -A`` (every baseline: a commit made while the sweep ran
    moves HEAD), or from ``exp_show``, a saved copy of its output."""
    show = exp_show.read_text() if exp_show else _dvc(
        ["exp", "show", "--json", "-A"], capture_output=True, check=True).stdout
    points = collect_points(json.loads(show), name)
    md, png = out_dir / "robustness.md", out_dir / "robustness.png"
    plot_robustness(points, png)
    write_text(md, markdown(name, points, png.name))
    log.info("robustness report of %d experiments: %s, %s", len(points), md, png)
    return points


def run(params_path: Path, methods: Sequence[str], fractions: Sequence[float], name: str,
        jobs: int, extra: Sequence[str], out_dir: Path) -> int:
    """Queue one experiment per fraction (``dvc exp run --queue -n NAME -S ...``), run the
    queue, then :func:`report`. The overrides are checked before anything is queued."""
    params = yaml.safe_load(params_path.read_text()) or {}
    overrides = [grid_override(fractions), *sweep_overrides(params, methods), *extra]
    untracked = subprocess.run(["git", "ls-files", "--others", "--exclude-standard", "--", "src",
                                "stages", "dvc.yaml", "params.yaml"], capture_output=True,
                               text=True).stdout.split()
    if untracked:
        log.warning("not tracked by git, so missing in the experiments: %s", " ".join(untracked))
    start = time.monotonic()
    log.info("sweep %s: corrupt_frac %s, methods %s", name, fractions, ", ".join(methods))
    _dvc(["exp", "run", "--queue", "-n", name, *[a for o in overrides for a in ("-S", o)]],
         check=True)
    code = _dvc(["exp", "run", "--run-all", "-j", str(jobs)]).returncode
    failed = failed_experiments(_dvc(["queue", "status"], capture_output=True).stdout, name)
    if code or failed:
        raise SweepError(f"experiment(s) failed: {', '.join(failed) or 'see dvc queue status'}; "
                         "logs: dvc queue logs <name>")
    report(name, out_dir)
    log.info("sweep %s done in %.0f s", name, time.monotonic() - start)
    return 0


def add_arguments(ap: argparse.ArgumentParser) -> None:
    sub = ap.add_subparsers(dest="sweep_cmd", required=True)
    r = sub.add_parser("run", help="queue and run the sweep as DVC experiments, then report")
    r.add_argument("--params", type=Path, default=Path(PARAMS))
    r.add_argument("--methods", default=",".join(SWEEP_METHODS))
    r.add_argument("--fractions", default=",".join(format(f, "g") for f in FRACTIONS))
    r.add_argument("--name", default=None, help="experiment name prefix (default robustness-<time>)")
    r.add_argument("--jobs", type=int, default=1, help="experiments run at once (dvc exp run -j)")
    r.add_argument("-S", "--set-param", action="append", default=[], dest="extra",
                   help="another override for every experiment, e.g. assemble.corrupt_mode=swap")
    r.add_argument("--out-dir", type=Path, default=Path("reports"))
    c = sub.add_parser("collect", help="only the report, for a sweep run before")
    c.add_argument("name")
    c.add_argument("--out-dir", type=Path, default=Path("reports"))
    c.add_argument("--exp-show", type=Path, default=None,
                   help="a saved `dvc exp show --json -A` instead of asking DVC")
    o = sub.add_parser("overrides", help="print the -S overrides of the sweep, one per line")
    o.add_argument("--params", type=Path, default=Path(PARAMS))
    o.add_argument("--methods", default=",".join(SWEEP_METHODS))
    o.add_argument("--fractions", default=",".join(format(f, "g") for f in FRACTIONS))


def command(args) -> int:
    """``python -m pst_distill sweep run|collect|overrides``: 0, or 2 with one error line."""
    try:
        if args.sweep_cmd == "collect":
            report(args.name, args.out_dir, args.exp_show)
            return 0
        fractions = [float(f) for f in args.fractions.split(",") if f.strip()]
        methods = [m for m in args.methods.split(",") if m.strip()]
        if args.sweep_cmd == "overrides":
            params = yaml.safe_load(args.params.read_text()) or {}
            print("\n".join([grid_override(fractions), *sweep_overrides(params, methods)]))
            return 0
        name = args.name or time.strftime("robustness-%Y%m%d-%H%M%S")
        return run(args.params, methods, fractions, name, args.jobs, args.extra, args.out_dir)
    except (SweepError, ValueError, OSError, subprocess.CalledProcessError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
