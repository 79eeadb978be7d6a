"""Latency side by side: the seconds one question waits, asked alone (batch 1), with an
answer-first student against pre-thinking, on the same questions, in one process.

    python benchmarks/eval_latency.py [--model models/pst-1 --method pst]
        [--baseline models/pre_thinking-1 --baseline-method pre_thinking] [--per-task 10]

The evaluation stage times its questions in each student's own stage, minutes apart on a
shared machine; here the two students answer each question in turn (which goes first
alternates), so drift in the machine's speed lands on both. The questions are the
evaluation set's first ``--per-task`` of each task (``evaluate.latency_per_task``'s
choice). One JSON line: seconds per question of each, generated tokens per question, and
``ratio`` (method over baseline) with a paired 95% bootstrap interval over the questions.
Time one job at a time on a small machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from functools import partial


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--test", default="data/prepared/test.jsonl")
    ap.add_argument("--model", default="models/pst-1", help="a trained answer-first student")
    ap.add_argument("--method", default="pst")
    ap.add_argument("--baseline", default="models/pre_thinking-1")
    ap.add_argument("--baseline-method", default="pre_thinking")
    ap.add_argument("--per-task", type=int, default=10)
    args = ap.parse_args(argv)

    from pst_distill.config.sections import load_section
    from pst_distill.evaluate.generate import generate_batch, max_new_tokens
    from pst_distill.evaluate.run import latency_subset
    from pst_distill.evaluate.select import select_items
    from pst_distill.formats import ANSWER_FIRST, inference_prompt, render_prompt, stop_strings
    from pst_distill.io import read_jsonl
    from pst_distill.models import load_causal_lm
    from pst_distill.report.headline import cost_ratio

    common, cfg = load_section(args.params, "evaluate")
    fmt = common.format
    items, _ = select_items(read_jsonl(args.test), cfg.per_task)
    items = [items[i] for i in latency_subset(items, args.per_task)]

    students = []  # (method, its prompts, its generate_batch with its stops)
    for folder, method in ((args.model, args.method), (args.baseline, args.baseline_method)):
        model, tok = load_causal_lm(folder, device="cpu", dtype="float32")
        prompts = [render_prompt(tok, inference_prompt(method, it["question"]), fmt.system_prompt)
                   for it in items]
        generate = partial(generate_batch, model, tok,
                           stops=stop_strings(method, fmt, cfg.generate_rationale),
                           max_new=max_new_tokens(method, cfg),
                           answer_line=None if method in ANSWER_FIRST else fmt.answer_prefix)
        generate(prompts[:1], max_new=2)  # warm-up, untimed
        students.append((method, prompts, generate))

    rows: dict[str, list[dict]] = {method: [] for method, *_ in students}
    for q, item in enumerate(items):
        for method, prompts, generate in (students if q % 2 == 0 else students[::-1]):
            t0 = time.perf_counter()
            res = generate([prompts[q]])[0]
            rows[method].append({"id": item["id"], "seconds": time.perf_counter() - t0,
                                 "generated_tokens": res["generated_tokens"]})

    a, b = rows[args.method], rows[args.baseline_method]
    ratio, lo, hi = cost_ratio({1: a}, {1: b}, "seconds", 2000, 0)
    n = len(items)
    print(json.dumps({
        "method": args.method, "baseline": args.baseline_method, "questions": n,
        "seconds_per_question": round(sum(r["seconds"] for r in a) / n, 4),
        "baseline_seconds_per_question": round(sum(r["seconds"] for r in b) / n, 4),
        "tokens_per_question": round(sum(r["generated_tokens"] for r in a) / n, 2),
        "baseline_tokens_per_question": round(sum(r["generated_tokens"] for r in b) / n, 2),
        "ratio": round(ratio, 3), "ratio_95": [round(lo, 3), round(hi, 3)]}), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
