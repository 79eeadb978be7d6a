"""Stage evaluate_student@<method>-<seed>: greedy answers of one trained student on the
evaluation set (evaluate.per_task questions per task, the same for every method and seed).
adaptive: both modes on its held-out questions and on the evaluation set, the rows its
routers read (the report stage routes them: pst_distill.evaluate.routing)."""

import argparse

from pst_distill.config import load
from pst_distill.config.evaluate import EvaluateConfig
from pst_distill.io import read_jsonl, write_json, write_jsonl
from pst_distill.methods import method as method_row
from pst_distill.runtime import Timer, cli, provenance, seed_everything, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--method", required=True)
    ap.add_argument("--seed", type=int, required=True, help="training seed of the student")
    ap.add_argument("--model", required=True, help="trained student folder")
    ap.add_argument("--test", required=True, help="prepared test items (jsonl)")
    ap.add_argument("--holdout", required=True, help="adaptive's held-out training questions "
                    "(jsonl; read by adaptive only)")
    ap.add_argument("--predictions", required=True, help="predictions (jsonl)")
    ap.add_argument("--metrics", required=True, help="accuracy, tokens and time (small json)")
    ap.add_argument("--details", required=True, help="config, finish reasons, parse failures, "
                    "evaluation set, provenance (json, not a metric)")
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, evaluate=EvaluateConfig)
    modes = method_row(args.method).modes
    with timer.phase("imports"):  # torch, transformers, peft: after the params check
        from pst_distill.evaluate.modes import evaluate_modes
        from pst_distill.evaluate.run import evaluate, split_summary
        from pst_distill.models import import_model_code, load_causal_lm

        import_model_code(args.model)

    log = setup(f"evaluate_student.{args.method}-{args.seed}", common, cfg)
    seed_everything(args.seed)  # greedy decoding: nothing random, but the seed is the run's
    with timer.phase("model_load"):
        model, tok = load_causal_lm(args.model, device=cfg.device, dtype=cfg.dtype)
    test = read_jsonl(args.test)
    with timer.phase("generate"):
        if modes:
            preds, summary = evaluate_modes(model, tok, test, read_jsonl(args.holdout),
                                            common.format, cfg)
        else:
            preds, summary = evaluate(model, tok, test, args.method, common.format, cfg)
    metrics, details = split_summary(summary, args.seed)
    write_jsonl(args.predictions, [{**p, "seed": args.seed} for p in preds])
    write_json(args.metrics, metrics)
    write_json(args.details, {**details, "model": args.model, "test": args.test,
                              "config": {"evaluate": cfg.model_dump(),
                                         "format": common.format.model_dump()},
                              "timings": timer.as_dict(),
                              "provenance": provenance(str(model.device))})
    for name, m in metrics.get("modes", {"": metrics}).items():
        log.info("%s%s seed %d: accuracy %.3f (strict %.3f) on %d questions, %.1f tokens and "
                 "%.2f s per question", args.method, f" ({name} mode)" if name else "",
                 args.seed, m["accuracy_flexible"], m["accuracy_strict"], m["n"],
                 m["generated_tokens_per_question"], m["seconds_per_question"])


if __name__ == "__main__":
    cli(main, exit_fast=True)
