"""Teacher throughput on one fixed set of chain-of-thought prompts (SmolLM2, CPU is fine):

* transformers backend at batch size B against batch size 1, and a cold run against a cached
  rerun;
* vLLM's engine (in its own interpreter, ``--vllm-python``) against the transformers backend
  at batch B on the same greedy prompts: generated tokens/s of each and their ratio, the
  engine's start-up apart (a one-token run), and the share of questions on which the two
  backends write the same text and extract the same answer.

    python benchmarks/teacher_throughput.py [--n 32] [--batch-size 16] [--max-new-tokens 64]
        [--threads 1] [--vllm-python .venv-vllm/bin/python | --no-vllm]

Prints one JSON object; every ratio is measured in this process, against its own baseline.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import tempfile
import time
from pathlib import Path

from pst_distill.config.prepare import TaskSpec
from pst_distill.config.teacher import TeacherConfig
from pst_distill.tasks import build_task
from pst_distill.teacher.generate import generate_rationales
from pst_distill.teacher.transformers_backend import TransformersBackend


def timed(items, cfg, backend=None, cache_dir=None) -> tuple[float, dict, list[dict]]:
    if backend is not None:
        backend.cfg = cfg
    start = time.perf_counter()
    _, gens, stats = generate_rationales(items, cfg, "Answer:", 0, backend=backend,
                                         cache_dir=cache_dir)
    return time.perf_counter() - start, stats, gens


def transformers_part(items, args) -> tuple[dict, list[dict], float]:
    base = {"backend": "transformers", "max_new_tokens": args.max_new_tokens, "device": "cpu"}
    cfg1 = TeacherConfig(**base, batch_size=1)
    cfgb = TeacherConfig(**base, batch_size=args.batch_size)
    backend = TransformersBackend(cfgb, "Answer:")
    timed(items[:2], cfgb, backend)  # warm-up: model load, first kernels
    t1, s1, _ = timed(items[: max(len(items) // 4, 2)], cfg1, backend)
    with tempfile.TemporaryDirectory() as cache:
        tb, sb, gens = timed(items, cfgb, backend, cache)
        tc, sc, _ = timed(items, cfgb, backend, cache)
    assert sc["cache"]["misses"] == 0
    b = args.batch_size
    n1 = max(len(items) // 4, 2)
    return {
        "bs1_tokens_per_s": round(s1["completion_tokens"] / t1, 1), "bs1_prompts": n1,
        f"bs{b}_tokens_per_s": round(sb["completion_tokens"] / tb, 1),
        f"bs{b}_vs_bs1_tokens_per_s": round((sb["completion_tokens"] / tb)
                                            / (s1["completion_tokens"] / t1), 2),
        "cold_s": round(tb, 3), "cached_rerun_s": round(tc, 3),
        "cold_vs_cached": round(tb / tc, 1), "cached_rerun_cache": sc["cache"],
    }, gens, sb["completion_tokens"] / tb


def vllm_part(items, args, hf_gens: list[dict], hf_tok_s: float) -> dict:
    vllm = {"python": args.vllm_python, "cpu_threads": args.threads,
            "chunk_size": len(items), "max_model_len": 2048}
    cfg = TeacherConfig(backend="vllm", max_new_tokens=args.max_new_tokens, vllm=vllm)
    start_s, _, _ = timed(items[:1], cfg.model_copy(update={"max_new_tokens": 1}))
    total_s, stats, gens = timed(items, cfg)
    gen_s = max(total_s - start_s, 1e-9)
    same_text = sum(a["rationale"] == b["rationale"] for a, b in zip(gens, hf_gens))
    same_answer = sum(a["pred_answer"] == b["pred_answer"] for a, b in zip(gens, hf_gens))
    tok_s = stats["completion_tokens"] / gen_s
    return {"vllm_python": args.vllm_python, "vllm": gens[0]["teacher"].get("vllm"),
            "vllm_dtype": gens[0]["teacher"].get("dtype"),
            "vllm_engine_start_s": round(start_s, 1), "vllm_total_s": round(total_s, 1),
            "vllm_tokens_per_s": round(tok_s, 1),
            "vllm_vs_transformers_tokens_per_s": round(tok_s / hf_tok_s, 2),
            "greedy_same_text": f"{same_text}/{len(gens)}",
            "greedy_same_answer": f"{same_answer}/{len(gens)}"}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=32, help="prompts")
    ap.add_argument("--batch-size", type=int, default=16)
    ap.add_argument("--max-new-tokens", type=int, default=64)
    ap.add_argument("--threads", type=int, default=1,
                    help="torch threads and vLLM cores; 1 by default: on a shared small CPU, "
                         "OpenMP spin-waits make 2 threads ~10x slower once other jobs compete")
    default_vllm = os.environ.get("PST_VLLM_PYTHON") or ".venv-vllm/bin/python"
    ap.add_argument("--vllm-python", default=default_vllm,
                    help="interpreter of the vLLM environment (`make vllm-env`)")
    ap.add_argument("--no-vllm", action="store_true", help="skip the vLLM comparison")
    args = ap.parse_args()
    logging.basicConfig(level=logging.WARNING)
    import torch

    torch.set_num_threads(args.threads)
    items = build_task(TaskSpec(name="multistep_arithmetic", n=args.n,
                                options={"steps": 2, "max_value": 50}), 0)
    hf, hf_gens, hf_tok_s = transformers_part(items, args)
    out = {"prompts": args.n, "max_new_tokens": args.max_new_tokens, "threads": args.threads,
           "batch_size": args.batch_size, "transformers": hf}
    if not args.no_vllm:
        if not Path(args.vllm_python).exists():
            raise SystemExit(f"no vLLM interpreter at {args.vllm_python}: run `make vllm-env` "
                             "or pass --vllm-python / --no-vllm")
        out["vllm"] = vllm_part(items, args, hf_gens, hf_tok_s)
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
