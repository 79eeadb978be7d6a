"""Shared test helpers."""

from __future__ import annotations

import pytest


@pytest.fixture
def teacher_items():
    """``teacher_items(n)``: n offline arithmetic questions, deterministic."""
    from pst_distill.config.prepare import TaskSpec
    from pst_distill.tasks import build_task

    def make(n: int, seed: int = 0) -> list[dict]:
        spec = TaskSpec(name="multistep_arithmetic", n=n, options={"steps": 2, "max_value": 20})
        return build_task(spec, seed)

    return make

