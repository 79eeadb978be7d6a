"""train / evaluate / report params: per-method merge, defaults per method, clear errors."""

from pathlib import Path

import pytest

from pst_distill.config import ConfigError, load_section, parse_section

PARAMS = Path(__file__).resolve().parents[2] / "params.yaml"


def test_methods_merge_defaults_and_take_method_loss_defaults():
    cfg = parse_section("train", {"defaults": {"steps": 5, "lora": {"r": 4}},
                                  "methods": {"pst": {"lr": 0.01, "lora": {"alpha": 8}},
                                              "step_by_step": {}, "answer_only": None}})
    pst, sbs = cfg.methods["pst"], cfg.methods["step_by_step"]
    assert (pst.steps, pst.lr, pst.lora.r, pst.lora.alpha) == (5, 0.01, 4, 8)
    assert (pst.loss.w_answer, pst.loss.w_rationale, pst.loss.w_sem) == (1.0, 0.1, 1.0)
    assert (sbs.loss.w_answer, sbs.loss.w_rationale, sbs.loss.w_sem) == (0.5, 0.5, 0.0)
    assert cfg.methods["answer_only"].loss.reduction == "joint"


def test_sem_weight_is_lambda_of_pst_only():
    cfg = parse_section("train", {"sem": {"weight": 0.5, "loss": "infonce"},
                                  "methods": {"pst": {}, "post_thinking": {}}})
    assert cfg.methods["pst"].loss.w_sem == 0.5
    assert cfg.methods["post_thinking"].loss.w_sem == 0.0
    assert cfg.methods["pst"].sem.loss == cfg.methods["post_thinking"].sem.loss == "infonce"


@pytest.mark.parametrize("raw, message", [
    ({"methods": {"pst": {"lr": -1}}}, "train.methods.pst.lr: Input should be greater than 0"),
    ({"methods": {"pst": {"lorra": 1}}}, "train.methods.pst.lorra: unknown key; allowed keys: batch_size"),
    ({"methods": {"pts": {}}}, "'pst'"),
    ({"defaults": {"steps": 0}, "methods": {"pst": {}}}, "train.defaults.steps"),
    ({"defaults": {"loss": {"w_sem": 1}}, "methods": {"pst": {}}}, "loss weights are per method"),
    ({"methods": {"pst": {"loss": {"alpha": 0.3, "w_answer": 1}}}}, "either alpha or w_answer"),
    ({"sem": {"loss": "l1"}, "methods": {"pst": {}}}, "train.sem.loss"),
    ({"sem": {"weight": -1}, "methods": {"pst": {}}}, "train.sem.weight"),
    ({"methods": {"pst": {"sem": {"loss": "mse"}}}}, "train.methods.pst.sem: the semantic loss is set once"),
    ({"methods": {}}, "train.methods"),
])
def test_bad_train_params_name_the_key(raw, message):
    with pytest.raises(ConfigError, match=message.replace("(", r"\(")):
        parse_section("train", raw)


def test_shipped_params_validate():
    _, train = load_section(PARAMS, "train")
    assert set(train.methods) == {"answer_only", "pre_thinking", "step_by_step", "post_thinking", "pst"}
    for section in ("evaluate", "report"):
        load_section(PARAMS, section)
    with pytest.raises(ConfigError, match="evaluate.max_itmes: unknown key"):
        parse_section("evaluate", {"max_itmes": 3})
