"""``teacher``: which backend writes the rationales, with which model and sampling."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from pst_distill.config import machine
from pst_distill.config.base import Section


class VllmOptions(Section):
    """vLLM's offline engine, run by ``python`` (a vLLM environment's interpreter) in one
    worker process per data-parallel copy. Defaults suit a CPU; on GPUs set
    ``enforce_eager: false`` (CUDA graphs and torch.compile) and ``dtype: auto``."""

    python: Optional[str] = Field(None, description="interpreter of the vLLM environment "
                                  "(e.g. .venv-vllm/bin/python); null: this interpreter")
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_model_len: Optional[int] = Field(None, ge=16, description="prompt + completion tokens; "
                                         "null: the model's own maximum")
    dtype: str = Field("auto", description="auto: vLLM's choice, but float32 on a CPU without "
                       "native bf16 (which emulates bf16 about 5x slower)")
    chunk_size: int = Field(256, ge=1, description="prompts per generate call; each chunk is "
                            "cached as soon as it is done")
    enforce_eager: bool = Field(True, description="no CUDA graphs or torch.compile: on a CPU the "
                                "engine starts in ~6 s instead of 70-90 s, for ~13% fewer "
                                "tokens/s; set false on GPUs")
    cpu_kv_cache_gib: int = Field(1, ge=1, description="CPU engines: KV cache per engine "
                                  "(VLLM_CPU_KVCACHE_SPACE); GPUs use gpu_memory_utilization")
    cpu_threads: Optional[int] = Field(None, ge=1, description="CPU engines: cores per engine "
                                       "(null: the available cores shared by the copies)")


class OpenAIOptions(Section):
    """An OpenAI-compatible server (`vllm serve`, …). The key is read from the env var named
    here, never from params."""

    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=r"^https?://")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_concurrency: int = Field(8, ge=1, le=1024)
    outage_budget_s: float = Field(120.0, ge=0.0, le=86400.0, description=(
        "a request is retried (connection errors, timeouts, 429/5xx) until this long after "
        "its first failure; then the run stops, keeping every finished generation"))
    backoff_s: float = Field(0.5, gt=0.0, le=60.0, description="first retry wait, doubled each try")
    max_backoff_s: float = Field(10.0, gt=0.0, le=600.0, description="cap on one retry wait")
    timeout_s: float = Field(300.0, gt=0.0, description="per request")
    connect_timeout_s: float = Field(5.0, gt=0.0, description="start-up check of the server")


class CacheOptions(Section):
    """How generations are written to the teacher cache: in segments of ``segment_size``,
    or sooner when the oldest waiting one is ``flush_s`` seconds old (0: at once). A run
    killed with SIGKILL loses at most what waits; the outputs never depend on these."""

    segment_size: int = Field(256, ge=1, description="generations per segment file")
    flush_s: float = Field(10.0, ge=0.0, description="longest wait before a segment is written")


class TeacherConfig(Section):
    backend: Literal["reference", "transformers", "vllm", "openai"] = "reference"
    model: str = "smollm2-135m-instruct"
    revision: Optional[str] = None
    trust_remote_code: bool = False
    prompt: Literal["zero_shot_cot", "few_shot_cot"] = "zero_shot_cot"
    n_shots: int = Field(2, ge=1, le=8)
    n: int = Field(1, ge=1, description="samples per question")
    temperature: float = Field(0.0, ge=0.0, le=5.0)
    top_p: float = Field(1.0, gt=0.0, le=1.0)
    max_new_tokens: int = Field(256, ge=1)
    batch_size: int = Field(8, ge=1)
    stop: list[str] = Field(default_factory=list)
    only_correct: bool = True
    max_items: Optional[int] = Field(None, ge=1, description="cap on questions (smoke runs)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"
    vllm: VllmOptions = VllmOptions()
    openai: OpenAIOptions = OpenAIOptions()
    cache: CacheOptions = CacheOptions()

    @model_validator(mode="after")
    def _sampling(self) -> "TeacherConfig":
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("teacher.n: n > 1 samples need teacher.temperature > 0 (greedy "
                             "decoding repeats itself)")
        return self

    def machine_errors(self) -> list[str]:
        if self.backend not in ("transformers", "vllm"):
            return []  # reference: no model; openai: a name the server resolves
        errors = machine.model_errors("teacher.model", self.model, self.revision)
        if self.backend == "vllm":
            return errors + machine.vllm_python_errors("teacher.vllm.python", self.vllm.python)
        return errors + machine.device_errors("teacher.device", self.device)
