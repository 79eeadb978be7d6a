"""Evaluate a trained student: greedy, batched, left-padded generation on the test split.

Answer-first methods stop at the rationale delimiter or [SEM] (formats.stop_strings), so
the answer costs a few tokens; pre_thinking must write its rationale first. Answers go
through parsing.extract_answer (strict and flexible); model output is never run as code.
"""

from __future__ import annotations

import logging
import time
from collections import defaultdict

import torch

from pst_distill.data import render_prompt
from pst_distill.formats import ANSWER_FIRST, inference_prompt, stop_strings
from pst_distill.parsing import INVALID, extract_answer, is_correct

log = logging.getLogger(__name__)


def select_items(items: list[dict], max_items: int | None) -> list[dict]:
    """At most ``max_items``, taken round-robin over tasks in id order (balanced, stable)."""
    if not max_items or max_items >= len(items):
        return list(items)
    by_task: dict[str, list[dict]] = defaultdict(list)
    for item in sorted(items, key=lambda r: r["id"]):
        by_task[item["task"]].append(item)
    queues, out = [by_task[t] for t in sorted(by_task)], []
    while len(out) < max_items:
        for q in queues:
            if q and len(out) < max_items:
                out.append(q.pop(0))
    return out


def max_new_tokens(method: str, cfg) -> int:
    if method in ANSWER_FIRST and not cfg.generate_rationale:
        return cfg.max_new_tokens
    return cfg.max_new_tokens_rationale


def cut_at_stops(text: str, stops: list[str]) -> tuple[str, bool]:
    """Text before the first stop string, and whether one was found."""
    cut = min((text.index(s) for s in stops if s and s in text), default=None)
    return (text, False) if cut is None else (text[:cut], True)


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
    """Text up to EOS or the first stop string; finished rows are padded after that."""
    ends = {tok.eos_token_id, tok.pad_token_id}
    n = next((i for i, t in enumerate(row) if t in ends), len(row))
    text, stopped = cut_at_stops(tok.decode(row[:n], skip_special_tokens=False), stops)
    # pad is often eos: a row stopped by a string is followed by "eos" padding, not by EOS
    eos = n < len(row) and not stopped
    finish = "stop" if stopped else "eos" if eos else "length"
    return {"text": text.strip(), "generated_tokens": n + int(eos), "finish_reason": finish}


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
    return [score(it, res, method, first_line) for it, res in zip(items, results)]


def answer_part(text: str) -> str:
    """An answer-first completion's answer: its first non-empty line. A student that does
    not stop after the answer line (e.g. repeats it) is scored on what it answered first."""
    return next((ln for ln in text.splitlines() if ln.strip()), "")


def score(item: dict, res: dict, method: str, first_line: bool = False) -> dict:
    text = answer_part(res["text"]) if first_line else res["text"]
    ext = extract_answer(text, item["answer_type"])
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
    t0 = time.perf_counter()
    items = select_items(items, cfg.max_items)
    preds = generate_all(model, tok, items, method, fmt, cfg)
    metrics = summarize(preds, method, time.perf_counter() - t0)
    metrics["generation"] = {"max_new_tokens": max_new_tokens(method, cfg),
                             "scored_text": "first line" if method in ANSWER_FIRST
                             and not cfg.generate_rationale else "whole completion",
                             "stop_strings": stop_strings(method, fmt, cfg.generate_rationale),
                             "batch_size": cfg.batch_size, "greedy": True}
    return preds, metrics
