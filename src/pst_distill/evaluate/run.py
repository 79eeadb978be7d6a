"""Evaluate a trained student: generate on the evaluation set, score, summarise.

Answer-first methods stop at the rationale delimiter or [SEM], so the answer costs a few
tokens; pre_thinking must write its rationale first, and stops at the end of its answer
line (a student that repeats the line is not charged for the repeats, and its first answer
is the one scored either way). Answers go through parsing.extract_answer (strict and
flexible); model output is never run as code.
"""

from __future__ import annotations

import logging
import time

from pst_distill.evaluate.generate import generate_prompts, max_new_tokens, time_alone
from pst_distill.evaluate.select import select_items
from pst_distill.formats import ANSWER_FIRST, inference_prompt, render_prompt, stop_strings
from pst_distill.scoring import by_task, figures, finish_reasons, score

log = logging.getLogger(__name__)


def generate_all(model, tok, items: list[dict], method: str, fmt, cfg) -> list[dict]:
    """Predictions for ``items`` in their order, with per-question generation time."""
    stops = stop_strings(method, fmt, cfg.generate_rationale)
    prompts = [render_prompt(tok, inference_prompt(method, it["question"]), fmt.system_prompt)
               for it in items]
    answer_line = None if method in ANSWER_FIRST else fmt.answer_prefix
    results = generate_prompts(model, tok, prompts, stops, max_new_tokens(method, cfg),
                               cfg.batch_size, f"eval {method}", answer_line=answer_line)
    if cfg.latency_per_task:
        timed = latency_subset(items, cfg.latency_per_task)
        alone = time_alone(model, tok, [prompts[i] for i in timed], stops,
                           max_new_tokens(method, cfg), f"latency {method}",
                           answer_line=answer_line)
        for i, res in zip(timed, alone):
            results[i] = {**results[i], "latency_seconds": res["seconds"],
                          "latency_same_text": res["text"] == results[i]["text"]}
    first_line = method in ANSWER_FIRST and not cfg.generate_rationale
    return [score(it, res, method, first_line, fmt.answer_prefix)
            for it, res in zip(items, results)]


def latency_subset(items: list[dict], per_task: int) -> list[int]:
    """Indices of the first ``per_task`` questions of each task, in ``items``' order: the
    same questions for every method and seed."""
    seen: dict[str, int] = {}
    chosen = []
    for i, it in enumerate(items):
        if seen.get(it["task"], 0) < per_task:
            seen[it["task"]] = seen.get(it["task"], 0) + 1
            chosen.append(i)
    return chosen


def summarize(preds: list[dict], method: str, wall: float) -> dict:
    """Figures overall and per task (:func:`pst_distill.scoring.figures`), finish reasons."""
    return {"stage": "evaluate_student", "method": method, **figures(preds),
            "tasks": by_task(preds), "finish_reasons": finish_reasons(preds),
            "wall_seconds": round(wall, 3)}


def evaluate(model, tok, items: list[dict], method: str, fmt, cfg) -> tuple[list[dict], dict]:
    """Predictions on the evaluation set (:func:`select_items` of ``items``) and their full
    summary (:func:`split_summary` splits it into declared metrics and details)."""
    t0 = time.perf_counter()
    items, selection = select_items(items, cfg.per_task)
    preds = generate_all(model, tok, items, method, fmt, cfg)
    metrics = summarize(preds, method, time.perf_counter() - t0)
    metrics["selection"] = {"per_task": cfg.per_task, "tasks": selection}
    metrics["generation"] = {"max_new_tokens": max_new_tokens(method, cfg),
                             "scored_text": "first line" if method in ANSWER_FIRST
                             and not cfg.generate_rationale else "whole completion",
                             "stop_strings": stop_strings(method, fmt, cfg.generate_rationale),
                             "stop_after_answer_line": method not in ANSWER_FIRST,
                             "batch_size": cfg.batch_size, "greedy": True}
    timed = [p for p in preds if "latency_seconds" in p]
    if timed:
        metrics["latency"] = {"questions": len(timed), "batch_size": 1,
                              "same_text_as_batched": sum(p["latency_same_text"] for p in timed)}
    return preds, metrics


COMPARED = ("n", "accuracy_flexible", "accuracy_strict")  # per run and per task


def compared(fig: dict) -> dict:
    """The figures a team compares, of one run or one mode: accuracy overall and per task,
    tokens and seconds per question."""
    def pick(d: dict) -> dict:
        return {k: d[k] for k in COMPARED}

    return {**pick(fig), "tasks": {t: pick(v) for t, v in fig["tasks"].items()},
            "generated_tokens_per_question": round(fig["generated_tokens_per_question"], 3),
            "seconds_per_question": round(fig["seconds_per_question"], 4),
            **({"latency_seconds_per_question": round(fig["latency_seconds_per_question"], 4)}
               if "latency_seconds_per_question" in fig else {})}


def split_summary(summary: dict, seed: int) -> tuple[dict, dict]:
    """``(metrics, details)`` of one evaluation. ``metrics``: only what a team compares
    (:func:`compared`; adaptive: per mode), declared as DVC metrics so that ``dvc metrics
    diff`` fits on a screen. ``details``: the whole summary (finish reasons, parse failures,
    generation settings, the evaluation set)."""
    head = {"method": summary["method"], "seed": seed}
    if "modes" in summary:
        metrics = {**head, "modes": {m: compared(f) for m, f in summary["modes"].items()}}
    else:
        metrics = {**head, **compared(summary)}
    return metrics, {**summary, "seed": seed}
