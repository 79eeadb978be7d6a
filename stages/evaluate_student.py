"""Stage evaluate_student@<method>: greedy answers of the trained student on the test split."""

import argparse

from pst_distill.config import load_section
from pst_distill.evaluate import evaluate
from pst_distill.io import read_jsonl, write_json, write_jsonl
from pst_distill.models import load_causal_lm
from pst_distill.runtime import provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--method", required=True)
    ap.add_argument("--model", required=True, help="trained student folder")
    ap.add_argument("--test", required=True, help="prepared test items (jsonl)")
    ap.add_argument("--predictions", required=True, help="predictions (jsonl)")
    ap.add_argument("--metrics", required=True, help="accuracy, tokens and time (json)")
    args = ap.parse_args()

    common, cfg = load_section(args.params, "evaluate")
    log = setup(f"evaluate_student.{args.method}", common, cfg)
    model, tok = load_causal_lm(args.model, device=cfg.device, dtype=cfg.dtype)
    preds, metrics = evaluate(model, tok, read_jsonl(args.test), args.method, common.format, cfg)
    write_jsonl(args.predictions, preds)
    write_json(args.metrics, {**metrics, "model": args.model,
                              "provenance": provenance(str(model.device))})
    log.info("%s: accuracy %.3f (strict %.3f) on %d questions, %.1f tokens and %.2f s per question",
             args.method, metrics["accuracy_flexible"], metrics["accuracy_strict"], metrics["n"],
             metrics["generated_tokens_per_question"], metrics["seconds_per_question"])


if __name__ == "__main__":
    main()
