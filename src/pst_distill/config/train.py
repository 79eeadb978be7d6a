"""``train``: the student, its budget and the loss of each method (train_student@<method>-<seed>).

``defaults`` hold the settings every method shares; ``methods.<method>`` overrides any of them
and sets that method's loss weights (the methods table fills the ones it leaves out);
``sem`` is the semantic loss, set once. Each stage tracks ``train.defaults``, ``train.sem``
and ``train.methods.<its method>``, so editing one method re-runs only that method.
"""

from __future__ import annotations

from typing import Any, Literal, Optional

from pydantic import Field, ValidationError, field_validator, model_validator

from pst_distill.config import machine
from pst_distill.config.base import ConfigError, Section
from pst_distill.methods import BY_NAME, METHODS


class LoraOptions(Section):
    r: int = Field(16, ge=1)
    alpha: float = Field(32.0, gt=0.0)
    dropout: float = Field(0.0, ge=0.0, lt=1.0)
    target_modules: list[str] = Field(
        default_factory=lambda: ["q_proj", "k_proj", "v_proj", "o_proj", "gate_proj", "up_proj", "down_proj"],
        min_length=1)


class SemOptions(Section):
    """The semantic loss of PST (docs/method.md; every choice switchable)."""

    weight: float = Field(1.0, ge=0.0, description="λ of the pst method (its loss.w_sem)")
    pooling: Literal["sem_token", "rationale_mean"] = "sem_token"
    loss: Literal["cosine", "mse", "infonce"] = "cosine"
    temperature: float = Field(0.05, gt=0.0, description="infonce τ")
    hidden: int = Field(512, ge=1, description="MLP hidden size")


class LossOptions(Section):
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


class DistributedOptions(Section):
    """Data parallel training through accelerate: ``processes`` > 1 makes the stage launch
    itself on that many processes (one per GPU; gloo on CPU); ``fsdp`` shards the student's
    parameters, gradients and optimizer state (FSDP2) instead of replicating them (DDP)."""

    processes: int = Field(1, ge=1, le=1024)
    fsdp: bool = False


class TrainSettings(Section):
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
    # 512: sdpa's dense block-diagonal mask costs rows x L^2, so longer rows spend the
    # step on masked-out attention
    pack_length: int = Field(512, ge=8, description="tokens per packed row (>= max_length)")
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


class TrainConfig(Section):
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
            base = dict(BY_NAME[name].loss) if name in BY_NAME else {}
            if name in BY_NAME and BY_NAME[name].semantic:
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

    @model_validator(mode="after")
    def _sem_has_a_target(self) -> "TrainConfig":
        """λ > 0 needs something to pool: [SEM] exists only in the semantic methods'
        sequences, a rationale in every method but answer_only."""
        pooling, errors = self.sem.pooling, []
        for method, s in self.methods.items():
            if s.loss.w_sem <= 0:
                continue
            if pooling == "sem_token" and not BY_NAME[method].semantic:
                errors.append(f"train.methods.{method}.loss.w_sem: {s.loss.w_sem} > 0 needs a "
                              "[SEM] token, which only pst and adaptive sequences have under "
                              "train.sem.pooling sem_token; set it to 0 or use pooling "
                              "rationale_mean")
            elif pooling == "rationale_mean" and method == "answer_only":
                errors.append(f"train.methods.answer_only.loss.w_sem: {s.loss.w_sem} > 0 needs a "
                              "rationale to pool, and answer_only sequences have none; set it to 0")
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def machine_errors(self) -> list[str]:
        """Each distinct (model, revision) once, each key named where it is set."""
        def where(method: str, field: str) -> str:
            inherited = getattr(self.methods[method], field) == getattr(self.defaults, field)
            return f"train.defaults.{field}" if inherited else f"train.methods.{method}.{field}"

        errors, seen = [], set()
        for method, s in self.methods.items():
            if (s.model, s.revision) not in seen:
                seen.add((s.model, s.revision))
                errors += machine.model_errors(where(method, "model"), s.model, s.revision,
                                               revision_key=where(method, "revision"))
            errors += machine.device_errors(where(method, "device"), s.device)
        return list(dict.fromkeys(errors))
