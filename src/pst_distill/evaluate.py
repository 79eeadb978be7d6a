"""Evaluate a trained student: greedy, batched, left-padded generation on the test split.

Answer-first methods stop at the rationale delimiter or [SEM] (formats.stop_strings), so
the answer costs a few tokens; pre_thinking must write its rationale first. Answers go
through parsing.extract_answer (strict and flexible); model output is never run as code.
"""

from __future__ import annotations

import logging
import time
from collections import Counter, defaultdict

import torch

from pst_distill.data import render_prompt
from pst_distill.formats import ANSWER_FIRST, inference_prompt, stop_strings
from pst_distill.io import content_hash
from pst_distill.models import decode_completion
from pst_distill.parsing import INVALID, extract_answer, is_correct, normalize

log = logging.getLogger(__name__)


# answers drawn from a small label set: the evaluation set is balanced over the labels
BALANCED_TYPES = ("yes-no", "choice")


def _label(item: dict) -> str:
    value = normalize(str(item["answer"]), item["answer_type"])
    return str(item["answer"]) if value == INVALID else value


def _take_balanced(queues: dict[str, list[dict]], n: int) -> dict[str, int]:
    """How many of each label: round-robin over labels in sorted order, so the counts are
    equal as far as each label's questions last (the remainder goes to the first labels)."""
    take = dict.fromkeys(sorted(queues), 0)
    while n > 0 and any(take[lab] < len(queues[lab]) for lab in take):
        for lab in take:
            if n > 0 and take[lab] < len(queues[lab]):
                take[lab], n = take[lab] + 1, n - 1
    return take


def _select_task(items: list[dict], n: int | None) -> tuple[list[dict], dict]:
    """One task's questions: the first ``n`` in id-hash order, per label for label tasks."""
    ranked = sorted(items, key=lambda it: (content_hash("eval", it["id"]), it["id"]))
    info: dict = {"available": len(items)}
    if items[0]["answer_type"] not in BALANCED_TYPES:
        chosen = ranked if n is None else ranked[:n]
    else:
        queues: dict[str, list[dict]] = defaultdict(list)
        for it in ranked:
            queues[_label(it)].append(it)
        take = _take_balanced(queues, len(items) if n is None else n)
        chosen = [it for lab, k in take.items() for it in queues[lab][:k]]
        info["labels"] = take
        if n is not None:
            share = {lab: n // len(take) + (i < n % len(take)) for i, lab in enumerate(take)}
            info["short_labels"] = {lab: {"wanted": share[lab], "available": len(queues[lab])}
                                    for lab in take if len(queues[lab]) < share[lab]}
    info["selected"] = len(chosen)
    return chosen, info


def select_items(items: list[dict], per_task: int | None) -> tuple[list[dict], dict]:
    """The evaluation set: ``per_task`` questions of each task (null: all), in input order.

    Chosen by a hash of the id, not by position or seed, so every method and seed gets the
    same questions and adding questions to one task leaves the other tasks' sets unchanged.
    Yes-no and choice tasks take equal numbers per gold label as far as the test split
    allows; ``info[task]["short_labels"]`` names a label that ran short.
    """
    counts = Counter(it["id"] for it in items)
    dupes = [i for i, k in counts.items() if k > 1]
    if dupes:
        raise ValueError(f"test items have duplicate ids: {dupes[:3]}")
    by_task: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_task[it["task"]].append(it)
    keep: set[str] = set()
    info: dict[str, dict] = {}
    for task in sorted(by_task):
        chosen, info[task] = _select_task(by_task[task], per_task)
        keep.update(it["id"] for it in chosen)
        if per_task is not None and info[task]["selected"] < per_task:
            log.warning("task %s: only %d test questions for evaluate.per_task=%d",
                        task, info[task]["selected"], per_task)
    return [it for it in items if it["id"] in keep], info


def max_new_tokens(method: str, cfg) -> int:
    if method in ANSWER_FIRST and not cfg.generate_rationale:
        return cfg.max_new_tokens
    return cfg.max_new_tokens_rationale


def generate_batch(model, tok, prompts: list[str], stops: list[str], max_new: int) -> list[dict]:
    """Greedy completions of one left-padded batch: text, token count, finish reason."""
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    width = enc["input_ids"].shape[1]
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, top_p=None, top_k=None,
                             temperature=None, pad_token_id=tok.pad_token_id,
                             stop_strings=stops or None, tokenizer=tok if stops else None)
    return [_finish(row, tok, stops) for row in out[:, width:].tolist()]


def _finish(row: list[int], tok, stops: list[str]) -> dict:
    # special tokens kept: [SEM] is one, and a stop string
    text, n, finish = decode_completion(row, tok, stops, skip_special_tokens=False)
    # the EOS the model wrote counts as generated (a row cut at a stop string is padded)
    return {"text": text.strip(), "generated_tokens": n + int(finish == "eos"),
            "finish_reason": finish}


def generate_all(model, tok, items: list[dict], method: str, fmt, cfg) -> list[dict]:
    """Predictions for ``items`` in their order, with per-question generation time."""
    from tqdm.auto import tqdm

    stops = stop_strings(method, fmt, cfg.generate_rationale)
    prompts = [render_prompt(tok, inference_prompt(method, it["question"])) for it in items]
    order = sorted(range(len(items)), key=lambda i: -len(prompts[i]))
    results: list[dict | None] = [None] * len(items)
    bar = tqdm(total=len(items), desc=f"eval {method}", unit="q")
    for start in range(0, len(order), cfg.batch_size):
        idx = order[start:start + cfg.batch_size]
        t0 = time.perf_counter()
        batch = generate_batch(model, tok, [prompts[i] for i in idx], stops,
                               max_new_tokens(method, cfg))
        seconds = (time.perf_counter() - t0) / len(idx)
        for i, res in zip(idx, batch):
            results[i] = {**res, "seconds": seconds}
        bar.update(len(idx))
    bar.close()
    first_line = method in ANSWER_FIRST and not cfg.generate_rationale
    return [score(it, res, method, first_line, fmt.answer_prefix)
            for it, res in zip(items, results)]


def answer_part(text: str) -> str:
    """An answer-first completion's answer: its first non-empty line. A student that does
    not stop after the answer line (e.g. repeats it) is scored on what it answered first."""
    return next((ln for ln in text.splitlines() if ln.strip()), "")


def score(item: dict, res: dict, method: str, first_line: bool = False,
          answer_prefix: str = "Answer:") -> dict:
    """Strict and flexible correctness; strict reads the ``common.format.answer_prefix`` line."""
    text = answer_part(res["text"]) if first_line else res["text"]
    ext = extract_answer(text, item["answer_type"], answer_prefix)
    return {"id": item["id"], "task": item["task"], "method": method, "answer": item["answer"],
            "answer_type": item["answer_type"], "completion": res["text"],
            "pred_strict": ext.strict, "pred_flexible": ext.flexible,
            "correct_strict": is_correct(ext.strict, item["answer"], item["answer_type"]),
            "correct_flexible": is_correct(ext.flexible, item["answer"], item["answer_type"]),
            "generated_tokens": res["generated_tokens"], "finish_reason": res["finish_reason"],
            "seconds": round(res["seconds"], 4)}


def _accuracy(preds: list[dict]) -> dict:
    n = len(preds)
    return {"n": n,
            "accuracy_strict": sum(p["correct_strict"] for p in preds) / max(n, 1),
            "accuracy_flexible": sum(p["correct_flexible"] for p in preds) / max(n, 1),
            "parse_failures_strict": sum(p["pred_strict"] == INVALID for p in preds),
            "parse_failures_flexible": sum(p["pred_flexible"] == INVALID for p in preds)}


def summarize(preds: list[dict], method: str, wall: float) -> dict:
    """Accuracy overall and per task, tokens and seconds per question."""
    by_task: dict[str, list[dict]] = defaultdict(list)
    for p in preds:
        by_task[p["task"]].append(p)
    n = max(len(preds), 1)
    return {"stage": "evaluate_student", "method": method, **_accuracy(preds),
            "tasks": {t: _accuracy(ps) for t, ps in sorted(by_task.items())},
            "generated_tokens_per_question": sum(p["generated_tokens"] for p in preds) / n,
            "seconds_per_question": sum(p["seconds"] for p in preds) / n,
            "finish_reasons": dict(sorted(_count(p["finish_reason"] for p in preds).items())),
            "wall_seconds": round(wall, 3)}


def _count(values) -> dict:
    out: dict = defaultdict(int)
    for v in values:
        out[v] += 1
    return out


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
                             "batch_size": cfg.batch_size, "greedy": True}
    return preds, metrics


COMPARED = ("n", "accuracy_flexible", "accuracy_strict")  # per run and per task


def split_summary(summary: dict, seed: int) -> tuple[dict, dict]:
    """``(metrics, details)`` of one evaluation. ``metrics``: only what a team compares
    (accuracy overall and per task, tokens and seconds per question), declared as DVC
    metrics so that ``dvc metrics diff`` fits on a screen. ``details``: the whole summary
    (finish reasons, parse failures, generation settings, the evaluation set)."""
    def pick(d: dict) -> dict:
        return {k: d[k] for k in COMPARED}

    metrics = {"method": summary["method"], "seed": seed, **pick(summary),
               "tasks": {t: pick(v) for t, v in summary["tasks"].items()},
               "generated_tokens_per_question": round(summary["generated_tokens_per_question"], 3),
               "seconds_per_question": round(summary["seconds_per_question"], 4)}
    return metrics, {**summary, "seed": seed}
