"""The report's figures, each saved atomically (:func:`save_figure`): accuracy per task with
its intervals and baselines, the training loss, the accuracy/tokens frontier of the adaptive
routers, and accuracy against the corrupted fraction of the robustness sweep."""

from __future__ import annotations

from collections import defaultdict

import numpy as np

from pst_distill.io import atomic_path
from pst_distill.report.frontier import ORACLE_LABEL, SWEEP_LABEL


def pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def save_figure(fig, path, dpi: int = 110) -> None:
    """Lay out, write beside ``path`` and move into place (a crash leaves no half plot)."""
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=dpi, format="png")
    pyplot().close(fig)


def plot_accuracy(summary: dict, score: str, path) -> None:
    """Accuracy per task and overall with 95% error bars; baselines as horizontal marks."""
    plt = pyplot()
    methods = summary["methods"]
    groups = list(summary["baselines"])  # tasks, then overall
    fig, ax = plt.subplots(figsize=(max(6, 1.9 * len(groups)), 4))
    width = 0.8 / max(len(methods), 1)
    for i, (method, m) in enumerate(methods.items()):
        acc = [m["accuracy"][g] for g in groups]
        x = [j - 0.4 + width * (i + 0.5) for j in range(len(groups))]
        mean = np.array([a["mean"] for a in acc])
        err = [mean - [a["lo"] for a in acc], np.array([a["hi"] for a in acc]) - mean]
        ax.errorbar(x, mean, yerr=err, fmt="o", capsize=3, label=method)
    for j, g in enumerate(groups):
        b = summary["baselines"][g]
        ax.hlines(b["majority"], j - 0.45, j + 0.45, colors="gray", linestyles="--",
                  label="majority of train" if j == 0 else None)
        ax.hlines(b["best_constant"], j - 0.45, j + 0.45, colors="black", linestyles=":",
                  label="best constant on test" if j == 0 else None)
    ax.set_xticks(range(len(groups)), groups, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy ({score}), 95% interval")
    ax.legend(fontsize=7, loc="best")
    save_figure(fig, path)


def mean_curve(by_seed: dict[object, list[dict]]) -> tuple[list[float], list[float], list[float], list[float]]:
    """Steps, and the mean, min and max of the loss over the seeds that logged each step."""
    at: dict[float, list[float]] = defaultdict(list)
    for rows in by_seed.values():
        for row in rows:
            if "step" in row and "loss" in row:
                at[row["step"]].append(row["loss"])
    steps = sorted(at)
    return (steps, [float(np.mean(at[s])) for s in steps], [min(at[s]) for s in steps],
            [max(at[s]) for s in steps])


def plot_losses(curves: dict, smooth: int, path) -> None:
    """Training loss per method, mean over seeds (band: min to max over seeds)."""
    plt = pyplot()
    fig, ax = plt.subplots(figsize=(7, 4))
    for method, by_seed in curves.items():
        steps, mean, lo, hi = mean_curve(by_seed)
        if not steps:
            continue
        line, = ax.plot(steps, moving_average(mean, smooth), label=f"{method} ({len(by_seed)} seeds)")
        if len(by_seed) > 1:
            ax.fill_between(steps, moving_average(lo, smooth), moving_average(hi, smooth),
                            color=line.get_color(), alpha=0.2)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving average {smooth})")
    ax.legend(fontsize=8)
    save_figure(fig, path)


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _errorbar(ax, points, **kw):
    mean = np.array([p.accuracy.mean for p in points])
    err = [mean - [p.accuracy.lo for p in points], np.array([p.accuracy.hi for p in points]) - mean]
    return ax.errorbar([p.tokens_per_question for p in points], mean, yerr=err, capsize=3, **kw)


def plot_frontier(points, path) -> None:
    """Accuracy (95% error bars) against tokens per question: methods and routers as labelled
    points, the τ sweep as a line, the oracle as a star; written atomically."""
    plt = pyplot()
    from matplotlib.ticker import FuncFormatter

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for p in points:
        if p.kind in ("method", "router"):
            _errorbar(ax, [p], fmt="o" if p.kind == "method" else "s", label=p.method)
            ax.annotate(p.method, (p.tokens_per_question, p.accuracy.mean), fontsize=6,
                        xytext=(4, 4), textcoords="offset points")
    sweep = [p for p in points if p.kind == "sweep"]
    if sweep:
        _errorbar(ax, sweep, fmt="-^", color="gray", alpha=0.8, markersize=4, label=SWEEP_LABEL)
        for p in sweep:
            ax.annotate(f"τ={p.tau:.2f}" if p.tau is not None else p.method, fontsize=5,
                        xy=(p.tokens_per_question, p.accuracy.mean), xytext=(3, -8),
                        textcoords="offset points")
    for p in points:
        if p.kind == "oracle":
            _errorbar(ax, [p], fmt="*", markersize=14, color="gold", markeredgecolor="black",
                      label=ORACLE_LABEL)
    if points and min(p.tokens_per_question for p in points) > 0:
        ax.set_xscale("log")
        plain = FuncFormatter(lambda v, _: f"{v:g}")  # 20, not 2×10¹
        ax.xaxis.set_major_formatter(plain)
        ax.xaxis.set_minor_formatter(plain)
    ax.set_ylim(0, 1)
    ax.set_xlabel("generated tokens per question")
    ax.set_ylabel("overall accuracy, 95% interval")
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=6, loc="best")
    save_figure(fig, path)
