"""profiles/gpu.yaml (the GPU experiment) and what the GPU kit derives from it. Each test
checks a property that breaks on a real defect, not the profile's numbers (they are resized
from measurements): the profile validates, every trained method's data is built, every
method sees the same questions per step and its budget comes out as the profile's sizing
says, the test split holds the evaluation's balanced questions, the dry-run derivation keeps
the structure at tiny sizes and validates, and the stage timing is read from a stamped log.
The data checks build the real split in-process (generators only, no model)."""

from __future__ import annotations

import math
import re
from collections import Counter
from pathlib import Path

import pytest
import yaml

from pst_distill.config.sections import check_file
from pst_distill.methods import BY_NAME
from tools.gpu import dryrun, results

ROOT = Path(__file__).resolve().parents[2]
PROFILE = ROOT / "profiles" / "gpu.yaml"


@pytest.fixture(scope="module")
def params():
    # every section against its schema; no machine checks (cuda exists on the GPU machine)
    return check_file(PROFILE, machine=False)


@pytest.fixture(scope="module")
def split(params):
    from pst_distill.tasks import load_task, split_records

    records = []
    for spec in params["prepare"].tasks:
        records += load_task(spec, params["common"].seed)[0]
    return split_records(records, params["prepare"].test_frac)


def train_questions(params, split, method: str) -> int:
    """The questions ``method`` trains on: adaptive's held-out ones are not among them."""
    held = params["assemble"].holdout_per_task * len(params["prepare"].tasks)
    return len(split[0]) - (held if BY_NAME[method].modes else 0)


def test_every_trained_method_is_built_by_assemble(params):
    train = params["train"]
    assert set(train.methods) <= set(params["assemble"].methods)


def test_every_method_sees_the_same_questions_per_step_and_epochs(params):
    from pst_distill.train.data import questions_per_step

    settings = params["train"].methods
    per_step = {m: questions_per_step(s, s.distributed.processes) for m, s in settings.items()}
    budget = {m: (s.steps, s.epochs) for m, s in settings.items()}
    assert len(set(per_step.values())) == 1, per_step
    assert len(set(budget.values())) == 1, budget  # the same passes over the questions


def test_steps_from_epochs_match_the_sizing_in_the_profile(params, split):
    """The profile states its budget as ``ceil(E x Q / B) = N`` (epochs, training questions,
    questions per step, steps): that line must be what the trainer computes on the real split."""
    from pst_distill.train.data import total_steps

    found = re.findall(r"ceil\(([\d.]+) x ([\d,]+) / (\d+)\) = (\d+)", PROFILE.read_text())
    assert found, "profiles/gpu.yaml should state its budget as ceil(E x Q / B) = N"
    stated = [(float(e), int(q.replace(",", "")), int(b), int(n)) for e, q, b, n in found]
    for e, q, b, n in stated:  # every stated computation is right
        assert math.ceil(e * q / b) == n, (e, q, b, n)
    method = next(m for m in params["train"].methods if not BY_NAME[m].modes and BY_NAME[m].rows == 1)
    s = params["train"].settings_for(method)
    questions = train_questions(params, split, method)
    steps = total_steps(s, questions, s.distributed.processes)
    line = (s.epochs, questions, s.batch_size * s.grad_accum, steps)
    assert line in stated, f"the trainer computes ceil({line[0]:g} x {line[1]} / {line[2]}) = {line[3]}"


def test_the_test_split_holds_the_balanced_evaluation_questions(params, split):
    from pst_distill.evaluate.select import select_items

    per_task = params["evaluate"].per_task
    chosen, info = select_items(split[1], per_task)
    assert Counter(it["task"] for it in chosen) == {t.name: per_task for t in params["prepare"].tasks}
    coin = Counter(str(it["answer"]) for it in chosen if it["task"] == "coin_flip")
    assert max(coin.values()) - min(coin.values()) <= 1  # balanced: no label ran short
    assert not any(i.get("short_labels") for i in info.values())


def test_dry_params_keep_the_structure_at_tiny_sizes(tmp_path, params):
    out = tmp_path / "dry.yaml"
    assert dryrun.main([str(PROFILE), str(out)]) == 0
    dry = check_file(out, machine=False)
    assert [t.name for t in dry["prepare"].tasks] == [t.name for t in params["prepare"].tasks]
    assert all(t.n <= dryrun.ITEMS_PER_TASK for t in dry["prepare"].tasks)
    assert dry["train"].seeds == params["train"].seeds
    assert list(dry["train"].methods) == list(params["train"].methods)
    assert dry["assemble"].methods == params["assemble"].methods
    for m, s in dry["train"].methods.items():
        gpu = params["train"].methods[m]
        assert (s.finetune, s.packing, s.model) == (gpu.finetune, gpu.packing, gpu.model)
        assert s.device == "cpu" and s.steps <= dryrun.STEPS and s.batch_size <= dryrun.BATCH
    assert dry["embed"].device == dry["evaluate"].device == "cpu"
    assert dry["evaluate"].per_task < params["evaluate"].per_task
    # adaptive's routers still get held-out questions, and the tiny split keeps training ones
    assert 2 <= dry["assemble"].holdout_per_task < dryrun.ITEMS_PER_TASK * (1 - dry["prepare"].test_frac)


def test_seed_targets_name_every_method_once_per_seed(params):
    raw = yaml.safe_load(PROFILE.read_text())
    targets = dryrun.seed_targets(raw)
    assert [seed for seed, _ in targets] == params["train"].seeds
    for seed, stages in targets:
        assert stages == [f"evaluate_student@{m}-{seed}" for m in params["train"].methods]


def test_stage_seconds_from_the_stamped_log():
    log = ["100.00 Running stage 'prepare_data':", "101.50 > python stages/prepare_data.py",
           "103.00 Running stage 'train_student@pst-1':", "110.25 Updating lock file 'dvc.lock'",
           "111.00 ##step-end seed 1 ok", "150.00 $ dvc repro -s report",
           "200.00 Running stage 'report':", "230.50 ##step-end report ok"]
    assert results.stage_seconds(log) == [("prepare_data", 3.0), ("train_student@pst-1", 8.0),
                                          ("report", 30.5)]


# ------------------------------------------------------------------ sizing (tools/gpu/sizing.py)
def fake_data(params, tokens_per_question: int = 100) -> dict:
    data = {m: {"questions": 6000, "rows": 6000 * BY_NAME[m].rows,
                "tokens": 6000 * BY_NAME[m].rows * tokens_per_question}
            for m in params["train"].methods}
    return {**data, "_eval": {"questions": 900, "holdout": 300}}


def test_the_plan_counts_every_trained_method_and_each_cost(params):
    from tools.gpu.sizing import Costs, plan

    base = plan(params, fake_data(params), Costs(), 480)
    assert list(base["runs"]) == list(params["train"].methods)  # adaptive included
    assert base["seed_s"] == pytest.approx(sum(r["train_s"] + r["eval_s"] for r in base["runs"].values()))
    assert base["first_seed_end_s"] == pytest.approx(sum(base["setup"].values()) + base["seed_s"]
                                                     + base["report_s"])
    # two rows per question cost twice the tokens of one at the same length
    runs = base["runs"]
    assert runs["step_by_step"]["tokens"] == pytest.approx(2 * runs["answer_only"]["tokens"])
    # adaptive evaluates both modes on the test and held-out questions: the dearest evaluation
    assert runs["adaptive"]["eval_s"] > runs["pre_thinking"]["eval_s"] > runs["pst"]["eval_s"]
    faster = plan(params, fake_data(params), Costs(train_tokens_per_s=2 * Costs().train_tokens_per_s), 480)
    assert faster["seed_s"] < base["seed_s"]
    longer = plan(params, fake_data(params, 200), Costs(), 480)
    assert longer["seed_s"] > base["seed_s"]
    tight = plan(params, fake_data(params), Costs(), base["first_seed_end_s"])
    assert not tight["first_seed_fits"]  # the margin is kept
    assert plan(params, fake_data(params), Costs(), base["first_seed_end_s"] * 2)["first_seed_fits"]


def test_costs_from_a_file_name_unknown_keys(tmp_path):
    from tools.gpu.sizing import Costs

    good, bad = tmp_path / "good.json", tmp_path / "bad.json"
    good.write_text('{"stage_s": 5, "train_tokens_per_s": 300000}')
    bad.write_text('{"stage_seconds": 5}')
    costs = Costs.read(good)
    assert (costs.stage_s, costs.train_tokens_per_s, costs.source) == (5, 300000, str(good))
    with pytest.raises(SystemExit, match="unknown cost keys \\['stage_seconds'\\]"):
        Costs.read(bad)


@pytest.mark.model  # the student's tokenizer
def test_seed_one_of_the_profile_fits_the_experiments_deadline(params):
    """The profile's real data, tokenised, at the planning costs: seed 1 and the report end
    inside the deadline with the margin. Adding a method, epochs or questions past what
    fits fails here, before GPU time is spent."""
    from tools.gpu.experiment import BUDGET_S
    from tools.gpu.sizing import Costs, measure_tokens, plan

    data = measure_tokens(PROFILE, sample=1000)
    assert set(params["train"].methods) <= set(data)
    p = plan(params, data, Costs(), BUDGET_S)
    assert p["first_seed_fits"], (f"seed 1 and the report end at {p['first_seed_end_s']:.0f} s; "
                                  f"{p['usable_s']:.0f} s usable of {BUDGET_S} s")
