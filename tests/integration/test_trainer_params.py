"""train / evaluate / report params: per-method merge, defaults per method, clear errors."""

from pathlib import Path

import pytest

from pst_distill.config.sections import load_section, parse
from pst_distill.config.base import ConfigError

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_methods_merge_defaults_and_take_method_loss_defaults():
    cfg = parse("train", {"defaults": {"steps": 5, "lora": {"r": 4}},
                                  "methods": {"pst": {"lr": 0.01, "lora": {"alpha": 8}},
                                              "step_by_step": {}, "answer_only": None}})
    pst, sbs = cfg.methods["pst"], cfg.methods["step_by_step"]
    assert (pst.steps, pst.lr, pst.lora.r, pst.lora.alpha) == (5, 0.01, 4, 8)
    assert (pst.loss.w_answer, pst.loss.w_rationale, pst.loss.w_sem) == (1.0, 0.1, 1.0)
    assert (sbs.loss.w_answer, sbs.loss.w_rationale, sbs.loss.w_sem) == (0.5, 0.5, 0.0)
    assert cfg.methods["answer_only"].loss.reduction == "joint"


def test_sem_weight_is_lambda_of_pst_only():
    cfg = parse("train", {"sem": {"weight": 0.5, "loss": "infonce"},
                                  "methods": {"pst": {}, "post_thinking": {}}})
    assert cfg.methods["pst"].loss.w_sem == 0.5
    assert cfg.methods["post_thinking"].loss.w_sem == 0.0
    assert cfg.methods["pst"].sem.loss == cfg.methods["post_thinking"].sem.loss == "infonce"


@pytest.mark.parametrize("raw, message", [
    ({"methods": {"pst": {"lr": -1}}}, "train.methods.pst.lr: Input should be greater than 0"),
    ({"methods": {"pst": {"lorra": 1}}}, "train.methods.pst.lorra: unknown key; allowed keys: attn_implementation, batch_size"),
    ({"methods": {"pts": {}}}, "'pst'"),
    ({"defaults": {"steps": 0}, "methods": {"pst": {}}}, "train.defaults.steps"),
    ({"defaults": {"loss": {"w_sem": 1}}, "methods": {"pst": {}}}, "loss weights are per method"),
    ({"methods": {"pst": {"loss": {"alpha": 0.3, "w_answer": 1}}}}, "either alpha or w_answer"),
    ({"sem": {"loss": "l1"}, "methods": {"pst": {}}}, "train.sem.loss"),
    ({"sem": {"weight": -1}, "methods": {"pst": {}}}, "train.sem.weight"),
    ({"methods": {"pst": {"sem": {"loss": "mse"}}}}, "train.methods.pst.sem: the semantic loss is set once"),
    ({"methods": {}}, "train.methods"),
    ({"defaults": {"packing": True, "pack_length": 64, "max_length": 128}, "methods": {"pst": {}}},
     "train.defaults: .*pack_length .*64.* must be >= max_length"),
    ({"defaults": {"distributed": {"fsdp": True}}, "methods": {"pst": {}}}, "fsdp: true is for full finetunes"),
    ({"defaults": {"distributed": {"processes": 0}}, "methods": {"pst": {}}}, "train.defaults.distributed.processes"),
    ({"defaults": {"distributed": {"nodes": 2}}, "methods": {"pst": {}}}, "train.defaults.distributed.nodes: unknown key"),
    ({"defaults": {"attn_implementation": "flash"}, "methods": {"pst": {}}}, "train.defaults.attn_implementation"),
    ({"methods": {"pst": {"loss": {"w_sem_token": -1}}}}, "train.methods.pst.loss.w_sem_token"),
    ({"defaults": {"steps": 5, "epochs": 2}, "methods": {"pst": {}}},
     "train.defaults: set exactly one of steps and epochs, the other null .got steps: 5, epochs: 2.0"),
    ({"defaults": {"steps": None}, "methods": {"pst": {}}}, "train.defaults: set exactly one of steps and epochs"),
    ({"methods": {"pst": {"steps": 3, "epochs": 1}}}, "train.methods.pst: set exactly one of steps and epochs"),
    ({"methods": {"pst": {"epochs": 0}}}, "train.methods.pst.epochs: Input should be greater than 0"),
])
def test_bad_train_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse("train", raw)


def test_shipped_params_validate():
    _, train = load_section(PARAMS, "train")
    _, assemble = load_section(PARAMS, "assemble")
    assert set(train.methods) == set(assemble.methods)  # every trained method has its data
    for section in ("evaluate", "report"):
        load_section(PARAMS, section)
    with pytest.raises(ConfigError, match="evaluate.max_itmes: unknown key"):
        parse("evaluate", {"max_itmes": 3})


def test_scale_defaults_keep_the_plain_single_process_float32_run():
    pst = parse("train", {"methods": {"pst": {}}}).methods["pst"]
    assert (pst.cpu_bf16, pst.packing, pst.compile, pst.liger, pst.gradient_checkpointing) == (
        False, False, False, False, False)
    assert (pst.distributed.processes, pst.distributed.fsdp, pst.loss.w_sem_token) == (1, False, 1.0)


def test_budget_in_epochs_or_steps_and_a_method_budget_replaces_the_default():
    cfg = parse("train", {"defaults": {"epochs": 2},
                                  "methods": {"pst": {"steps": 6}, "step_by_step": {}}})
    assert (cfg.defaults.steps, cfg.defaults.epochs) == (None, 2.0)
    assert (cfg.methods["pst"].steps, cfg.methods["pst"].epochs) == (6, None)
    assert (cfg.methods["step_by_step"].steps, cfg.methods["step_by_step"].epochs) == (None, 2.0)
    plain = parse("train", {"methods": {"pst": {"epochs": 1.5}}, "defaults": {"steps": 9}})
    assert (plain.methods["pst"].steps, plain.methods["pst"].epochs) == (None, 1.5)
    assert parse("train", {"methods": {"pst": {}}}).methods["pst"].steps == 100
