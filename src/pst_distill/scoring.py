"""Scoring a prediction row and the figures of a group of rows (accuracy, parse failures,
generated tokens and seconds per question, think share): one helper for evaluation, the
adaptive routers and the report, so every method's figures follow the same rules."""

from __future__ import annotations

from collections import Counter, defaultdict

from pst_distill.parsing import INVALID, extract_answer, is_correct


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
            "seconds": round(res["seconds"], 4),
            **({"latency_seconds": round(res["latency_seconds"], 4),
                "latency_same_text": res["latency_same_text"]} if "latency_seconds" in res else {})}


def figures(rows: list[dict]) -> dict:
    """Figures of a group of scored rows: n, strict and flexible accuracy and parse
    failures, generated tokens and seconds per question; where rows carry ``latency_seconds``,
    their mean and count; where they carry a ``mode`` (adaptive), the share answered in think
    mode. Unrounded."""
    n = len(rows)
    d = max(n, 1)
    out = {"n": n,
           "accuracy_strict": sum(r["correct_strict"] for r in rows) / d,
           "accuracy_flexible": sum(r["correct_flexible"] for r in rows) / d,
           "parse_failures_strict": sum(r["pred_strict"] == INVALID for r in rows),
           "parse_failures_flexible": sum(r["pred_flexible"] == INVALID for r in rows),
           "generated_tokens_per_question": sum(r["generated_tokens"] for r in rows) / d,
           "seconds_per_question": sum(r["seconds"] for r in rows) / d}
    timed = [r["latency_seconds"] for r in rows if "latency_seconds" in r]
    if timed:  # the questions also generated alone (evaluate.latency_per_task)
        out["latency_seconds_per_question"] = sum(timed) / len(timed)
        out["latency_questions"] = len(timed)
    if rows and "mode" in rows[0]:
        out["think_share"] = sum(r["mode"] == "think" for r in rows) / d
    return out


def by_task(rows: list[dict]) -> dict[str, dict]:
    """:func:`figures` per task, tasks sorted."""
    groups: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        groups[r["task"]].append(r)
    return {t: figures(rs) for t, rs in sorted(groups.items())}


def finish_reasons(rows: list[dict]) -> dict[str, int]:
    return dict(sorted(Counter(r["finish_reason"] for r in rows).items()))
