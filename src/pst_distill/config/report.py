"""``report``: which score the tables show, the loss plot, the bootstrap."""

from __future__ import annotations

from typing import Literal

from pydantic import Field

from pst_distill.config.base import Section


class ReportConfig(Section):
    score: Literal["strict", "flexible"] = Field("flexible", description="accuracy shown in the table")
    smooth: int = Field(10, ge=1, description="moving-average window of the loss plot")
    n_boot: int = Field(2000, ge=100, description="bootstrap replicates of the intervals")
