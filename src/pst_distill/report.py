"""The report: accuracy per method and task with 95% intervals next to the constant
baselines, paired differences, predicted-label histograms, generation cost and training
figures, and the adaptive student's accuracy against generated tokens (``report.md``); the
figures a team compares (``summary.json``, declared as DVC metrics); and three plots.

Inputs are the pipeline's files, one per method and training seed, named
``<method>-<seed>``: predictions (``.jsonl``, evaluate_student), training metrics (``.json``)
and loss curves (``.tsv``, train_student); and the prepared splits (train: the majority
baseline; test: the size of the evaluation set). A predictions file whose rows name
another method (``adaptive-<seed>.jsonl``: ``"adaptive:<router>"``) is split into those
methods. The statistics are in :mod:`pst_distill.stats`, the comparison tables in
:mod:`pst_distill.report_tables` and the adaptive frontier in :mod:`pst_distill.frontier`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pst_distill import frontier as fr
from pst_distill import report_tables as rt
from pst_distill.io import read_json, read_jsonl, write_json, write_text
from pst_distill.parsing import INVALID
from pst_distill.stats import accuracy_interval, best_constant_baseline, majority_baseline

log = logging.getLogger(__name__)

RNG_SEED = 0  # bootstrap draws: the same numbers in summary.json and in report.md
Runs = dict  # {method: {seed: value}}, methods in report_tables.method_order, seeds sorted


@dataclass(frozen=True)
class Inputs:
    predictions: Path  # folder of <method>-<seed>.jsonl
    train: Path  # prepared train split (jsonl)
    test: Path  # prepared test split (jsonl)
    train_metrics: Path  # folder of <method>-<seed>.json
    curves: Path  # folder of <method>-<seed>.tsv


@dataclass(frozen=True)
class Outputs:
    markdown: Path
    summary: Path
    accuracy_plot: Path
    loss_plot: Path
    frontier_plot: Path | None = None  # None: frontier.png next to the accuracy plot


# ------------------------------------------------------------------ loading
def _seed_key(seed) -> tuple:
    return (0, seed, "") if isinstance(seed, int) else (1, 0, str(seed))  # 2 before 10


def parse_run(stem: str) -> tuple[str, int | str] | None:
    """``"<method>-<seed>"`` -> ``(method, seed)`` (an int seed where it is one); None if
    the name has no seed part."""
    method, sep, seed = stem.rpartition("-")
    if not sep or not method or not seed:
        return None
    return method, int(seed) if seed.isdigit() else seed


def find_runs(folder, suffix: str) -> Runs:
    """``{method: {seed: path}}`` of the ``<method>-<seed><suffix>`` files in ``folder``;
    other files (e.g. left over from a run without seeds) are skipped with a warning."""
    found: dict = defaultdict(dict)
    for path in sorted(Path(folder).glob(f"*{suffix}")):
        run = parse_run(path.name[: -len(suffix)])
        if run is None:
            log.warning("%s: not named <method>-<seed>%s, skipped", path, suffix)
            continue
        found[run[0]][run[1]] = path
    return {m: dict(sorted(found[m].items(), key=lambda kv: _seed_key(kv[0])))
            for m in sorted(found, key=rt.method_order)}


def _float(value) -> float | None:
    try:
        return float(value)
    except (TypeError, ValueError):
        return None


def read_curve(path) -> list[dict[str, float]]:
    """Rows of a loss curve (TSV with a header), numeric columns only."""
    with open(path, encoding="utf-8") as fh:
        rows = list(csv.DictReader(fh, delimiter="\t"))
    return [{k: v for k, v in ((k, _float(x)) for k, x in row.items()) if v is not None}
            for row in rows]


def labels_by_task(rows: list[dict]) -> dict[str, list[str]]:
    out: dict[str, list[str]] = defaultdict(list)
    for row in rows:
        out[row["task"]].append(str(row["answer"]))
    return dict(out)


def common_seeds(predictions: Runs) -> tuple[Runs, list[str]]:
    """Keep the seeds every method was evaluated with (a paired comparison needs the same
    seeds); say which runs were left out."""
    shared = set.intersection(*(set(by_seed) for by_seed in predictions.values()))
    if not shared:
        raise ValueError("no training seed was evaluated for every method: "
                         + ", ".join(f"{m}: {list(s)}" for m, s in predictions.items()))
    notes = [f"{m}: seed(s) {sorted(set(s) - shared, key=_seed_key)} left out (not evaluated for "
             "every method)" for m, s in predictions.items() if set(s) - shared]
    return {m: {s: rows for s, rows in by_seed.items() if s in shared}
            for m, by_seed in predictions.items()}, notes


# ------------------------------------------------------------------ figures
def _interval(correct, n_boot: int) -> dict:
    iv = accuracy_interval(correct, n_boot, RNG_SEED)
    return {"mean": round(iv.mean, 4), "lo": round(iv.lo, 4), "hi": round(iv.hi, 4),
            "n_seeds": iv.n_seeds}


def cost(rows_by_seed: dict, score: str) -> dict:
    """Generated tokens and seconds per question, share of unparsed answers."""
    rows = [r for rows in rows_by_seed.values() for r in rows]
    n = max(len(rows), 1)
    return {"tokens_per_question": round(sum(r["generated_tokens"] for r in rows) / n, 3),
            "seconds_per_question": round(sum(r["seconds"] for r in rows) / n, 4),
            "invalid_share": round(sum(r[f"pred_{score}"] == INVALID for r in rows) / n, 4)}


def baselines(arrays: rt.Arrays, train_labels: dict[str, list[str]]) -> dict:
    """Accuracy of the majority-of-train and best-constant predictors per task and overall
    (pooled over tasks). The labels they answer are in report.md, not here: metrics are numbers."""
    gold = {t: next(iter(arrays.values()))[t].answers for t in rt.tasks_of(arrays)}
    out, hits = {}, Counter()
    for task, answers in gold.items():
        if not train_labels.get(task):
            raise ValueError(f"no training labels for task {task!r}: the majority baseline needs them")
        maj, best = majority_baseline(train_labels[task], answers), best_constant_baseline(answers)
        out[task] = {"majority": round(maj.accuracy.mean, 4),
                     "best_constant": round(best.accuracy.mean, 4)}
        hits.update(majority=maj.accuracy.mean * len(answers), best=best.accuracy.mean * len(answers),
                    n=len(answers))
    out[rt.OVERALL] = {"majority": round(hits["majority"] / hits["n"], 4),
                       "best_constant": round(hits["best"] / hits["n"], 4)}
    return out


def summarize(arrays: rt.Arrays, predictions: Runs, train_labels, score: str, n_boot: int) -> dict:
    """What summary.json holds: per method accuracy (mean, lo, hi, n_seeds) per task and
    overall, and its cost; per task and overall the baselines."""
    methods = {}
    for method, by_task in arrays.items():
        acc = {t: _interval(by_task[t].correct, n_boot) for t in rt.tasks_of(arrays)}
        acc[rt.OVERALL] = _interval(rt.overall_correct(by_task), n_boot)
        methods[method] = {"accuracy": acc, **cost(predictions[method], score)}
    return {"methods": methods, "baselines": baselines(arrays, train_labels)}


# ------------------------------------------------------------------ markdown
def _table(head: list[str], rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    return "\n".join(lines + ["| " + " | ".join(r) + " |" for r in rows])


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def evaluation_set_table(arrays: rt.Arrays, test_rows: list[dict]) -> str:
    """Per task: answer type, test split size, questions evaluated, gold labels of both."""
    split = labels_by_task(test_rows)
    rows = []
    for task, ta in next(iter(arrays.values())).items():
        def hist(labels):
            return ", ".join(f"{k} {v}" for k, v in sorted(Counter(labels).items())) if ta.is_label_task else "–"
        rows.append([task, ta.answer_type, str(len(split.get(task, []))), str(len(ta.ids)),
                     hist(ta.answers), hist(split.get(task, []))])
    return _table(["task", "answer type", "test split", "evaluated", "evaluated labels",
                      "test-split labels"], rows)


def cost_table(summary: dict, predictions: Runs) -> str:
    rows = [[m, str(len(predictions[m])), _num(s["tokens_per_question"], ".1f"),
             _num(s["seconds_per_question"], ".3f"), _num(s["invalid_share"], ".3f")]
            for m, s in summary["methods"].items()]
    return _table(["method", "seeds", "tokens/q", "s/q", "unparsed share"], rows)


def _first_number(d: dict, *keys):
    for key in keys:
        value = d.get(key)
        if isinstance(value, (int, float)) and not isinstance(value, bool):
            return float(value)
    return None


def final_parts(metrics: dict, curve: list[dict]) -> dict[str, float]:
    """The final loss and its parts: from the training metrics where they carry parts,
    else from the curve's last logged row (the trainer's keys are read defensively)."""
    for key in ("final_loss_parts", "final_losses", "final_parts", "final"):
        if isinstance(metrics.get(key), dict):
            return {k: float(v) for k, v in metrics[key].items() if isinstance(v, (int, float))}
    if curve:
        return {k: v for k, v in curve[-1].items() if _is_loss_column(k)}
    loss = _first_number(metrics, "final_loss", "loss")
    return {} if loss is None else {"loss": loss}


def _is_loss_column(name: str) -> bool:
    return name == "loss" or name.startswith(("ce_", "sem", "loss_")) or name.endswith("_loss")


TRAIN_FIGURES = (("tokens/s", ("tokens_per_s", "tokens_per_second"), ".0f"),
                 ("questions seen", ("questions_seen", "questions"), ".0f"),
                 ("sequences seen", ("sequences_seen", "sequences"), ".0f"),
                 ("epochs", ("epochs", "epochs_seen"), ".2f"))


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def training_table(train: Runs, curves: Runs) -> str:
    """Per method, mean over its seeds: final loss parts, throughput, data seen."""
    if not train:
        return "_no training metrics found_"
    parts = {m: [final_parts(met, curves.get(m, {}).get(s, [])) for s, met in by_seed.items()]
             for m, by_seed in train.items()}
    names = sorted({k for ps in parts.values() for p in ps for k in p}, key=lambda k: (k != "loss", k))
    rows = []
    for method, by_seed in train.items():
        cells = [_num(_mean([p.get(k) for p in parts[method]]), ".4f") for k in names]
        cells += [_num(_mean([_first_number(m, *keys) for m in by_seed.values()]), fmt)
                  for _, keys, fmt in TRAIN_FIGURES]
        rows.append([method, str(len(by_seed)), *cells])
    return _table(["method", "seeds", *[f"final {k}" for k in names],
                      *[h for h, _, _ in TRAIN_FIGURES]], rows)


def markdown(body: dict) -> str:
    """Assemble report.md from its sections (``body``: strings built by build_report)."""
    notes = ["", *body["notes"]] if body["notes"] else []
    parts = ["# PST distillation report", "", body["runs"], *notes, "",
             "## Evaluation set", "", body["evaluation_set"], "", body["comparison"],
             "## Generation cost", "", "Mean over seeds and questions (greedy, batched).", "",
             body["cost"], "", *([body["frontier"]] if body.get("frontier") else []),
             "## Training", "", "Mean over seeds; final loss parts are the mean "
             "of each run's last 5 steps.", "", body["training"], "", "## Plots", "",
             *[f"![{name}]({path})" for name, path in body["plots"].items()]]
    return "\n".join(parts) + "\n"


# ------------------------------------------------------------------ plots
def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def plot_accuracy(summary: dict, score: str, path) -> None:
    """Accuracy per task and overall with 95% error bars; baselines as horizontal marks."""
    plt = _pyplot()
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
    _save(fig, path)


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


def plot_losses(curves: Runs, smooth: int, path) -> None:
    """Training loss per method, mean over seeds (band: min to max over seeds)."""
    plt = _pyplot()
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
    plt = _pyplot()
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(path.name + ".tmp.png")
    fig.tight_layout()
    fig.savefig(tmp, dpi=110)
    plt.close(fig)
    os.replace(tmp, path)


# ------------------------------------------------------------------ the whole report
def regroup(file_method: str, rows: list[dict]) -> dict[str, list[dict]]:
    """The rows of one ``<method>-<seed>.jsonl`` by method: a row whose ``method`` names
    another one (``"adaptive:confidence"`` in ``adaptive-1.jsonl``: one row per question and
    router) goes to that method; the other rows stay with the file's method."""
    out: dict[str, list[dict]] = defaultdict(list)
    for row in rows:
        name = row.get("method")
        out[name if isinstance(name, str) and ":" in name and name != file_method
            else file_method].append(row)
    return dict(out)


def load_predictions(folder) -> tuple[Runs, list[str]]:
    """``{method: {seed: rows}}`` of every method (adaptive routers, the oracle and sweep
    points included), seeds every method shares; notes on what was left out."""
    runs = find_runs(folder, ".jsonl")
    if not runs:
        raise FileNotFoundError(f"no <method>-<seed>.jsonl predictions in {folder}")
    found: dict = defaultdict(dict)
    for method, by_seed in runs.items():
        for seed, path in by_seed.items():
            for name, rows in regroup(method, read_jsonl(path)).items():
                found[name][seed] = rows
    return common_seeds({m: found[m] for m in sorted(found, key=rt.method_order)})


def build_report(inputs: Inputs, outputs: Outputs, cfg) -> dict:
    """Write report.md, summary.json and the plots; return the summary. The oracle and the
    τ sweep points are in the frontier section only (pst_distill.frontier)."""
    every, notes = load_predictions(inputs.predictions)
    predictions = fr.split_analysis(every)[0]
    train_labels = labels_by_task(read_jsonl(inputs.train))
    every_arrays = rt.build_arrays(every, cfg.score)
    arrays = {m: every_arrays[m] for m in predictions}
    summary = summarize(arrays, predictions, train_labels, cfg.score, cfg.n_boot)
    points = fr.frontier_points(every_arrays, every, cfg.n_boot, RNG_SEED)
    fr.add_to_summary(summary, points)
    frontier_plot = outputs.frontier_plot or Path(outputs.accuracy_plot).with_name("frontier.png")
    fr.plot_frontier(points, frontier_plot)
    train = {m: {s: read_json(p) for s, p in by_seed.items()}
             for m, by_seed in find_runs(inputs.train_metrics, ".json").items()}
    curves = {m: {s: read_curve(p) for s, p in by_seed.items()}
              for m, by_seed in find_runs(inputs.curves, ".tsv").items()}
    plot_accuracy(summary, cfg.score, outputs.accuracy_plot)
    plot_losses(curves, cfg.smooth, outputs.loss_plot)
    md_dir = Path(outputs.markdown).parent
    link = Path(os.path.relpath(frontier_plot, md_dir)).as_posix()
    seeds = sorted({s for by_seed in predictions.values() for s in by_seed}, key=_seed_key)
    body = {"runs": f"Methods: {', '.join(predictions)}; training seeds: {', '.join(map(str, seeds))}.",
            "notes": [f"- {n}" for n in notes],
            "evaluation_set": evaluation_set_table(arrays, read_jsonl(inputs.test)),
            "comparison": rt.comparison_report(predictions, train_labels, cfg.score, cfg.n_boot, RNG_SEED),
            "cost": cost_table(summary, predictions), "training": training_table(train, curves),
            "frontier": fr.frontier_section(points, every, link),
            "plots": {name: Path(os.path.relpath(p, md_dir)).as_posix() for name, p in
                      (("accuracy per task", outputs.accuracy_plot), ("training loss", outputs.loss_plot))}}
    write_text(outputs.markdown, markdown(body))
    write_json(outputs.summary, summary)
    log.info("report: %d methods × %d seeds, %d training runs", len(predictions), len(seeds),
             sum(map(len, train.values())))
    return summary
