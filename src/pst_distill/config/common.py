"""``common``: the data seed and the delimiters every stage shares."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, model_validator

from pst_distill.config.base import Section


class ModeControl(Section):
    """What opens each mode of the adaptive student (formats.control_tokens): one special
    token per mode, or a soft prompt of ``k`` learned virtual tokens per mode."""

    kind: Literal["token", "soft_prompt"] = "token"
    k: int = Field(4, ge=1, le=64, description="virtual tokens per mode (soft_prompt)")


class FormatConfig(Section):
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


class CommonConfig(Section):
    seed: int = Field(0, ge=0)
    format: FormatConfig = FormatConfig()
