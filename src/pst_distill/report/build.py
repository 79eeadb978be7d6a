"""The report: accuracy per method and task with 95% intervals next to the constant
baselines, paired differences, predicted-label histograms, generation cost and training
figures, and the adaptive student's accuracy against generated tokens (``report.md``); the
figures a team compares (``summary.json``, declared as DVC metrics); and three plots.

Inputs are the pipeline's files, one per method and training seed, named
``<method>-<seed>``: predictions (``.jsonl``, evaluate_student), training metrics (``.json``)
and loss curves (``.tsv``, train_student); and the prepared splits (train: the majority
baseline; test: the size of the evaluation set). A predictions file whose rows name
another method (``adaptive-<seed>.jsonl``: ``"adaptive:<router>"``) is split into those
methods. The statistics are in :mod:`.stats`, the comparison tables in :mod:`.tables` and
the adaptive frontier in :mod:`.frontier`.
"""

from __future__ import annotations

import csv
import logging
import os
from collections import Counter, defaultdict
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from pst_distill.config.adaptive import AdaptiveConfig
from pst_distill.io import read_json, read_jsonl, write_json, write_text
from pst_distill.report import frontier as fr
from pst_distill.report.headline import headline
from pst_distill.report import tables as rt
from pst_distill.report.plots import plot_accuracy, plot_frontier, plot_losses
from pst_distill.report.stats import accuracy_interval, best_constant_baseline, majority_baseline
from pst_distill.scoring import figures

log = logging.getLogger(__name__)

RNG_SEED = 0  # bootstrap draws: the same numbers in summary.json and in report.md
Runs = dict  # {method: {seed: value}}, methods in tables.method_order, seeds sorted


@dataclass(frozen=True)
class Inputs:
    predictions: Path  # folder of <method>-<seed>.jsonl
    train: Path  # prepared train split (jsonl)
    test: Path  # prepared test split (jsonl)
    train_metrics: Path  # folder of <method>-<seed>.json
    curves: Path  # folder of <method>-<seed>.tsv
    # the runs the params ask for ((method, seed) of train.methods x train.seeds): files of
    # other runs (left in the folders by an earlier matrix) are skipped; None: every file
    runs: frozenset | None = None


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


def find_runs(folder, suffix: str, runs: frozenset | None = None) -> Runs:
    """``{method: {seed: path}}`` of the ``<method>-<seed><suffix>`` files in ``folder``;
    other files (e.g. left over from a run without seeds), and with ``runs`` the files of
    runs not in it (left over from an earlier matrix: DVC keeps the outputs of a stage that
    is no longer in dvc.yaml), are skipped with a warning."""
    found: dict = defaultdict(dict)
    for path in sorted(Path(folder).glob(f"*{suffix}")):
        run = parse_run(path.name[: -len(suffix)])
        if run is None:
            log.warning("%s: not named <method>-<seed>%s, skipped", path, suffix)
            continue
        if runs is not None and run not in runs:
            log.warning("%s: not a run of train.methods x train.seeds, skipped", path)
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
    """Generated tokens and seconds per question, share of unparsed answers; the seconds a
    question waits asked alone, where the evaluation timed some so."""
    fig = figures([r for rows in rows_by_seed.values() for r in rows])
    out = {"tokens_per_question": round(fig["generated_tokens_per_question"], 3),
           "seconds_per_question": round(fig["seconds_per_question"], 4),
           "invalid_share": round(fig[f"parse_failures_{score}"] / max(fig["n"], 1), 4)}
    if "latency_seconds_per_question" in fig:
        out["latency_seconds_per_question"] = round(fig["latency_seconds_per_question"], 4)
    return out


def fit_figures(fit: dict) -> dict:
    """The numbers of a router fit (routing.fit_routers) that summary.json keeps."""
    return {"tau": fit["tau"], "held_out": fit["held_out"],
            "fast_accuracy": fit["fast_accuracy"], "think_accuracy": fit["think_accuracy"],
            "thinking_pays": fit["perception"]["thinking_pays"]}


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


def _num(value, fmt: str) -> str:
    return "–" if value is None else format(value, fmt)


def split_name(test_rows: list[dict]) -> str:
    """``validation`` when prepare_data wrote a validation split (prepare.split), else ``test``."""
    return "validation" if any(r.get("split") == "validation" for r in test_rows) else "test"


def evaluation_set_table(arrays: rt.Arrays, test_rows: list[dict]) -> str:
    """Per task: answer type, split size, questions evaluated, gold labels of both."""
    name = split_name(test_rows)
    split = labels_by_task(test_rows)
    rows = []
    for task, ta in next(iter(arrays.values())).items():
        def hist(labels):
            return ", ".join(f"{k} {v}" for k, v in sorted(Counter(labels).items())) if ta.is_label_task else "–"
        rows.append([task, ta.answer_type, str(len(split.get(task, []))), str(len(ta.ids)),
                     hist(ta.answers), hist(split.get(task, []))])
    return rt.markdown_table(["task", "answer type", f"{name} split", "evaluated",
                              "evaluated labels", f"{name}-split labels"], rows)


def cost_table(summary: dict, predictions: Runs) -> str:
    rows = [[m, str(len(predictions[m])), _num(s["tokens_per_question"], ".1f"),
             _num(s["seconds_per_question"], ".3f"),
             _num(s.get("latency_seconds_per_question"), ".3f"), _num(s["invalid_share"], ".3f")]
            for m, s in summary["methods"].items()]
    return rt.markdown_table(["method", "seeds", "tokens/q", "s/q (batched)", "s/q (alone)",
                              "unparsed share"], rows)


# the trainer's compared metrics (train.metrics.COMPARED) that the training table shows: read
# by their exact keys, so a renamed key fails loudly instead of leaving a blank column
TRAIN_FIGURES = (("tokens/s", "tokens_per_s", ".0f"), ("questions seen", "questions_seen", ".0f"),
                 ("sequences seen", "sequences_seen", ".0f"), ("epochs", "epochs", ".2f"))
TRAIN_KEYS = ("final", *(key for _, key, _ in TRAIN_FIGURES))


def checked_train_metrics(metrics: dict, where) -> dict:
    missing = [k for k in TRAIN_KEYS if k not in metrics]
    if missing:
        raise ValueError(f"{where}: training metrics lack {', '.join(missing)} (the trainer "
                         "writes them: re-run train_student, or update the report's keys)")
    return metrics


def _mean(values: list) -> float | None:
    values = [v for v in values if v is not None]
    return float(np.mean(values)) if values else None


def training_table(train: Runs) -> str:
    """Per method, mean over its seeds: final loss parts (the mean over each run's last
    steps), throughput, data seen."""
    if not train:
        return "_no training metrics found_"
    names = sorted({k for by_seed in train.values() for m in by_seed.values() for k in m["final"]},
                   key=lambda k: (k != "loss", k))
    rows = []
    for method, by_seed in train.items():
        cells = [_num(_mean([m["final"].get(k) for m in by_seed.values()]), ".4f") for k in names]
        cells += [_num(_mean([m[key] for m in by_seed.values()]), fmt)
                  for _, key, fmt in TRAIN_FIGURES]
        rows.append([method, str(len(by_seed)), *cells])
    return rt.markdown_table(["method", "seeds", *[f"final {k}" for k in names],
                              *[h for h, _, _ in TRAIN_FIGURES]], rows)


def markdown(body: dict) -> str:
    """Assemble report.md from its sections (``body``: strings built by build_report)."""
    notes = ["", *body["notes"]] if body["notes"] else []
    parts = ["# PST distillation report", "", body["headline"], body["runs"], *notes, "",
             "## Evaluation set", "", body["evaluation_set"], "", body["comparison"],
             "## Generation cost", "", "Mean over seeds and questions (greedy). s/q (batched): "
             "each question's share of its batch's time; s/q (alone): the questions timed one "
             "at a time (evaluate.latency_per_task; – where none were).", "",
             body["cost"], "", *([body["frontier"]] if body.get("frontier") else []),
             "## Training", "", "Mean over seeds; final loss parts are the mean "
             "of each run's last 5 steps.", "", body["training"], "", "## Plots", "",
             *[f"![{name}]({path})" for name, path in body["plots"].items()]]
    return "\n".join(parts) + "\n"


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


def load_predictions(folder, acfg=None, runs: frozenset | None = None) -> tuple[Runs, list[str], dict]:
    """``{method: {seed: rows}}`` of every method (adaptive routers, the oracle and sweep
    points included), seeds every method shares; notes on what was left out; and the
    routers' fit per seed. An adaptive file holds both modes' rows: its routers are fitted on
    the held-out rows and applied to the test rows here (``acfg``: the adaptive section)."""
    from pst_distill.evaluate.routing import route_rows

    files = find_runs(folder, ".jsonl", runs)
    if not files:
        raise FileNotFoundError(f"no <method>-<seed>.jsonl predictions in {folder}")
    found: dict = defaultdict(dict)
    fits: dict = defaultdict(dict)
    for method, by_seed in files.items():
        for seed, path in by_seed.items():
            rows = read_jsonl(path)
            if rows and "split" in rows[0]:  # both modes of an adaptive student
                rows, fits[method][seed] = route_rows(rows, acfg or AdaptiveConfig(), seed)
            for name, group in regroup(method, rows).items():
                found[name][seed] = group
    runs, notes = common_seeds({m: found[m] for m in sorted(found, key=rt.method_order)})
    return runs, notes, dict(fits)


def build_report(inputs: Inputs, outputs: Outputs, cfg, acfg=None) -> dict:
    """Write report.md, summary.json and the plots; return the summary. The oracle and the
    τ sweep points are in the frontier section only (pst_distill.report.frontier)."""
    every, notes, fits = load_predictions(inputs.predictions, acfg, inputs.runs)
    predictions = fr.split_analysis(every)[0]
    train_labels = labels_by_task(read_jsonl(inputs.train))
    every_arrays = rt.build_arrays(every, cfg.score)
    arrays = {m: every_arrays[m] for m in predictions}
    summary = summarize(arrays, predictions, train_labels, cfg.score, cfg.n_boot)
    points = fr.frontier_points(every_arrays, every, cfg.n_boot, RNG_SEED)
    fr.add_to_summary(summary, points)
    if fits:
        summary["frontier"]["fit"] = {m: {str(seed): fit_figures(f) for seed, f in by_seed.items()}
                                      for m, by_seed in fits.items()}
    frontier_plot = outputs.frontier_plot or Path(outputs.accuracy_plot).with_name("frontier.png")
    plot_frontier(points, frontier_plot)
    train = {m: {s: checked_train_metrics(read_json(p), p) for s, p in by_seed.items()}
             for m, by_seed in find_runs(inputs.train_metrics, ".json", inputs.runs).items()}
    curves = {m: {s: read_curve(p) for s, p in by_seed.items()}
              for m, by_seed in find_runs(inputs.curves, ".tsv", inputs.runs).items()}
    plot_accuracy(summary, cfg.score, outputs.accuracy_plot)
    plot_losses(curves, cfg.smooth, outputs.loss_plot)
    md_dir = Path(outputs.markdown).parent
    link = Path(os.path.relpath(frontier_plot, md_dir)).as_posix()
    seeds = sorted({s for by_seed in predictions.values() for s in by_seed}, key=_seed_key)
    test_rows = read_jsonl(inputs.test)
    body = {"headline": headline(arrays, predictions, summary, split_name(test_rows), cfg.n_boot,
                                 RNG_SEED, seeds),
            "runs": f"Methods: {', '.join(predictions)}; training seeds: {', '.join(map(str, seeds))}.",
            "notes": [f"- {n}" for n in notes],
            "evaluation_set": evaluation_set_table(arrays, test_rows),
            "comparison": rt.comparison_report(predictions, train_labels, cfg.score, cfg.n_boot, RNG_SEED),
            "cost": cost_table(summary, predictions), "training": training_table(train),
            "frontier": fr.frontier_section(points, every, link),
            "plots": {name: Path(os.path.relpath(p, md_dir)).as_posix() for name, p in
                      (("accuracy per task", outputs.accuracy_plot), ("training loss", outputs.loss_plot))}}
    write_text(outputs.markdown, markdown(body))
    write_json(outputs.summary, summary)
    log.info("report: %d methods × %d seeds, %d training runs", len(predictions), len(seeds),
             sum(map(len, train.values())))
    return summary
