"""Teacher throughput: transformers backend at batch size B against batch size 1, and a cold
run against a cached rerun, on one fixed set of prompts (SmolLM2, CPU is fine).

    python benchmarks/teacher_throughput.py [--n 16] [--batch-size 8] [--max-new-tokens 64] [--threads 1]

Prints one JSON object; the ratios are measured in this process, against its own baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import tempfile
import time

from pst_distill.config import TaskSpec, TeacherConfig
from pst_distill.tasks import build_task
from pst_distill.teacher import generate_rationales
from pst_distill.teacher.transformers_backend import TransformersBackend


def timed(items, cfg, backend, cache_dir=None) -> tuple[float, dict]:
    backend.cfg = cfg
    start = time.perf_counter()
    _, _, stats = generate_rationales(items, cfg, "Answer:", 0, backend=backend,
                                      cache_dir=cache_dir)
    return time.perf_counter() - start, stats


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=16)
    ap.add_argument("--batch-size", type=int, default=8)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads; 1 by default: on a shared small CPU, OpenMP spin-waits "
                         "make 2 threads ~10x slower than 1 once other jobs compete")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    items = build_task(TaskSpec(name="multistep_arithmetic", n=args.n,
                                options={"steps": 2, "max_value": 50}), 0)
    base = {"backend": "transformers", "max_new_tokens": args.max_new_tokens, "device": "cpu"}
    cfg1 = TeacherConfig(**base, batch_size=1)
    cfgb = TeacherConfig(**base, batch_size=args.batch_size)
    backend = TransformersBackend(cfgb, "Answer:")
    timed(items[:2], cfgb, backend)  # warm-up: model load, first kernels
    t1, s1 = timed(items, cfg1, backend)
    with tempfile.TemporaryDirectory() as cache:
        tb, sb = timed(items, cfgb, backend, cache)
        tc, sc = timed(items, cfgb, backend, cache)
    assert sc["cache"]["misses"] == 0
    print(json.dumps({
        "prompts": args.n, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
        "bs1_items_per_s": round(args.n / t1, 3),
        f"bs{args.batch_size}_items_per_s": round(args.n / tb, 3),
        f"bs{args.batch_size}_vs_bs1_items_per_s": round(t1 / tb, 2),
        "bs1_completion_tokens": s1["completion_tokens"],
        f"bs{args.batch_size}_completion_tokens": sb["completion_tokens"],
        "cold_s": round(tb, 3), "cached_rerun_s": round(tc, 3),
        "cold_vs_cached": round(tb / tc, 1), "cached_rerun_cache": sc["cache"],
    }, indent=2))


if __name__ == "__main__":
    main()
