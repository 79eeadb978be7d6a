"""One vLLM engine: ``PYTHON vllm_worker.py --job JOB --shard SHARD --out OUT``.

Started by :class:`~pst_distill.teacher.vllm_backend.VllmBackend`, one process per
data-parallel rank, with the interpreter named by ``teacher.vllm.python`` (the project's own
when unset). It imports nothing but the standard library and vLLM, so it runs in a vLLM
environment that has neither this project nor its pins installed (vLLM pins exact torch and
transformers versions; the trainer's environment may need others).

Input: the job file (engine arguments, the one sampling setting, environment defaults for a
CPU engine) and this rank's shard of ``{"key", "prompt_token_ids", "seed"}`` lines, in the
order they are to be generated. Output: JSON lines appended to ``--out``, flushed after each
``LLM.generate`` call of ``chunk_size`` prompts: first ``{"meta": {...}}`` (vLLM version,
device, resolved dtype), then one ``{"key", "text", "finish_reason", "prompt_tokens",
"completion_tokens"}`` per prompt. The parent stores each line in the teacher cache as it
arrives, so a killed run keeps every chunk that was finished. The worker dies with its parent
(``PR_SET_PDEATHSIG``) and exits non-zero on any error.
"""

from __future__ import annotations

import argparse
import ctypes
import json
import os
import signal
import sys


def die_with_parent() -> None:
    """Linux: SIGKILL this process when its parent dies (no orphaned engine holding a GPU)."""
    try:
        ctypes.CDLL("libc.so.6", use_errno=True).prctl(1, signal.SIGKILL)  # PR_SET_PDEATHSIG
    except (OSError, AttributeError):
        pass
    if os.getppid() == 1:  # the parent died before prctl took effect
        sys.exit(1)


def cpu_has_native_bf16() -> bool:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def on_cuda() -> bool:
    try:
        import torch
    except ImportError:
        return False
    return torch.cuda.is_available()


def engine_args(job: dict, cuda: bool) -> dict:
    """``vllm.LLM`` keyword arguments. ``dtype: auto`` on a CPU without native bf16 means
    float32: vLLM's own auto picks bfloat16, which such a CPU emulates about 5x slower."""
    llm = dict(job["llm"])
    if not cuda and llm.get("dtype") == "auto" and not cpu_has_native_bf16():
        llm["dtype"] = "float32"
    return llm


def chunks(seq: list, size: int):
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


def generate(llm, vllm, reqs: list[dict], sampling: dict) -> list[dict]:
    params = [vllm.SamplingParams(n=1, temperature=sampling["temperature"],
                                  top_p=sampling["top_p"], max_tokens=sampling["max_new_tokens"],
                                  stop=list(sampling["stop"]) or None, seed=r["seed"])
              for r in reqs]
    prompts = [{"prompt_token_ids": r["prompt_token_ids"]} for r in reqs]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    if len(outputs) != len(reqs):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(reqs)} prompts")
    lines = []
    for req, out in zip(reqs, outputs):
        comp = out.outputs[0]
        lines.append({"key": req["key"], "text": comp.text,
                      "finish_reason": comp.finish_reason or "stop",
                      "prompt_tokens": len(out.prompt_token_ids or req["prompt_token_ids"]),
                      "completion_tokens": len(comp.token_ids)})
    return lines


def run(job: dict, shard: list[dict], out_path: str, rank: int) -> None:
    cuda = on_cuda()
    if not cuda:  # before vLLM reads its environment; the user's own settings win
        for name, value in job["cpu_env"].items():
            os.environ.setdefault(name, str(value))
    import vllm

    llm_args = engine_args(job, cuda)
    llm = vllm.LLM(**llm_args)
    device = "cpu"
    if cuda:
        import torch

        device = torch.cuda.get_device_name(0)
    meta = {"backend": "vllm", "vllm": getattr(vllm, "__version__", "unknown"),
            "device": device, "dtype": llm_args.get("dtype"),
            "enforce_eager": llm_args.get("enforce_eager"), "dp_rank": rank,
            "tensor_parallel_size": llm_args.get("tensor_parallel_size")}
    with open(out_path, "a", encoding="utf-8") as fh:
        fh.write(json.dumps({"meta": meta}) + "\n")
        fh.flush()
        for chunk in chunks(shard, job["chunk_size"]):
            for line in generate(llm, vllm, chunk, job["sampling"]):
                fh.write(json.dumps(line, ensure_ascii=False) + "\n")
            fh.flush()


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--job", required=True)
    ap.add_argument("--shard", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--rank", type=int, default=0)
    args = ap.parse_args(argv)
    die_with_parent()
    os.dup2(2, 1)  # vLLM logs to stdout: keep the caller's stdout for its own output
    with open(args.job, encoding="utf-8") as fh:
        job = json.load(fh)
    with open(args.shard, encoding="utf-8") as fh:
        shard = [json.loads(ln) for ln in fh if ln.strip()]
    run(job, shard, args.out, args.rank)
    return 0


if __name__ == "__main__":
    sys.exit(main())
