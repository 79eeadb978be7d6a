"""The report: methods × tasks accuracy with token and time cost, and two PNG plots.

Inputs are the files the pipeline already wrote: evaluation metrics (JSON with
``"stage": "evaluate_student"``), training metrics, and per-step loss curves (TSV).
"""

from __future__ import annotations

import csv
import logging
import os
from pathlib import Path

from pst_distill.formats import METHODS
from pst_distill.io import read_json, write_text

log = logging.getLogger(__name__)


def _order(method: str) -> tuple:
    return (METHODS.index(method) if method in METHODS else len(METHODS), method)


def load_metrics(folder, stage: str | None = "evaluate_student") -> dict[str, dict]:
    """{method: metrics} of the JSON files directly in ``folder`` (of one stage)."""
    found = {}
    for path in sorted(Path(folder).glob("*.json")):
        data = read_json(path)
        if isinstance(data, dict) and "method" in data and (stage is None or data.get("stage") == stage):
            found[data["method"]] = data
    return dict(sorted(found.items(), key=lambda kv: _order(kv[0])))


def load_curves(folder) -> dict[str, list[tuple[int, float]]]:
    """{method: [(step, loss)]} from ``<method>.tsv`` files."""
    curves = {}
    for path in sorted(Path(folder).glob("*.tsv")):
        with open(path, encoding="utf-8") as fh:
            rows = list(csv.DictReader(fh, delimiter="\t"))
        curves[path.stem] = [(int(r["step"]), float(r["loss"])) for r in rows]
    return dict(sorted(curves.items(), key=lambda kv: _order(kv[0])))


def tasks_of(metrics: dict[str, dict]) -> list[str]:
    return sorted({t for m in metrics.values() for t in m.get("tasks", {})})


def accuracy_table(metrics: dict[str, dict], score: str) -> str:
    tasks = tasks_of(metrics)
    head = ["method", *tasks, "overall", "other score", "parse fail", "tokens/q", "s/q", "n"]
    other = "strict" if score == "flexible" else "flexible"
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for method, m in metrics.items():
        cells = [method]
        cells += [f"{m['tasks'][t][f'accuracy_{score}']:.3f}" if t in m["tasks"] else "–" for t in tasks]
        cells += [f"**{m[f'accuracy_{score}']:.3f}**", f"{m[f'accuracy_{other}']:.3f}",
                  str(m[f"parse_failures_{score}"]), f"{m['generated_tokens_per_question']:.1f}",
                  f"{m['seconds_per_question']:.3f}", str(m["n"])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def training_table(train: dict[str, dict]) -> str:
    lines = ["| method | finetune | steps | final loss | tokens/s | wall s |", "|---|---|---|---|---|---|"]
    for method, m in train.items():
        loss = "–" if m.get("final_loss") is None else f"{m['final_loss']:.4f}"
        lines.append(f"| {method} | {m.get('finetune', '–')} | {m.get('steps', '–')} | {loss} | "
                     f"{m.get('tokens_per_s', 0):.0f} | {m.get('wall_seconds', 0):.0f} |")
    return "\n".join(lines)


def markdown(metrics: dict, train: dict, score: str, plots: dict[str, str]) -> str:
    parts = ["# PST distillation report", "",
             f"Accuracy ({score} extraction; 'other score' is the other one) per task, with the "
             "generated tokens and seconds per question (greedy, batched).", "",
             accuracy_table(metrics, score) if metrics else "_no evaluation metrics found_"]
    if train:
        parts += ["", "## Training", "", training_table(train)]
    parts += ["", "## Plots", ""] + [f"![{name}]({path})" for name, path in plots.items()]
    return "\n".join(parts) + "\n"


def plot_accuracy(metrics: dict[str, dict], score: str, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    tasks = tasks_of(metrics) + ["overall"]
    fig, ax = plt.subplots(figsize=(max(6, 1.8 * len(tasks)), 4))
    width = 0.8 / max(len(metrics), 1)
    for i, (method, m) in enumerate(metrics.items()):
        vals = [m["tasks"].get(t, {}).get(f"accuracy_{score}", 0.0) for t in tasks[:-1]]
        vals.append(m[f"accuracy_{score}"])
        ax.bar([x + i * width for x in range(len(tasks))], vals, width, label=method)
    ax.set_xticks([x + width * (len(metrics) - 1) / 2 for x in range(len(tasks))], tasks, fontsize=8)
    ax.set_ylim(0, 1)
    ax.set_ylabel(f"accuracy ({score})")
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_losses(curves: dict[str, list], smooth: int, path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4))
    for method, points in curves.items():
        if not points:
            continue
        steps, loss = zip(*points)
        ax.plot(steps, moving_average(list(loss), smooth), label=method)
    ax.set_xlabel("step")
    ax.set_ylabel(f"training loss (moving average {smooth})")
    ax.legend(fontsize=8)
    _save(fig, path)


def moving_average(values: list[float], window: int) -> list[float]:
    out, total = [], 0.0
    for i, v in enumerate(values):
        total += v
        if i >= window:
            total -= values[i - window]
        out.append(total / min(i + 1, window))
    return out


def _save(fig, path) -> None:
    import matplotlib.pyplot as plt

    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    tmp.replace(path)


def build_report(eval_dir, train_dir, curves_dir, out_md, accuracy_png, loss_png, cfg) -> dict:
    """Write the Markdown report and both plots; return what went in."""
    metrics, train = load_metrics(eval_dir), load_metrics(train_dir, stage=None)
    curves = load_curves(curves_dir)
    plot_accuracy(metrics, cfg.score, accuracy_png)
    plot_losses(curves, cfg.smooth, loss_png)
    md_dir = Path(out_md).parent
    plots = {"accuracy per task": Path(os.path.relpath(accuracy_png, md_dir)).as_posix(),
             "training loss": Path(os.path.relpath(loss_png, md_dir)).as_posix()}
    write_text(out_md, markdown(metrics, train, cfg.score, plots))
    log.info("report: %d evaluated methods, %d loss curves", len(metrics), len(curves))
    return {"methods": list(metrics), "curves": list(curves)}
