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


class TeacherConfig(_Section):
    backend: Literal["reference", "transformers", "vllm"] = "reference"
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

    @model_validator(mode="after")
    def _sampling(self) -> "TeacherConfig":
        if self.n > 1 and self.temperature == 0.0:
            raise ValueError("n > 1 samples need temperature > 0 (greedy decoding repeats itself)")
        return self


SECTIONS: dict[str, type[_Section]] = {
    "common": CommonConfig,
    "prepare": PrepareConfig,
    "teacher": TeacherConfig,
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
        if isinstance(part, int):
            continue
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
