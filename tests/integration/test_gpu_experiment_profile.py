"""profiles/gpu.yaml (the GPU experiment of issue 9) against the config schema and the sizes
the issue asks for: 5 methods (+ adaptive) x 3 seeds, a pretrained full-finetuned student on CUDA, >= 6,000
training questions over coin flip, last letters and two-step arithmetic, 2 epochs for every
method, >= 300 balanced test questions per task. The data checks build the real split
in-process (generators only, no model). Plus the dry-run profile that scripts/gpu_experiment.sh
derives from it, and the stage timing it reports."""

from __future__ import annotations

import importlib.util
import math
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pst_distill.config import load_params
from pst_distill.formats import METHODS

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "gpu.yaml"
EPOCHS = 2
MIN_TRAIN_QUESTIONS = 6000
MIN_TEST_PER_TASK = 300


def helper():
    spec = importlib.util.spec_from_file_location("gpu_experiment", ROOT / "scripts/lib/gpu_experiment.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def params():
    # load_params: every section and the cross-section rules; no machine checks (cuda is
    # checked by the stages that use it, on the GPU machine)
    return load_params(PROFILE)


@pytest.fixture(scope="module")
def split(params):
    from pst_distill.tasks import load_task, split_records

    records = []
    for spec in params.get("prepare").tasks:
        records += load_task(spec, params.common.seed)[0]
    return split_records(records, params.get("prepare").test_frac)


def test_every_method_and_three_seeds(params):
    train = params.get("train")
    assert set(train.methods) == set(METHODS) == set(params.get("assemble").methods)
    assert len(train.seeds) == 3


def test_pretrained_full_finetune_on_cuda(params):
    for s in params.get("train").methods.values():
        assert (s.model, s.finetune, s.device, s.packing) == ("smollm2-135m-instruct", "full", "cuda", True)
        assert s.save_every >= 95  # one checkpoint at the end (95 steps): no mid-run saves of 0.5 GB
    assert params.get("embed").device == params.get("evaluate").device == "cuda"
    assert params.get("evaluate").batch_size >= 256
    assert params.get("teacher").backend == "reference"


def test_tasks_of_the_first_measurement(params):
    tasks = {t.name: t.options for t in params.get("prepare").tasks}
    assert tasks.keys() == {"coin_flip", "last_letter_concatenation", "multistep_arithmetic"}
    assert tasks["coin_flip"]["k"] == 4 and tasks["multistep_arithmetic"]["steps"] == 2


def test_sizes_implied_by_the_params(params):
    prep, per_task = params.get("prepare"), params.get("evaluate").per_task
    assert sum(t.n for t in prep.tasks) * (1 - prep.test_frac) >= MIN_TRAIN_QUESTIONS
    assert per_task >= MIN_TEST_PER_TASK
    assert all(t.n * prep.test_frac >= per_task for t in prep.tasks)


def test_the_real_split_has_the_questions(params, split):
    from pst_distill.evaluate import select_items

    train, test = split
    assert len(train) >= MIN_TRAIN_QUESTIONS
    per_task = params.get("evaluate").per_task
    chosen, info = select_items(test, per_task)
    assert Counter(it["task"] for it in chosen) == {t.name: per_task for t in params.get("prepare").tasks}
    coin = Counter(str(it["answer"]) for it in chosen if it["task"] == "coin_flip")
    assert coin == {"yes": per_task // 2, "no": per_task // 2}  # balanced, none ran short
    assert not info["coin_flip"].get("short_labels")


@pytest.mark.parametrize("method", METHODS)
def test_every_method_trains_two_epochs(params, split, method):
    """The budget is in epochs over QUESTIONS (the trainer takes batch_size questions per
    step with all their rows), so every method gets the same steps: ceil(2 x Q / 128)."""
    s = params.get("train").settings_for(method)
    assert (s.steps, s.epochs) == (None, EPOCHS), f"train.methods.{method}: steps/epochs"
    per_step = s.batch_size * s.grad_accum * s.distributed.processes
    assert math.ceil(EPOCHS * len(split[0]) / per_step) == 95


def test_every_method_sees_the_same_questions_per_step(params):
    per_step = {m: s.batch_size * s.grad_accum for m, s in params.get("train").methods.items()}
    assert len(set(per_step.values())) == 1, per_step


def test_dry_run_profile_keeps_the_structure(tmp_path, params):
    gx = helper()
    out = tmp_path / "dry.yaml"
    assert gx.main(["dry-params", str(PROFILE), str(out)]) == 0
    dry = load_params(out)
    assert dry.get("train").seeds == params.get("train").seeds
    assert list(dry.get("train").methods) == list(params.get("train").methods)
    assert [t.name for t in dry.get("prepare").tasks] == [t.name for t in params.get("prepare").tasks]
    for m, s in dry.get("train").methods.items():
        gpu = params.get("train").methods[m]
        assert (s.device, s.finetune, s.packing, s.steps) == ("cpu", gpu.finetune, gpu.packing, 2)
        assert s.batch_size / dry.get("train").defaults.batch_size == \
            gpu.batch_size / params.get("train").defaults.batch_size
    assert dry.get("embed").device == dry.get("evaluate").device == "cpu"
    targets = gx.seed_targets(yaml.safe_load(out.read_text()))
    assert [seed for seed, _ in targets] == [1, 2, 3]
    assert targets[0][1][0] == "evaluate_student@answer_only-1" and len(targets[0][1]) == 6
    assert dry.get("adaptive").holdout_per_task == 2


def test_stage_seconds_from_the_stamped_log():
    gx = helper()
    log = ["100.00 Running stage 'prepare_data':", "101.50 > python stages/prepare_data.py",
           "103.00 Running stage 'train_student@pst-1':", "110.25 Updating lock file 'dvc.lock'",
           "111.00 ##phase-end seed 1", "200.00 Running stage 'report':"]
    assert gx.stage_seconds(log) == [("prepare_data", 3.0), ("train_student@pst-1", 8.0)]
