"""Adaptive thinking: accuracy against generated tokens, per method and per router.

The adaptive student answers in two modes (fast: answer first; think: rationale first) and
a router picks one per question. Its predictions, one file per seed, hold one row per
(question, router) with ``method = "adaptive:<router>"``, the scored ``mode`` and the cost of
the whole route. The report regroups them into methods (:mod:`pst_distill.report.build`); here they
become points of a cost/accuracy frontier: every reported method and router, the
confidence-threshold sweep (``confidence@<tau>``) as a curve, and the per-question oracle.

The oracle picks the better mode with the gold answer in hand and the sweep points are
tuned on the test set, so both are analysis only: they are kept out of the main tables and
of ``summary["methods"]`` (:func:`split_analysis`) and appear only here.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Mapping

import numpy as np

from pst_distill.report import tables as rt
from pst_distill.report.stats import Interval, accuracy_interval

ORACLE_LABEL = "oracle (upper bound, analysis only)"
SWEEP_LABEL = "confidence router, τ sweep"
THINK, FAST = "think", "fast"


@dataclass(frozen=True)
class Point:
    """One method or router on the frontier: overall accuracy against cost per question."""

    method: str  # "pst", "adaptive:confidence", "adaptive:confidence@0.50", ...
    kind: str  # "method" | "router" | "sweep" | "oracle"
    accuracy: Interval
    tokens_per_question: float
    seconds_per_question: float
    think_share: float | None  # share of questions answered in think mode (routers only)
    tau: float | None = None  # sweep points only


# ------------------------------------------------------------------ which method is what
def router_of(method: str) -> str | None:
    """``"adaptive:confidence@0.50"`` -> ``"confidence@0.50"``; None for a plain method."""
    base, sep, router = method.partition(":")
    return router if sep and base and router else None


def kind_of(method: str) -> str:
    router = router_of(method)
    if router is None:
        return "method"
    if router == "oracle":
        return "oracle"
    return "sweep" if "@" in router else "router"


def is_analysis_only(method: str) -> bool:
    """The oracle and the sweep points: chosen with hindsight on the test set, never a method."""
    return kind_of(method) in ("oracle", "sweep")


def split_analysis(predictions: Mapping) -> tuple[dict, dict]:
    """``(reported, analysis_only)`` methods of ``{method: {seed: rows}}``, order kept."""
    reported = {m: v for m, v in predictions.items() if not is_analysis_only(m)}
    return reported, {m: v for m, v in predictions.items() if is_analysis_only(m)}


def tau_of(method: str, rows_by_seed: Mapping) -> float | None:
    """The threshold of a sweep point: from its name, else from its rows' ``tau``."""
    try:
        return float((router_of(method) or "").partition("@")[2])
    except ValueError:
        taus = [r.get("tau") for rows in rows_by_seed.values() for r in rows]
        return float(taus[0]) if taus and taus[0] is not None else None


# ------------------------------------------------------------------ figures
def think_shares(rows_by_seed: Mapping) -> dict[str, float] | None:
    """Share of answers in think mode per task and overall (pooled over tasks and seeds,
    like the overall accuracy); None for rows without a ``mode`` (a fixed-order method)."""
    rows = [r for rows in rows_by_seed.values() for r in rows]
    if not rows or all("mode" not in r for r in rows):
        return None
    bad = sorted({str(r.get("mode")) for r in rows} - {THINK, FAST})
    if bad:
        raise ValueError(f"{rows[0].get('method')}: mode must be {FAST!r} or {THINK!r}, got {bad}")
    out = {}
    for task in sorted({r["task"] for r in rows}):
        of_task = [r["mode"] == THINK for r in rows if r["task"] == task]
        out[task] = sum(of_task) / len(of_task)
    out[rt.OVERALL] = sum(r["mode"] == THINK for r in rows) / len(rows)
    return out


def _per_question(rows_by_seed: Mapping, key: str) -> float:
    rows = [r for rows in rows_by_seed.values() for r in rows]
    return round(float(np.mean([r[key] for r in rows])), 4) if rows else 0.0  # as report.cost


def frontier_points(arrays: rt.Arrays, predictions: Mapping, n_boot: int = 2000,
                    rng_seed: int = 0) -> list[Point]:
    """Every method and router in ``arrays`` order, then the sweep sorted by tokens per
    question (the curve's order), then the oracle. ``arrays`` and ``predictions`` cover the
    same methods, analysis-only ones included; the interval is the report's (two-level
    bootstrap over seeds and questions of the overall correctness matrix)."""
    points = []
    for method, by_task in arrays.items():
        shares = think_shares(predictions[method])
        points.append(Point(
            method, kind_of(method),
            accuracy_interval(rt.overall_correct(by_task), n_boot, rng_seed),
            _per_question(predictions[method], "generated_tokens"),
            _per_question(predictions[method], "seconds"),
            None if shares is None else shares[rt.OVERALL],
            tau_of(method, predictions[method]) if kind_of(method) == "sweep" else None))
    rank = {"method": 0, "router": 0, "sweep": 1, "oracle": 2}
    return sorted(points, key=lambda p: (rank[p.kind], p.tokens_per_question if p.kind == "sweep"
                                         else 0.0, p.tau or 0.0))


def summary_part(points: list[Point]) -> dict:
    """summary.json's ``frontier``: the sweep (tokens order) and the oracle, 4 digits."""
    def compact(p: Point) -> dict:
        return {"accuracy": round(p.accuracy.mean, 4),
                "tokens_per_question": round(p.tokens_per_question, 4),
                "think_share": None if p.think_share is None else round(p.think_share, 4)}
    oracle = [compact(p) for p in points if p.kind == "oracle"]
    return {"confidence_sweep": [{"tau": p.tau, **compact(p)} for p in points if p.kind == "sweep"],
            "oracle": oracle[0] if oracle else None}


def add_to_summary(summary: dict, points: list[Point]) -> dict:
    """Give each router in ``summary["methods"]`` its overall think share; add ``frontier``."""
    for p in points:
        if p.kind == "router" and p.method in summary["methods"] and p.think_share is not None:
            summary["methods"][p.method]["think_share"] = round(p.think_share, 4)
    summary["frontier"] = summary_part(points)
    return summary


def label(p: Point) -> str:
    return ORACLE_LABEL if p.kind == "oracle" else p.method


def _share(value: float | None) -> str:
    return "–" if value is None else f"{value:.3f}"


def points_table(points: list[Point]) -> str:
    rows = [[label(p), "–" if p.tau is None else f"{p.tau:.2f}", rt.fmt_interval(p.accuracy),
             f"{p.tokens_per_question:.1f}", f"{p.seconds_per_question:.3f}", _share(p.think_share)]
            for p in points]
    return rt.markdown_table(["method / router", "τ", "accuracy [95% interval]", "tokens/q", "s/q",
                      "think share"], rows)


def think_share_table(predictions: Mapping, points: list[Point]) -> str:
    """Per router (sweep points left out): share of questions sent to thinking per task and
    overall, with the router's accuracy and tokens per question."""
    routers = [p for p in points if p.kind in ("router", "oracle")]
    if not routers:
        return "_no adaptive routers_"
    shares = {p.method: think_shares(predictions[p.method]) or {} for p in routers}
    tasks = sorted({t for s in shares.values() for t in s} - {rt.OVERALL})
    rows = [[label(p), *[_share(shares[p.method].get(t)) for t in [*tasks, rt.OVERALL]],
             f"{p.accuracy.mean:.3f}", f"{p.tokens_per_question:.1f}"] for p in routers]
    return rt.markdown_table(["router", *[f"think share {t}" for t in tasks], f"think share {rt.OVERALL}",
                      "accuracy", "tokens/q"], rows)


def frontier_section(points: list[Point], predictions: Mapping, plot_link: str) -> str:
    """report.md's section on adaptive thinking (level-2 heading), ending in a blank line."""
    head = ["## Adaptive thinking: accuracy against generated tokens", ""]
    image = f"![accuracy against generated tokens]({plot_link})"
    if not any(p.kind != "method" for p in points):
        return "\n".join(head + ["No adaptive predictions (adaptive-<seed>.jsonl): the plot shows "
                                 "the methods only.", "", image, ""])
    return "\n".join(head + [
        "Overall accuracy (95% interval as above) against mean generated tokens per question; a "
        "routed answer costs its whole route (fast, then think where it falls back). The τ sweep "
        "and the oracle (the better mode per question, chosen with the gold answer) are tuned on "
        "the test set: analysis only, not methods.", "", image, "", target_line(points), "",
        points_table(points), "",
        "Share of questions answered in think mode:", "", think_share_table(predictions, points), ""])


TARGET = "pre_thinking"  # the thinking baseline a router must match at a third of its tokens
CHOOSING = ("confidence", "perception")  # routers that decide per question (not the two ends)


def target_line(points: list[Point], share: float = 1 / 3) -> str:
    """Plainly: does a router reach pre_thinking's accuracy with at most ``share`` of its
    generated tokens per question, and if not, how far the best one within that budget
    falls short (the routers' points, not the oracle or the τ sweep)."""
    base = next((p for p in points if p.method == TARGET), None)
    routers = [p for p in points if p.kind == "router" and p.method.partition(":")[2] in CHOOSING]
    if base is None or not routers:
        return f"Target (a router at {TARGET}'s accuracy with ≤ 1/3 of its tokens): not measured here."
    budget = share * base.tokens_per_question
    within = [p for p in routers if p.tokens_per_question <= budget]
    head = (f"**Target** (a router at {TARGET}'s accuracy, {base.accuracy.mean:.3f}, with at most "
            f"1/3 of its {base.tokens_per_question:.1f} generated tokens per question, ≤ {budget:.1f}): ")
    if not within:
        return head + "**not met**: no router stays within that token budget."
    best = max(within, key=lambda p: (p.accuracy.mean, -p.tokens_per_question))
    gap = best.accuracy.mean - base.accuracy.mean
    verdict = "**met**" if gap >= 0 else f"**not met**, short by {-gap:.3f}"
    fast = next((p for p in points if p.method.endswith(":always_fast")), None)
    if fast is not None and base.accuracy.mean <= fast.accuracy.mean:
        verdict += (f" (vacuous here: {TARGET} is no more accurate than the fast mode alone, "
                    f"{base.accuracy.mean:.3f} vs {fast.accuracy.mean:.3f}, so thinking has "
                    "nothing to buy)")
    return head + (f"{verdict}: the best router within it, {best.method}, reaches "
                   f"{best.accuracy.mean:.3f} [{best.accuracy.lo:.2f}, {best.accuracy.hi:.2f}] at "
                   f"{best.tokens_per_question:.1f} tokens per question "
                   f"({best.tokens_per_question / max(base.tokens_per_question, 1e-9):.2f}× "
                   f"{TARGET}'s). Means compared; the paired differences above say whether the "
                   "gap is resolved.")


