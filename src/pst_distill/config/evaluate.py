"""``evaluate``: greedy, batched generation on the evaluation set."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field

from pst_distill.config import machine
from pst_distill.config.base import Section


class EvaluateConfig(Section):
    """Greedy, batched, left-padded generation on the test split."""

    batch_size: int = Field(16, ge=1)
    per_task: Optional[int] = Field(None, ge=1, description="test questions per task, balanced by "
                                    "answer for yes-no/choice, by id hash (null = all)")
    max_new_tokens: int = Field(24, ge=1, description="answer-first methods (stop at the delimiter)")
    max_new_tokens_rationale: int = Field(128, ge=1, description="pre_thinking, or generate_rationale")
    generate_rationale: bool = False
    latency_per_task: Optional[int] = Field(None, ge=1, description="questions per task also "
                                            "generated alone (batch 1) and timed: the seconds "
                                            "one question waits (null: none)")
    device: Literal["auto", "cpu", "cuda"] = "auto"
    dtype: Literal["auto", "float32", "bfloat16", "float16"] = "auto"

    def machine_errors(self) -> list[str]:
        return machine.device_errors("evaluate.device", self.device)
