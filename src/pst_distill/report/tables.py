"""Markdown tables for a trustworthy comparison: accuracy with intervals, the constant
baselines, paired differences that say whether they exclude zero, and label histograms.

Input: ``{method: {seed: [prediction rows]}}`` as written by ``pst_distill.evaluate.score``
(every method and seed evaluated on the same question ids) and, for the majority baseline,
``{task: [training answers]}``. The statistics live in :mod:`pst_distill.report.stats`.
"""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pst_distill.methods import METHODS
from pst_distill.report.stats import (Interval, PairedDiff, TaskArrays, accuracy_interval,
                               aligned_by_task, best_constant_baseline, check_aligned,
                               label_histogram, majority_baseline, paired_difference, wilson)

FOCUS = ("pst", "post_thinking")
AGAINST = ("answer_only", "pre_thinking", "step_by_step", "post_thinking", "pst")
# the adaptive student's routers (methods "adaptive:<router>", pst_distill.evaluate.routing), in
# report order
ROUTERS = ("always_fast", "always_think", "confidence", "perception")
# the adaptive routers that choose per question (methods "adaptive:<router>", see
# pst_distill.report.frontier), compared with the fixed-order baselines
EXTRA_PAIRS = (("adaptive:confidence", "pre_thinking"), ("adaptive:confidence", "answer_only"),
               ("adaptive:perception", "pre_thinking"), ("adaptive:perception", "answer_only"))
OVERALL = "overall"

Arrays = dict[str, dict[str, TaskArrays]]  # {method: {task: TaskArrays}}


def method_order(method: str) -> tuple:
    """Sort key: METHODS order, then the adaptive routers in ROUTERS order, then the rest
    by name (one key for every table, the summary and the plots, so they list alike)."""
    router = method.partition(":")[2]
    if method in METHODS:
        return (0, METHODS.index(method), method)
    if router in ROUTERS:
        return (1, ROUTERS.index(router), method)
    return (2, 0, method)



def build_arrays(predictions: Mapping[str, Mapping], score: str = "flexible") -> Arrays:
    """Aligned arrays per method and task; fails unless every method covers the same
    tasks, seeds and question ids."""
    if not predictions:
        raise ValueError("no methods given")
    arrays = {m: aligned_by_task(predictions[m], score) for m in sorted(predictions, key=method_order)}
    ref_name, ref = next(iter(arrays.items()))
    for name, tasks in arrays.items():
        if set(tasks) != set(ref):
            raise ValueError(f"methods {ref_name!r} and {name!r} cover different tasks: "
                             f"{sorted(ref)} vs {sorted(tasks)}")
        for task in ref:
            check_aligned(ref[task], tasks[task], (ref_name, name))
    return arrays


def tasks_of(arrays: Arrays) -> list[str]:
    return sorted(next(iter(arrays.values())))


def overall_correct(by_task: Mapping[str, TaskArrays]) -> np.ndarray:
    """``[S, sum of Q]``: the tasks' correctness matrices side by side (sorted by task)."""
    return np.concatenate([by_task[t].correct for t in sorted(by_task)], axis=1)


def correct_of(by_task: Mapping[str, TaskArrays], task: str) -> np.ndarray:
    """The correctness matrix of one task, or of all of them for ``OVERALL``."""
    return overall_correct(by_task) if task == OVERALL else by_task[task].correct


def markdown_table(head: Sequence[str], rows: list[list[str]]) -> str:
    """A GitHub-flavoured Markdown table: the one table writer of every report."""
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def fmt_interval(iv: Interval) -> str:
    return f"{iv.mean:.3f} [{iv.lo:.2f}, {iv.hi:.2f}]"


def fmt_diff(d: PairedDiff) -> str:
    cell = f"{d.mean:+.3f} [{d.lo:+.2f}, {d.hi:+.2f}]"
    return f"**{cell} ✓**" if d.excludes_zero else cell


def accuracy_table(arrays: Arrays, n_boot: int = 2000, rng_seed: int = 0) -> str:
    """One row per method: accuracy [95% interval] per task and overall."""
    tasks = tasks_of(arrays)
    rows = []
    for method, by_task in arrays.items():
        cells = [fmt_interval(accuracy_interval(by_task[t].correct, n_boot, rng_seed)) for t in tasks]
        cells.append(fmt_interval(accuracy_interval(overall_correct(by_task), n_boot, rng_seed)))
        rows.append([method, *cells, str(len(by_task[tasks[0]].seeds))])
    return markdown_table(["method", *tasks, OVERALL, "seeds"], rows)


def _baseline_cells(per_task: dict[str, tuple[str, Sequence[str]]], tasks: list[str]) -> list[str]:
    """Cells for a constant predictor given ``{task: (label, test labels)}``, plus overall."""
    cells, hits, total = [], 0, 0
    for t in tasks:
        label, test = per_task[t]
        h = sum(x == label for x in test)
        lo, hi = wilson(h, len(test))
        cells.append(f"{h / len(test):.3f} [{lo:.2f}, {hi:.2f}] ({label})")
        hits, total = hits + h, total + len(test)
    lo, hi = wilson(hits, total)
    return cells + [f"{hits / total:.3f} [{lo:.2f}, {hi:.2f}]"]


def baseline_table(arrays: Arrays, train_labels: Mapping[str, Sequence[str]]) -> str:
    """Majority-class (of the training answers) and best constant (in hindsight on the
    test answers) per task; the constant answered is in parentheses."""
    tasks = tasks_of(arrays)
    missing = [t for t in tasks if not train_labels.get(t)]
    if missing:
        raise ValueError(f"no training labels for task(s) {missing}: the majority baseline needs them")
    gold = {t: next(iter(arrays.values()))[t].answers for t in tasks}
    majority = {t: (majority_baseline(train_labels[t], gold[t]).label, gold[t]) for t in tasks}
    best = {t: (best_constant_baseline(gold[t]).label, gold[t]) for t in tasks}
    return markdown_table(["baseline", *tasks, OVERALL],
                  [["majority of train", *_baseline_cells(majority, tasks)],
                   ["best constant on test", *_baseline_cells(best, tasks)]])


def comparison_pairs(methods: Sequence[str], focus: Sequence[str] = FOCUS,
                     against: Sequence[str] = AGAINST,
                     extra: Sequence[tuple[str, str]] = EXTRA_PAIRS) -> list[tuple[str, str]]:
    """(A, B) pairs: each focus method against each other present method, once per pair;
    then the ``extra`` pairs whose methods are both present (the adaptive routers against
    the thinking and non-thinking baselines: does routing keep accuracy at lower cost?)."""
    pairs: list[tuple[str, str]] = []
    candidates = [(a, b) for a in focus for b in against] + list(extra)
    for a, b in candidates:
        if a != b and a in methods and b in methods and (a, b) not in pairs and (b, a) not in pairs:
            pairs.append((a, b))
    return pairs


def paired_table(arrays: Arrays, pairs: Sequence[tuple[str, str]] | None = None,
                 n_boot: int = 2000, rng_seed: int = 0) -> str:
    """Accuracy of A minus B per task and overall with its paired 95% interval; bold with
    ✓ where the interval excludes zero."""
    tasks = tasks_of(arrays)
    rows = []
    for a, b in comparison_pairs(list(arrays)) if pairs is None else pairs:
        cells = [fmt_diff(paired_difference(correct_of(arrays[a], t), correct_of(arrays[b], t),
                                            n_boot, rng_seed)) for t in [*tasks, OVERALL]]
        rows.append([f"{a} − {b}", *cells])
    if not rows:
        return "_no pair of methods to compare_"
    return markdown_table(["A − B", *tasks, OVERALL], rows)


def histogram_tables(arrays: Arrays) -> str:
    """For each yes-no/choice task: predicted-label counts per method over all seeds, next to
    the gold counts scaled to the same number of answers (× seeds)."""
    parts = []
    for task in tasks_of(arrays):
        first = next(iter(arrays.values()))[task]
        if not first.is_label_task:
            continue
        n_seeds = len(first.seeds)
        hists = {m: label_histogram(by_task[task].preds, first.answers) for m, by_task in arrays.items()}
        labels = sorted({k for h in hists.values() for k in h}, key=lambda k: (k == "[invalid]", k))
        gold = label_histogram(first.answers, labels)
        rows = [[f"gold (×{n_seeds})", *[str(gold.get(k, 0) * n_seeds) for k in labels]]]
        rows += [[m, *[str(h.get(k, 0)) for k in labels]] for m, h in hists.items()]
        parts.append(f"### {task} ({n_seeds} seeds × {len(first.ids)} questions)\n\n"
                     + markdown_table(["predicted", *labels], rows))
    return "\n\n".join(parts) if parts else "_no yes-no or choice tasks_"


def comparison_report(predictions: Mapping[str, Mapping], train_labels: Mapping[str, Sequence[str]],
                      score: str = "flexible", n_boot: int = 2000, rng_seed: int = 0) -> str:
    """All four sections as one markdown string (headings at level 2)."""
    arrays = build_arrays(predictions, score)
    return "\n".join([
        f"## Accuracy ({score} extraction) with 95% intervals", "",
        "One seed: Wilson interval over questions. Several seeds: bootstrap over seeds and "
        f"questions ({n_boot} replicates).", "", accuracy_table(arrays, n_boot, rng_seed), "",
        "## Constant baselines", "", baseline_table(arrays, train_labels), "",
        "## Paired differences (same questions, same seeds)", "",
        "Accuracy of A minus B, 95% paired bootstrap interval over questions (several seeds: "
        "over seeds, then questions); "
        "**bold ✓**: the interval excludes zero. Intervals are per comparison, not corrected for "
        "multiple comparisons: about 1 in 20 differences of zero is marked by chance.", "", paired_table(arrays, None, n_boot, rng_seed), "",
        "## Predicted labels", "", histogram_tables(arrays), ""])
