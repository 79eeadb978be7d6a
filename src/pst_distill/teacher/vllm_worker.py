"""One vLLM data-parallel worker: ``python -m pst_distill.teacher.vllm_worker``.

Started by :class:`~pst_distill.teacher.vllm_backend.VllmBackend` with its GPU group in
``CUDA_VISIBLE_DEVICES``; reads the shared job file (engine arguments, the one sampling
setting, cache folder) and its shard, and stores each finished chunk in the cache. Exits
non-zero on any error, which stops the whole run.
"""

from __future__ import annotations

import argparse
import logging
import sys

from pst_distill.io import read_json, read_jsonl
from pst_distill.teacher.base import Sampling
from pst_distill.teacher.cache import GenerationCache
from pst_distill.teacher.vllm_backend import chunks, generate_chunk, import_vllm, worker_metadata

log = logging.getLogger(__name__)


def run(job: dict, shard: list[dict], rank: int) -> int:
    cache = GenerationCache(job["cache_dir"])
    todo = [r for r in shard if not cache.has(r["key"])]
    log.info("rank %d: %d of %d prompts to generate", rank, len(todo), len(shard))
    if not todo:
        return 0
    vllm = import_vllm()
    llm_args = job["llm"]
    llm = vllm.LLM(**llm_args)
    meta = worker_metadata(vllm, job["model_id"], llm_args["revision"],
                           llm_args["tensor_parallel_size"], rank)
    sampling = Sampling(**{**job["sampling"], "stop": tuple(job["sampling"]["stop"])})
    done = 0
    for chunk in chunks(todo, job["chunk_size"]):
        for comp in generate_chunk(llm, vllm, chunk, sampling, job["answer_prefix"]):
            cache.put(comp, meta)
            done += 1
        log.info("rank %d: %d/%d done", rank, done, len(todo))
    return 0


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--job", required=True)
    ap.add_argument("--shard", required=True)
    ap.add_argument("--rank", type=int, required=True)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format=f"%(asctime)s %(levelname)s vllm-worker[{args.rank}]: %(message)s")
    return run(read_json(args.job), read_jsonl(args.shard), args.rank)


if __name__ == "__main__":
    sys.exit(main())
