"""Student training tokens/s (LoRA vs full, bf16 autocast on/off) and evaluation seconds per
question (answer-first vs pre-thinking), on the packaged SmolLM2 and this machine.

    python benchmarks/student_throughput.py [--steps 4] [--batch 8] [--eval 16]

Uses data/rationales/train.jsonl and data/prepared/test.jsonl from the pipeline. Prints a
table; numbers depend on the machine and on other load, so compare rows of one run.
"""

import argparse
import tempfile
import time
from pathlib import Path

from pst_distill.config.sections import parse
from pst_distill.config.common import FormatConfig
from pst_distill.config.evaluate import EvaluateConfig
from pst_distill.evaluate.run import evaluate
from pst_distill.formats import training_sequences
from pst_distill.io import read_jsonl
from pst_distill.models import load_causal_lm
from pst_distill.train.loop import train

FMT = FormatConfig()


def rows(method, items):
    out = []
    for it in items:
        for seq in training_sequences(method, it["question"], it["answer"], it["rationale"], FMT):
            out.append({"segments": [s.as_dict() for s in seq], "emb_row": None})
    return out


def bench_train(method, items, finetune, bf16, steps, batch, tmp):
    cfg = parse("train", {"defaults": {"finetune": finetune, "cpu_bf16": bf16, "steps": steps,
                                               "batch_size": batch, "save_every": 10**6},
                                  "methods": {method: {}}}).methods[method]
    res = train(rows(method, items), cfg, method, FMT, 0, Path(tmp) / method, Path(tmp) / "c.tsv",
                None, "cpu")
    return res.metrics["tokens_per_s"], res.metrics["tokens"] / steps, res.metrics["bf16_autocast"]


def bench_eval(model_dir, method, test, n, batch):
    model, tok = load_causal_lm(str(model_dir), device="cpu", dtype="float32")
    cfg = EvaluateConfig(batch_size=batch, max_items=n)
    t0 = time.perf_counter()
    _, m = evaluate(model, tok, test, method, FMT, cfg)
    return m["seconds_per_question"], m["generated_tokens_per_question"], time.perf_counter() - t0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--steps", type=int, default=4)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--eval", type=int, default=16)
    ap.add_argument("--eval-batch", type=int, default=16)
    ap.add_argument("--configs", default="lora:1,lora:0,full:0,full:1")
    args = ap.parse_args()
    items, test = read_jsonl("data/rationales/train.jsonl"), read_jsonl("data/prepared/test.jsonl")
    table = []
    with tempfile.TemporaryDirectory() as tmp:
        for conf in args.configs.split(","):
            ft, bf16 = conf.split(":")
            tps, per_step, used = bench_train("post_thinking", items, ft, bf16 == "1", args.steps, args.batch, tmp)
            table.append(f"train post_thinking {ft:4s} bf16={bf16} (used: {used}): {tps:7.0f} tok/s "
                         f"({per_step:.0f} tokens/step)")
        # the student trained last above, barely trained: generation cost only
        model_dir = Path(tmp) / "post_thinking"
        if args.eval:
            for method in ("post_thinking", "pre_thinking"):
                spq, tpq, wall = bench_eval(model_dir, method, test, args.eval, args.eval_batch)
                table.append(f"eval {method:13s}: {spq:.3f} s/question, {tpq:.1f} tokens/question "
                             f"({wall:.0f} s for {args.eval})")
    print("\n".join(table))


if __name__ == "__main__":
    main()
