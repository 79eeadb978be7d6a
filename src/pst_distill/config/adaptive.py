"""``adaptive``: the routers that pick the adaptive student's mode per question."""

from __future__ import annotations

from typing import Literal, Optional

from pydantic import Field, field_validator

from pst_distill.config.base import Section


class ConfidenceRouter(Section):
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


class PerceptionRouter(Section):
    """An MLP on the student's last hidden state at the prompt's end, trained on held-out
    training questions to predict that thinking pays (think right, fast wrong)."""

    hidden: int = Field(64, ge=1)
    epochs: int = Field(300, ge=1, description="full-batch Adam steps")
    lr: float = Field(0.01, gt=0.0, le=1.0)
    weight_decay: float = Field(0.01, ge=0.0)
    threshold: float = Field(0.5, gt=0.0, lt=1.0, description="think when P(thinking pays) ≥ this")


class AdaptiveConfig(Section):
    """The routers of the adaptive method (train.methods.adaptive), fitted on its held-out
    questions (assemble.holdout_per_task). Read by the report stage, which routes the
    evaluated modes: tuning a router never re-runs an evaluation."""

    think_cost: float = Field(0.1, ge=0.0, description="accuracy a router gives up per unit of "
                              "think share (choosing τ on the held-out questions)")
    confidence: ConfidenceRouter = ConfidenceRouter()
    perception: PerceptionRouter = PerceptionRouter()
