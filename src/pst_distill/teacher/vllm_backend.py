"""Teacher through vLLM's offline API (``LLM`` + ``SamplingParams``), imported lazily.

Scale-out follows vLLM's own ``examples/offline_inference/data_parallel.py``:

* ``teacher.vllm.tensor_parallel_size`` GPUs hold one copy of a teacher too big for one GPU;
* ``teacher.vllm.data_parallel_size`` copies run as one process each, pinned to their GPU
  group with ``CUDA_VISIBLE_DEVICES``, each given an even, contiguous shard of the prompts
  (:func:`shard_bounds`). The copies are independent engines (no ``VLLM_DP_*`` group: that
  is for MoE expert parallelism), so one finishing early never waits on the others.

Every worker gets the same :class:`Sampling` through one job file, so no setting can
differ between workers; only the per-request seed differs, and it is derived from the
request key (:func:`request_seed`), so a sample does not depend on its worker, chunk or
position. Workers store each chunk in the shared cache as soon as it is done; the parent
streams finished entries from the cache, and a worker's non-zero exit code stops the run
with that rank and code. Requests use plain sampling only: the ``guided_*`` options were
removed in vLLM 0.12 (``structured_outputs`` replaced them) and are never sent.

vLLM needs a GPU and is an optional extra (``pip install pst-distill[vllm]``). The
contract is covered by a unit test against a fake ``vllm`` module.
"""

from __future__ import annotations

import importlib
import logging
import os
import subprocess
import sys
import tempfile
import time
from dataclasses import replace
from pathlib import Path
from typing import Iterator

from pst_distill.io import write_json, write_jsonl
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend, request_seed
from pst_distill.teacher.transformers_backend import trim_completion

log = logging.getLogger(__name__)


def import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise RuntimeError(
            "teacher.backend 'vllm' needs vLLM on a GPU machine: pip install 'pst-distill[vllm]'"
        ) from exc


def sampling_params(vllm, sampling: Sampling, key: str):
    return vllm.SamplingParams(
        n=1,  # samples are separate requests, each with its own key and seed
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        stop=list(sampling.stop) or None,
        seed=request_seed(sampling.seed, key),
    )


def llm_kwargs(cfg) -> dict:
    """``vllm.LLM`` arguments: identical for every data-parallel worker."""
    from pst_distill.models import resolve_model

    v = cfg.vllm
    return {"model": resolve_model(cfg.model), "revision": cfg.revision,
            "tensor_parallel_size": v.tensor_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "max_model_len": v.max_model_len, "dtype": v.dtype,
            "enforce_eager": v.enforce_eager, "trust_remote_code": cfg.trust_remote_code}


def shard_bounds(n: int, size: int, rank: int) -> tuple[int, int]:
    """Contiguous [start, end) of rank's shard; sizes differ by at most one."""
    per, extra = divmod(n, size)
    start = rank * per + min(rank, extra)
    return start, start + per + (rank < extra)


def gpu_groups(dp: int, tp: int, visible: str | None) -> list[str]:
    """CUDA_VISIBLE_DEVICES for each data-parallel rank: dp disjoint groups of tp GPUs."""
    ids = [d.strip() for d in visible.split(",") if d.strip()] if visible else \
        [str(i) for i in range(dp * tp)]
    if len(ids) < dp * tp:
        raise RuntimeError(f"teacher.vllm: data_parallel_size {dp} x tensor_parallel_size {tp} "
                           f"needs {dp * tp} GPUs, CUDA_VISIBLE_DEVICES has {len(ids)}")
    return [",".join(ids[r * tp:(r + 1) * tp]) for r in range(dp)]


def worker_metadata(vllm, model: str, revision: str | None, tp: int, rank: int = 0) -> dict:
    """vLLM version and GPU, recorded with every generation this worker makes."""
    gpu = None
    try:
        import torch

        if torch.cuda.is_available():
            gpu = torch.cuda.get_device_name(0)
    except ImportError:
        pass
    return {"backend": "vllm", "model": model, "revision": revision,
            "vllm": getattr(vllm, "__version__", "unknown"), "gpu": gpu,
            "cuda_visible_devices": os.environ.get("CUDA_VISIBLE_DEVICES"),
            "tensor_parallel_size": tp, "dp_rank": rank}


def generate_chunk(llm, vllm, reqs: list[dict], sampling: Sampling,
                   answer_prefix: str) -> Iterator[Completion]:
    """One ``LLM.generate`` call over ``{"key", "prompt"}`` dicts."""
    prompts = [r["prompt"] for r in reqs]
    params = [sampling_params(vllm, sampling, r["key"]) for r in reqs]
    outputs = llm.generate(prompts, params, use_tqdm=False)
    if len(outputs) != len(reqs):
        raise RuntimeError(f"vLLM returned {len(outputs)} outputs for {len(reqs)} prompts")
    for req, out in zip(reqs, outputs):
        comp = out.outputs[0]
        text, stopped = trim_completion(comp.text, answer_prefix, sampling.stop)
        finish = "length" if comp.finish_reason == "length" and not stopped else "stop"
        yield Completion(key=req["key"], text=text, finish_reason=finish,
                         prompt_tokens=len(out.prompt_token_ids or []),
                         completion_tokens=len(comp.token_ids), prompt=req["prompt"])


def chunks(seq: list, size: int) -> Iterator[list]:
    for i in range(0, len(seq), size):
        yield seq[i:i + size]


class VllmBackend(TeacherBackend):
    name = "vllm"

    def __init__(self, cfg, answer_prefix: str, llm=None):
        super().__init__(cfg, answer_prefix)
        self.vllm = import_vllm()  # a clear error before any model work
        self.dp = cfg.vllm.data_parallel_size
        self.writes_cache = self.dp > 1
        self._llm = llm
        self.kwargs = llm_kwargs(cfg)
        from transformers import AutoTokenizer

        # rendering needs only the tokenizer: cache hits never start an engine
        self.tokenizer = AutoTokenizer.from_pretrained(
            self.kwargs["model"], revision=cfg.revision, trust_remote_code=cfg.trust_remote_code)

    @property
    def llm(self):
        if self._llm is None:
            self._llm = self.vllm.LLM(**self.kwargs)
        return self._llm

    def metadata(self) -> dict:
        return {**super().metadata(), "vllm": getattr(self.vllm, "__version__", "unknown"),
                "tensor_parallel_size": self.cfg.vllm.tensor_parallel_size,
                "data_parallel_size": self.dp}

    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        reqs = [{"key": r.key, "prompt": r.prompt or self.render(r.messages)} for r in requests]
        if self.dp == 1:
            meta = worker_metadata(self.vllm, self.cfg.model, self.cfg.revision,
                                   self.cfg.vllm.tensor_parallel_size)
            for chunk in chunks(reqs, self.cfg.vllm.chunk_size):
                for comp in generate_chunk(self.llm, self.vllm, chunk, sampling,
                                           self.answer_prefix):
                    yield replace(comp, meta=meta)
            return
        yield from self._generate_parallel(reqs, sampling)

    def _generate_parallel(self, reqs: list[dict], sampling: Sampling) -> Iterator[Completion]:
        from pst_distill.teacher.cache import GenerationCache

        if self.cache is None or self.cache.root is None:
            self.cache = GenerationCache(tempfile.mkdtemp(prefix="pst-vllm-cache-"))
        with tempfile.TemporaryDirectory(prefix="pst-vllm-job-") as tmp:
            procs = self._launch(reqs, sampling, Path(tmp))
            try:
                yield from self._collect(reqs, procs)
            finally:
                stop_workers(procs)

    def _launch(self, reqs: list[dict], sampling: Sampling, tmp: Path) -> list:
        tp = self.cfg.vllm.tensor_parallel_size
        groups = gpu_groups(self.dp, tp, os.environ.get("CUDA_VISIBLE_DEVICES"))
        job = tmp / "job.json"
        write_json(job, {"llm": self.kwargs, "model_id": self.cfg.model,
                         "sampling": sampling.as_dict(), "answer_prefix": self.answer_prefix,
                         "cache_dir": str(self.cache.root),
                         "chunk_size": self.cfg.vllm.chunk_size})
        procs = []
        for rank, devices in enumerate(groups):
            start, end = shard_bounds(len(reqs), self.dp, rank)
            shard = tmp / f"shard-{rank}.jsonl"
            write_jsonl(shard, reqs[start:end])
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": devices}
            cmd = [sys.executable, "-m", "pst_distill.teacher.vllm_worker",
                   "--job", str(job), "--shard", str(shard), "--rank", str(rank)]
            log.info("vLLM worker %d: %d prompts on GPUs %s", rank, end - start, devices)
            procs.append((rank, devices, subprocess.Popen(cmd, env=env)))
        return procs

    def _collect(self, reqs: list[dict], procs: list, poll_s: float = 1.0):
        pending = [r["key"] for r in reqs]
        while pending:
            left = []
            for key in pending:
                comp = self.cache.get(key) if self.cache.has(key) else None
                if comp is None:
                    left.append(key)
                else:
                    yield comp
            pending = left
            codes = [(rank, dev, p.poll()) for rank, dev, p in procs]
            failed = [(rank, dev, c) for rank, dev, c in codes if c not in (None, 0)]
            if failed:
                desc = "; ".join(f"rank {r} (CUDA_VISIBLE_DEVICES={d}) exit code {c}"
                                 for r, d, c in failed)
                raise RuntimeError(f"vLLM data-parallel worker failed: {desc}")
            if pending and all(c == 0 for *_, c in codes):
                if any(not self.cache.has(k) for k in pending):
                    raise RuntimeError(f"vLLM workers exited 0 but {len(pending)} "
                                       "generations are missing from the cache")
                continue
            if pending:
                time.sleep(poll_s)


def stop_workers(procs: list, grace_s: float = 30.0) -> None:
    for _, _, p in procs:
        if p.poll() is None:
            p.terminate()
    deadline = time.monotonic() + grace_s
    for _, _, p in procs:
        try:
            p.wait(timeout=max(deadline - time.monotonic(), 0.1))
        except subprocess.TimeoutExpired:
            p.kill()
            p.wait()
