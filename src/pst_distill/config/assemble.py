"""``assemble``: which method datasets to write, the corruption check, adaptive's held-out
questions."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from pst_distill.config.base import Section
from pst_distill.methods import METHODS


class AssembleConfig(Section):
    """Which method datasets to write, an optional per-task cap, and the corruption check."""

    methods: list[str] = Field(default_factory=lambda: list(METHODS), min_length=1)
    max_per_task: Optional[int] = Field(None, ge=1, description="questions per task (null = all)")
    corrupt_frac: float = Field(0.0, ge=0.0, le=1.0)
    corrupt_mode: Literal["numbers", "swap", "shuffle"] = "numbers"
    semantic_target: Literal["seen", "clean"] = Field(
        "seen", description="PST target of a corrupted item: the embedding of the rationale the "
        "student sees (seen) or of its clean rationale (clean: PST alone gets clean information)")
    holdout_per_task: int = Field(8, ge=2, description="training questions per task kept out of "
                                  "the adaptive student's data, to fit its routers on")

    @field_validator("methods")
    @classmethod
    def _known_methods(cls, v: list[str]) -> list[str]:
        bad = [m for m in v if m not in METHODS]
        if bad:
            raise ValueError(f"unknown method(s) {', '.join(bad)}; allowed: {', '.join(METHODS)}")
        if len(set(v)) != len(v):
            raise ValueError("method listed twice")
        return v
