"""The report's first lines: what the run shows, in plain words, with the intervals that
decide it. Accuracy: the paired differences of the comparisons the method is about, per task
and overall, said to resolve only where the 95% interval excludes zero, and each method
against the best constant answer. Cost: an answer-first method's generated tokens and
seconds per question as a share of pre-thinking's, with a paired bootstrap interval over
the same questions and seeds; where the evaluation also timed questions one at a time
(``evaluate.latency_per_task``), the same share of the seconds one question waits."""

from __future__ import annotations

from typing import Mapping, Sequence

import numpy as np

from pst_distill import methods
from pst_distill.report import tables as rt
from pst_distill.report.stats import paired_difference

# A − B comparisons the headline reads, in this order
PAIRS = (("pre_thinking", "answer_only"), ("post_thinking", "answer_only"),
         ("pst", "answer_only"), ("step_by_step", "answer_only"), ("pst", "post_thinking"))
# the answer-first methods of the table besides answer_only itself, and adaptive's fast mode
ANSWER_FIRST = (*(m for m in methods.ANSWER_FIRST if m != "answer_only"), "adaptive:always_fast")
COST_KEYS = (("generated_tokens", "tokens"), ("seconds", "seconds"))  # row key, name
LATENCY_KEY = "latency_seconds"  # present on the questions also generated alone


def paired_values(rows_a: Mapping, rows_b: Mapping, key: str) -> list[tuple[float, float]]:
    """``(A[key], B[key])`` of each (seed, question) where both rows carry ``key``."""
    b_by = {(seed, r["id"]): r[key] for seed, rows in rows_b.items() for r in rows if key in r}
    return [(r[key], b_by[(seed, r["id"])]) for seed, rows in rows_a.items() for r in rows
            if key in r and (seed, r["id"]) in b_by]


def cost_ratio(rows_a: Mapping, rows_b: Mapping, key: str, n_boot: int,
               rng_seed: int) -> tuple[float, float, float]:
    """``sum(A[key]) / sum(B[key])`` over the questions and seeds where both rows carry
    ``key`` (:func:`paired_values`), with a 95% percentile interval from resampling those
    (seed, question) pairs together."""
    pairs = paired_values(rows_a, rows_b, key)
    if not pairs:
        raise ValueError(f"no questions in common to compare {key!r}")
    a, b = np.array(pairs, dtype=float).T
    idx = np.random.default_rng(rng_seed).integers(0, len(a), (n_boot, len(a)))
    boot = a[idx].sum(axis=1) / np.maximum(b[idx].sum(axis=1), 1e-12)
    lo, hi = np.quantile(boot, [0.025, 0.975])
    return float(a.sum() / max(b.sum(), 1e-12)), float(lo), float(hi)


def _diff(d) -> str:
    return f"{d.mean:+.2f} [{d.lo:+.2f}, {d.hi:+.2f}]"


def accuracy_lines(arrays: rt.Arrays, n_boot: int, rng_seed: int) -> list[str]:
    tasks = rt.tasks_of(arrays)
    resolved, open_ = [], []
    for a, b in PAIRS:
        if a not in arrays or b not in arrays:
            continue
        for task in [*tasks, rt.OVERALL]:
            ca, cb = rt.correct_of(arrays[a], task), rt.correct_of(arrays[b], task)
            d = paired_difference(ca, cb, n_boot, rng_seed)
            where = "overall" if task == rt.OVERALL else f"on {task}"
            text = (f"{a} {'above' if d.mean > 0 else 'below'} {b} {where}: {ca.mean():.2f} "
                    f"against {cb.mean():.2f}, difference {_diff(d)}")
            (resolved if d.excludes_zero else open_).append((text, d))
    lines = [f"- **Resolved**: {t}." for t, _ in resolved]
    if not resolved:
        lines.append("- **No accuracy difference resolves**: every compared pair's 95% "
                     "interval includes zero.")
    elif open_:
        widest = max(open_, key=lambda td: td[1].hi - td[1].lo)[1]
        lines.append(f"- Not resolved: the other {len(open_)} comparisons of "
                     f"{', '.join(f'{a} − {b}' for a, b in PAIRS if a in arrays and b in arrays)} "
                     f"(intervals up to ±{(widest.hi - widest.lo) / 2:.2f} wide).")
    return lines


def baseline_line(summary: dict) -> str:
    best = summary["baselines"][rt.OVERALL]["best_constant"]
    above = [m for m, row in summary["methods"].items()
             if row["accuracy"][rt.OVERALL]["lo"] > best]
    if not above:
        return (f"- No method's overall interval lies above the best constant answer "
                f"({best:.3f}): at this size the students are not shown to beat it.")
    return (f"- Above the best constant answer overall ({best:.3f}, interval excluded): "
            f"{', '.join(above)}.")


def cost_lines(predictions: Mapping, n_boot: int, rng_seed: int) -> list[str]:
    if "pre_thinking" not in predictions:
        return []
    lines = []
    for method in ANSWER_FIRST:
        if method not in predictions:
            continue
        parts = []
        for key, _ in COST_KEYS:
            r, lo, hi = cost_ratio(predictions[method], predictions["pre_thinking"], key,
                                   n_boot, rng_seed)
            parts.append(f"{r:.2f} [{lo:.2f}, {hi:.2f}]")
        line = (f"- Cost: {method} answers first and stops after the answer: "
                f"{parts[0]} of pre_thinking's generated tokens and {parts[1]} of its "
                f"seconds per question")
        n_alone = len(paired_values(predictions[method], predictions["pre_thinking"], LATENCY_KEY))
        if n_alone:
            r, lo, hi = cost_ratio(predictions[method], predictions["pre_thinking"],
                                   LATENCY_KEY, n_boot, rng_seed)
            line += (f" in batches; {r:.2f} [{lo:.2f}, {hi:.2f}] of the seconds one question "
                     f"waits, asked alone ({n_alone} questions timed one at a time)")
        lines.append(line + ".")
    return lines


def headline(arrays: rt.Arrays, predictions: Mapping, summary: dict, split: str,
             n_boot: int, rng_seed: int, seeds: Sequence) -> str:
    """``## In short``: the lines above, on the split the students were evaluated on."""
    n_q = {t: next(iter(arrays.values()))[t].correct.shape[1] for t in rt.tasks_of(arrays)}
    what = ("the **validation** split (training questions held out; choose settings here, "
            "report the test split once)" if split == "validation" else "the test split")
    head = (f"Evaluated on {what}: {', '.join(f'{q} {t}' for t, q in n_q.items())} questions, "
            f"{len(seeds)} training seed{'s' if len(seeds) != 1 else ''}; intervals are 95%, "
            f"paired over the same questions.")
    return "\n".join(["## In short", "", head, "", *accuracy_lines(arrays, n_boot, rng_seed),
                      baseline_line(summary), *cost_lines(predictions, n_boot, rng_seed), ""])
