"""tools/gpu/smoke.py: what the smoke measures becomes the Costs that size the experiment
(python -m tools.gpu size --costs), the dearest figure of its runs taken each time."""

from __future__ import annotations

import json

import pytest

from tools.gpu import smoke
from tools.gpu.sizing import Costs


def record() -> dict:
    return {"import_s": 3.0, "cuda_init_s": 1.5, "convert_s": 26.0,
            "runs": [{"tokens_per_s": 150000.0, "hash_s": 0.5,
                      "timings": {"model_load": 1.0, "save": 1.0}},
                     {"tokens_per_s": 90000.0, "hash_s": 0.75,
                      "timings": {"model_load": 1.2, "save": 2.0}}],
            "generation": {"pre_thinking": {"seconds_per_step": 0.021}}}


def test_costs_from_a_smoke_record(tmp_path):
    costs = smoke.costs_from(record())
    # a stage: a fresh interpreter's imports, CUDA init, the student's load, DVC's own share
    assert costs["stage_s"] == pytest.approx(3.0 + 1.5 + 1.0 + smoke.DVC_STAGE_S)
    assert costs["save_s"] == pytest.approx(2.75)          # the slower save and hash
    assert costs["train_tokens_per_s"] == 90000.0          # the slower run
    assert costs["decode_step_s"] == 0.021 and costs["convert_s"] == 26.0
    path = tmp_path / "costs.json"
    path.write_text(json.dumps(costs))
    read = Costs.read(path)  # every key is a Costs field
    assert (read.stage_s, read.train_tokens_per_s, read.source) == (costs["stage_s"], 90000.0, str(path))
