"""``prepare``: the tasks (offline generators or hub datasets) and the test fraction."""

from __future__ import annotations

import posixpath
from typing import Any, Literal, Optional

from pydantic import (BaseModel, ConfigDict, Field, ValidationError, ValidationInfo,
                      field_validator, model_validator)

from pst_distill.config import machine
from pst_distill.config.base import Section

OFFLINE, HUB = "offline", "hub"
RAW_DATA_DIR = "data/raw"  # local datasets; the folder is a DVC dep of prepare_data

# Fine-tune-CoT's 12 tasks load from the hub; four tasks have seeded offline generators.
TASK_NAMES: dict[str, tuple[str, ...]] = {
    "single_eq": (HUB,), "addsub": (HUB,), "multiarith": (HUB,), "gsm8k": (HUB,),
    "aqua": (HUB,), "svamp": (HUB,), "date_understanding": (HUB,),
    "tracking_shuffled_objects": (HUB,), "coin_flip": (OFFLINE, HUB),
    "last_letter_concatenation": (OFFLINE, HUB), "commonsense_qa": (HUB,),
    "strategy_qa": (HUB,), "multistep_arithmetic": (OFFLINE,), "gsm_symbolic": (OFFLINE,),
}


class Options(BaseModel):
    model_config = ConfigDict(extra="forbid")


class LastLetterOptions(Options):
    k: int = Field(2, ge=1, le=8, description="words to concatenate")


class CoinFlipOptions(Options):
    k: int = Field(4, ge=1, le=10, description="people who may flip the coin")


class ArithmeticOptions(Options):
    steps: int = Field(2, ge=1, le=6, description="operations after the start value")
    max_value: int = Field(50, ge=5, le=10_000)


class GsmSymbolicOptions(Options):
    pass


# generator options per offline task (tasks.generators pairs them with the functions)
OPTIONS: dict[str, type[Options]] = {
    "last_letter_concatenation": LastLetterOptions, "coin_flip": CoinFlipOptions,
    "multistep_arithmetic": ArithmeticOptions, "gsm_symbolic": GsmSymbolicOptions,
}


class TaskSpec(Section):
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
        if v is None and info.data.get("source") == OFFLINE:  # absent: source was bad
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
            raise ValueError(f"task {self.name!r} has no {self.source!r} source; "
                             f"available: {', '.join(TASK_NAMES[self.name])}")
        return self  # options are checked by PrepareConfig, which names their full path


class PrepareConfig(Section):
    tasks: list[TaskSpec] = Field(..., min_length=1)
    test_frac: float = Field(0.2, gt=0.0, lt=1.0)
    split: Literal["test", "validation"] = Field("test", description="what the students are "
                                                 "evaluated on: the test split, or a validation "
                                                 "split of the training questions (for choosing "
                                                 "settings; the test questions stay unread)")
    validation_frac: float = Field(0.2, gt=0.0, lt=1.0, description="share of the training "
                                   "questions held out when split is validation")

    @model_validator(mode="after")
    def _tasks(self) -> "PrepareConfig":
        names = [t.name for t in self.tasks]
        dupes = sorted({n for n in names if names.count(n) > 1})
        errors = [f"prepare.tasks: task listed twice: {', '.join(dupes)}"] if dupes else []
        errors += [e for i, spec in enumerate(self.tasks) for e in _option_errors(i, spec)]
        if errors:
            raise ValueError("\n".join(errors))
        return self

    def machine_errors(self) -> list[str]:
        return [e for i, t in enumerate(self.tasks)
                for e in machine.file_errors(f"prepare.tasks.{i}.data_files", t.data_files)]


def _option_errors(i: int, spec: TaskSpec) -> list[str]:
    """Generator options, reported at their own path with the task's allowed keys."""
    where = f"prepare.tasks.{i}.options"
    if spec.source != OFFLINE:
        return [f"{where}: options apply to offline generators only (task {spec.name!r} has "
                f"source {spec.source!r})"] if spec.options else []
    model = OPTIONS[spec.name]
    allowed = f"allowed option keys of {spec.name}: {', '.join(model.model_fields) or 'none'}"
    try:
        model.model_validate(spec.options)
    except ValidationError as exc:
        return [f"{'.'.join(str(p) for p in (where, *err['loc']))}: "
                + ("unknown option" if err["type"] == "extra_forbidden"
                   else f"{err['msg']} (got {err.get('input')!r})") + f"; {allowed}"
                for err in exc.errors()]
    return []
