"""Evaluation speed against ``evaluate.batch_size``: the same trained student, the same
evaluation set, one run per batch size, side by side in one process.

    python benchmarks/eval_batch.py [--model models/pre_thinking-1] [--method pre_thinking]
        [--batch-sizes 16,32,64] [--params params.yaml]

Greedy generation gives the same predictions at every batch size (checked: the script
exits 1 if they differ); only the time changes. One JSON line per batch size: seconds,
questions, generated tokens per question, accuracy, and ``ratio_vs_first`` (the first batch
size's seconds over this one's: > 1 is faster). Time one job at a time on a small machine.
"""

from __future__ import annotations

import argparse
import json
import sys
import time


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--model", default="models/pre_thinking-1", help="a trained student folder")
    ap.add_argument("--method", default="pre_thinking")
    ap.add_argument("--test", default="data/prepared/test.jsonl")
    ap.add_argument("--batch-sizes", default="16,32,64")
    args = ap.parse_args(argv)

    from pst_distill.config.sections import load_section
    from pst_distill.evaluate.run import evaluate
    from pst_distill.io import read_jsonl
    from pst_distill.models import load_causal_lm

    common, cfg = load_section(args.params, "evaluate")
    model, tok = load_causal_lm(args.model, device="cpu", dtype="float32")
    items = read_jsonl(args.test)
    first, answers = None, None
    for bs in (int(b) for b in args.batch_sizes.split(",")):
        t0 = time.perf_counter()
        preds, summary = evaluate(model, tok, items, args.method, common.format,
                                  cfg.model_copy(update={"batch_size": bs}))
        seconds = time.perf_counter() - t0
        first = first or seconds
        got = [p["completion"] for p in preds]
        same = answers is None or got == answers
        answers = answers or got
        print(json.dumps({"batch_size": bs, "seconds": round(seconds, 2), "questions": len(preds),
                          "tokens_per_question": round(summary["generated_tokens_per_question"], 2),
                          "accuracy": round(summary["accuracy_flexible"], 4),
                          "ratio_vs_first": round(first / seconds, 2), "same_predictions": same}),
              flush=True)
        if not same:
            return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
