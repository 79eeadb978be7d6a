"""Teacher through vLLM's offline engine (``vllm.LLM``), run in vLLM's own interpreter.

vLLM pins exact versions of torch and transformers, which are rarely the ones the trainer
wants, so the engine runs in worker processes started with ``teacher.vllm.python`` (an
interpreter of a separate vLLM environment; unset: this one) and
:mod:`pst_distill.teacher.vllm_worker`, which imports only the standard library and vLLM.
This process keeps what needs the project: it renders each prompt with the teacher's chat
template and tokenises it (so the cache key and the length check are known before any
engine starts), derives each request's seed from its key, and stores every completion in the
teacher cache the moment a worker reports it.

Scale-out follows vLLM's ``examples/offline_inference/data_parallel.py``:
``teacher.vllm.tensor_parallel_size`` GPUs hold one copy of the teacher and
``teacher.vllm.data_parallel_size`` copies run as one process each, pinned to their GPU
group (``CUDA_VISIBLE_DEVICES``) or, on a CPU, to their share of the cores
(``VLLM_CPU_OMP_THREADS_BIND``), each given an even, contiguous shard of the prompts. The
copies are independent engines, so one finishing early never waits on the others. Every
worker gets the same sampling settings through one job file; only the per-request seed
differs, and it comes from the request key, so a sample does not depend on its worker, chunk
or position.
"""

from __future__ import annotations

import logging
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Iterator

from pst_distill.io import write_json, write_jsonl
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend, request_seed
from pst_distill.teacher.transformers_backend import trim_completion

log = logging.getLogger(__name__)
WORKER = Path(__file__).with_name("vllm_worker.py")


class PromptTooLong(ValueError):
    """A rendered prompt does not fit ``teacher.vllm.max_model_len``."""


def vllm_python(cfg) -> str:
    """The interpreter that runs the engine: ``teacher.vllm.python`` or this one."""
    return str(Path(cfg.vllm.python).expanduser()) if cfg.vllm.python else sys.executable


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


def cpu_groups(dp: int, threads: int | None, cores: list[int]) -> list[str]:
    """``VLLM_CPU_OMP_THREADS_BIND`` for each rank: disjoint sets of ``threads`` cores
    (default: the available cores shared evenly)."""
    per = threads or max(len(cores) // dp, 1)
    if per * dp > len(cores):
        raise RuntimeError(f"teacher.vllm: data_parallel_size {dp} x cpu_threads {per} needs "
                           f"{per * dp} cores, {len(cores)} are available")
    return [",".join(str(c) for c in cores[r * per:(r + 1) * per]) for r in range(dp)]


def engine_kwargs(cfg, model_path: str) -> dict:
    """``vllm.LLM`` arguments: identical for every data-parallel worker."""
    v = cfg.vllm
    return {"model": model_path, "revision": cfg.revision,
            "tensor_parallel_size": v.tensor_parallel_size,
            "gpu_memory_utilization": v.gpu_memory_utilization,
            "max_model_len": v.max_model_len, "dtype": v.dtype,
            "enforce_eager": v.enforce_eager, "trust_remote_code": cfg.trust_remote_code}


def cpu_env(cfg) -> dict:
    """Environment defaults of an engine on a CPU (vLLM reads these, not arguments): the KV
    cache size, and the engine core in the worker's own process (a second process per engine
    competes for the same cores: 129 against 220 tokens/s on 2 cores)."""
    return {"VLLM_CPU_KVCACHE_SPACE": cfg.vllm.cpu_kv_cache_gib,
            "VLLM_ENABLE_V1_MULTIPROCESSING": 0}


class VllmBackend(TeacherBackend):
    name = "vllm"

    def __init__(self, cfg, answer_prefix: str):
        super().__init__(cfg, answer_prefix)
        from pst_distill.models import load_tokenizer, resolve_model

        self.python = vllm_python(cfg)
        self.dp = cfg.vllm.data_parallel_size
        self.model_path = resolve_model(cfg.model)
        # rendering and the length check need only the tokenizer: cache hits start no engine
        self.tokenizer = load_tokenizer(cfg.model, cfg.revision, cfg.trust_remote_code)
        self._procs: list = []

    def metadata(self) -> dict:
        return {**super().metadata(), "tensor_parallel_size": self.cfg.vllm.tensor_parallel_size,
                "data_parallel_size": self.dp}

    def max_model_len(self) -> int:
        if self.cfg.vllm.max_model_len:
            return self.cfg.vllm.max_model_len
        from transformers import AutoConfig

        config = AutoConfig.from_pretrained(self.model_path, revision=self.cfg.revision,
                                            trust_remote_code=self.cfg.trust_remote_code)
        return int(getattr(config, "max_position_embeddings", 0) or 10**9)

    def encode(self, requests: list[Request], seed: int) -> list[dict]:
        """``{key, prompt_token_ids, seed}`` per request, in order; a prompt that leaves no room
        for one new token within max_model_len is refused before any engine starts."""
        limit = self.max_model_len()
        out, longest = [], (0, None)
        for r in requests:
            ids = self.tokenizer(r.prompt or self.render(r.messages),
                                 add_special_tokens=False)["input_ids"]
            longest = max(longest, (len(ids), r.item.get("id")), key=lambda t: t[0])
            out.append({"key": r.key, "prompt_token_ids": list(ids),
                        "seed": request_seed(seed, r.key)})
        if longest[0] >= limit:
            raise PromptTooLong(
                f"teacher.vllm.max_model_len: a prompt of {longest[0]} tokens (item "
                f"{longest[1]}) leaves no room to generate within max_model_len {limit}; raise "
                "teacher.vllm.max_model_len or shorten the prompt (teacher.prompt, n_shots)")
        return out

    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        reqs = self.encode(requests, sampling.seed)
        prompts = {r.key: r.prompt for r in requests}
        tmp = Path(tempfile.mkdtemp(prefix="pst-vllm-"))
        try:
            outs = self._launch(reqs, sampling, tmp)
            for line, meta in self._collect(outs):
                text, stopped = trim_completion(line["text"], self.answer_prefix, sampling.stop)
                finish = "length" if line["finish_reason"] == "length" and not stopped else "stop"
                yield Completion(key=line["key"], text=text, finish_reason=finish,
                                 prompt_tokens=line["prompt_tokens"],
                                 completion_tokens=line["completion_tokens"],
                                 prompt=prompts.get(line["key"]),
                                 meta={**self.metadata(), **meta})
        finally:
            self.close()
            shutil.rmtree(tmp, ignore_errors=True)

    def _launch(self, reqs: list[dict], sampling: Sampling, tmp: Path) -> list[tuple]:
        v = self.cfg.vllm
        job = tmp / "job.json"
        write_json(job, {"llm": engine_kwargs(self.cfg, self.model_path),
                         "sampling": sampling.as_dict(), "chunk_size": v.chunk_size,
                         "cpu_env": cpu_env(self.cfg)})
        gpus = gpu_groups(self.dp, v.tensor_parallel_size, os.environ.get("CUDA_VISIBLE_DEVICES"))
        cpus = cpu_groups(self.dp, v.cpu_threads, sorted(os.sched_getaffinity(0)))
        outs = []
        for rank in range(self.dp):
            start, end = shard_bounds(len(reqs), self.dp, rank)
            shard, out = tmp / f"shard-{rank}.jsonl", tmp / f"out-{rank}.jsonl"
            write_jsonl(shard, reqs[start:end])
            out.touch()
            env = {**os.environ, "CUDA_VISIBLE_DEVICES": gpus[rank]}
            env.setdefault("VLLM_CPU_OMP_THREADS_BIND", cpus[rank])
            cmd = [self.python, str(WORKER), "--job", str(job), "--shard", str(shard),
                   "--out", str(out), "--rank", str(rank)]
            log.info("vLLM engine %d: %d prompts (%s; CUDA_VISIBLE_DEVICES=%s, VLLM_CPU_OMP_THREADS_BIND=%s)", rank, end - start,
                     self.python, gpus[rank], env["VLLM_CPU_OMP_THREADS_BIND"])
            self._procs.append(subprocess.Popen(cmd, env=env))
            outs.append((rank, out, end - start))
        return outs

    def _collect(self, outs: list[tuple], poll_s: float = 0.2) -> Iterator[tuple[dict, dict]]:
        """Completed lines from every worker's output file as they are flushed, with that
        worker's metadata; a worker that exits non-zero stops the run naming its rank."""
        import json

        offsets, metas = {rank: 0 for rank, *_ in outs}, {}
        left = {rank: n for rank, _, n in outs}
        while any(left.values()):
            got = False
            for (rank, path, _), proc in zip(outs, self._procs):
                code = proc.poll()  # read before the file: a finished worker's lines are all in
                with open(path, encoding="utf-8") as fh:
                    fh.seek(offsets[rank])
                    data = fh.read()
                complete = data[: data.rfind("\n") + 1]  # a half-written line waits
                offsets[rank] += len(complete.encode("utf-8"))
                for raw in complete.splitlines():
                    line = json.loads(raw)
                    if "meta" in line:
                        metas[rank] = line["meta"]
                        continue
                    got, left[rank] = True, left[rank] - 1
                    yield line, metas.get(rank, {})
                if code is not None and left[rank] > 0:
                    raise RuntimeError(
                        f"vLLM engine {rank} ({self.python}) exited with code {code} before "
                        f"its last {left[rank]} generations; its log is above. Finished "
                        "generations are kept in the teacher cache: rerun to resume")
            if not got:
                time.sleep(poll_s)

    def close(self) -> None:
        procs, self._procs = self._procs, []
        for p in procs:
            if p.poll() is None:
                p.terminate()
        deadline = time.monotonic() + 30
        for p in procs:
            try:
                p.wait(timeout=max(deadline - time.monotonic(), 0.1))
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
