"""Teacher through vLLM's offline API (``LLM`` + ``SamplingParams``), imported lazily.

vLLM needs a GPU and is an optional extra (``pip install pst-distill[vllm]``). The
request/response mapping is covered by a unit test against a fake module.
"""

from __future__ import annotations

import importlib
import logging
from typing import Iterator

from pst_distill.io import content_hash
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend
from pst_distill.teacher.transformers_backend import trim_completion

log = logging.getLogger(__name__)


def import_vllm():
    try:
        return importlib.import_module("vllm")
    except ImportError as exc:
        raise RuntimeError(
            "teacher.backend 'vllm' needs vLLM on a GPU machine: pip install 'pst-distill[vllm]'"
        ) from exc


def request_seed(seed: int, key: str) -> int:
    """Per-request seed: a rerun samples the same text on the same hardware and version."""
    return int(content_hash(seed, key)[:8], 16)


def sampling_params(vllm, sampling: Sampling, key: str):
    return vllm.SamplingParams(
        n=1,  # samples are separate requests, each with its own key and seed
        temperature=sampling.temperature,
        top_p=sampling.top_p,
        max_tokens=sampling.max_new_tokens,
        stop=list(sampling.stop) or None,
        seed=request_seed(sampling.seed, key),
    )


class VllmBackend(TeacherBackend):
    name = "vllm"

    def __init__(self, cfg, answer_prefix: str, llm=None):
        super().__init__(cfg, answer_prefix)
        self.vllm = import_vllm()
        from pst_distill.models import resolve_model

        self.llm = llm or self.vllm.LLM(
            model=resolve_model(cfg.model),
            revision=cfg.revision,
            tensor_parallel_size=cfg.vllm.tensor_parallel_size,
            gpu_memory_utilization=cfg.vllm.gpu_memory_utilization,
            max_model_len=cfg.vllm.max_model_len,
            dtype=cfg.vllm.dtype,
            trust_remote_code=cfg.trust_remote_code,
        )
        self.tokenizer = self.llm.get_tokenizer()

    def render(self, messages) -> str:
        from pst_distill.prompts import render

        return render(list(messages), self.tokenizer)

    def metadata(self) -> dict:
        return {**super().metadata(), "vllm": getattr(self.vllm, "__version__", "unknown"),
                "tensor_parallel_size": self.cfg.vllm.tensor_parallel_size}

    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        prompts = [r.prompt or self.render(r.messages) for r in requests]
        params = [sampling_params(self.vllm, sampling, r.key) for r in requests]
        outputs = self.llm.generate(prompts, params, use_tqdm=True)
        for req, prompt, out in zip(requests, prompts, outputs):
            comp = out.outputs[0]
            text, stopped = trim_completion(comp.text, self.answer_prefix, sampling.stop)
            finish = "length" if comp.finish_reason == "length" and not stopped else "stop"
            yield Completion(key=req.key, text=text, finish_reason=finish,
                             prompt_tokens=len(out.prompt_token_ids or []),
                             completion_tokens=len(comp.token_ids), prompt=prompt)
