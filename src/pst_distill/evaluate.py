"""Evaluate a trained student: greedy, batched, left-padded generation on the test split.

Answer-first methods stop at the rationale delimiter or [SEM] (formats.stop_strings), so
the answer costs a few tokens; pre_thinking must write its rationale first, and stops at the
end of its answer line (:class:`AnswerLineStop`: a student that repeats the line is not
charged for the repeats, and its first answer is the one scored either way). Answers go
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


class AnswerLineStop:
    """A transformers stopping criterion: a row is done once its completion holds a whole
    answer line (``answer_prefix`` … newline), the end of a think-first completion."""

    def __init__(self, tok, answer_prefix: str, width: int):
        self.tok, self.prefix, self.width = tok, answer_prefix, width

    def __call__(self, input_ids, scores, **kwargs):
        done = [answer_line_end(self.tok.decode(row[self.width:]), self.prefix) is not None
                for row in input_ids]
        return torch.tensor(done, dtype=torch.bool, device=input_ids.device)


def answer_line_end(text: str, answer_prefix: str) -> int | None:
    """The index just past the newline that ends the first answer line, or None."""
    start = text.find(answer_prefix)
    end = -1 if start < 0 else text.find("\n", start)
    return None if end < 0 else end + 1


def generate_batch(model, tok, prompts: list[str], stops: list[str], max_new: int,
                   scores: bool = False, suppress: list[int] | None = None,
                   answer_line: str | None = None) -> list[dict]:
    """Greedy completions of one left-padded batch: text, token count, finish reason; with
    ``scores``, each generated token's log-probability and top-1 minus top-2 probability
    margin (``token_logprobs``, ``token_margins``, ``token_ids``). ``suppress``: token ids
    never generated (the adaptive student's mode controls); ``answer_line``: the answer
    prefix, to stop each row after its first answer line (:class:`AnswerLineStop`)."""
    from transformers import StoppingCriteriaList

    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False).to(model.device)
    width = enc["input_ids"].shape[1]
    extra = {"suppress_tokens": suppress} if suppress else {}
    if answer_line:
        extra["stopping_criteria"] = StoppingCriteriaList([AnswerLineStop(tok, answer_line, width)])
    with torch.inference_mode():
        out = model.generate(**enc, max_new_tokens=max_new, do_sample=False, top_p=None, top_k=None,
                             temperature=None, pad_token_id=tok.pad_token_id,
                             stop_strings=stops or None, tokenizer=tok if stops else None,
                             return_dict_in_generate=True, output_logits=scores, **extra)
    rows = out.sequences[:, width:]
    results = [_finish(row, tok, stops, answer_line) for row in rows.tolist()]
    if scores:
        for res, extra_fields in zip(results, _token_scores(out.logits, rows, suppress)):
            res.update(extra_fields)
    return results


def _token_scores(logits, rows, suppress) -> list[dict]:
    """Per row: generated ids, their log-probabilities and probability margins (from the
    raw logits; suppressed tokens excluded, as generation excluded them)."""
    lp = torch.stack(logits, 1).float()  # [B, T, V]
    if suppress:
        lp[..., suppress] = float("-inf")
    lp = torch.log_softmax(lp, -1)
    chosen = lp.gather(-1, rows[:, : lp.size(1)].unsqueeze(-1)).squeeze(-1)
    top2 = lp.topk(2, -1).values.exp()
    margin = top2[..., 0] - top2[..., 1]
    return [{"token_ids": r.tolist(), "token_logprobs": c.tolist(), "token_margins": m.tolist()}
            for r, c, m in zip(rows[:, : lp.size(1)], chosen, margin)]


def _finish(row: list[int], tok, stops: list[str], answer_line: str | None = None) -> dict:
    # special tokens kept: [SEM] is one, and a stop string
    text, n, finish = decode_completion(row, tok, stops, skip_special_tokens=False)
    end = answer_line_end(text, answer_line) if answer_line else None
    if end is not None:  # stopped by AnswerLineStop (the row is padded after its newline)
        text, finish = text[:end], "stop"
    # the EOS the model wrote counts as generated (a row cut at a stop string is padded)
    return {"text": text.strip(), "generated_tokens": n + int(finish == "eos"),
            "finish_reason": finish}


def generate_prompts(model, tok, prompts: list[str], stops: list[str], max_new: int,
                     batch_size: int, desc: str, **kwargs) -> list[dict]:
    """:func:`generate_batch` over ``prompts`` (longest first, so batches pad little), in
    their order, each with its share of its batch's generation time (``seconds``)."""
    from tqdm.auto import tqdm

    order = sorted(range(len(prompts)), key=lambda i: -len(prompts[i]))
    results: list[dict | None] = [None] * len(prompts)
    bar = tqdm(total=len(prompts), desc=desc, unit="q")
    for start in range(0, len(order), batch_size):
        idx = order[start:start + batch_size]
        t0 = time.perf_counter()
        batch = generate_batch(model, tok, [prompts[i] for i in idx], stops, max_new, **kwargs)
        seconds = (time.perf_counter() - t0) / len(idx)
        for i, res in zip(idx, batch):
            results[i] = {**res, "seconds": seconds}
        bar.update(len(idx))
    bar.close()
    return results


def generate_all(model, tok, items: list[dict], method: str, fmt, cfg) -> list[dict]:
    """Predictions for ``items`` in their order, with per-question generation time."""
    stops = stop_strings(method, fmt, cfg.generate_rationale)
    prompts = [render_prompt(tok, inference_prompt(method, it["question"]), fmt.system_prompt)
               for it in items]
    results = generate_prompts(model, tok, prompts, stops, max_new_tokens(method, cfg),
                               cfg.batch_size, f"eval {method}",
                               answer_line=None if method in ANSWER_FIRST else fmt.answer_prefix)
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
                             "stop_after_answer_line": method not in ANSWER_FIRST,
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
