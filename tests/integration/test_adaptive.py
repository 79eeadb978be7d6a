"""The adaptive student on the real SmolLM2 tokenizer and model: its mode controls are the
same tokens at training and inference, start where they are meant to, and are trained;
the fast answer's confidence reads the answer's own tokens."""

from __future__ import annotations

import math

import pytest
import torch

from pst_distill.config.common import FormatConfig
from pst_distill.config.train import TrainConfig
from pst_distill.formats import render_prompt
from pst_distill.train.data import encode_segments
from pst_distill.train.model import add_special
from pst_distill.formats import MODES, control_tokens, mode_control, training_sequences
from pst_distill.train.losses import IGNORE, NO_LOSS
from pst_distill.models import load_tokenizer
from pst_distill.evaluate.modes import answer_confidence
from pst_distill.train.model import mode_controls

MODEL = "smollm2-135m-instruct"
Q, A, R = "Rosa has 45 stickers and gets 8 more. How many now?", "53", "45 + 8 = 53."


@pytest.fixture(scope="module")
def tok():
    return load_tokenizer(MODEL, None, False)


@pytest.mark.parametrize("system", [None, ""])
@pytest.mark.parametrize("kind", ["token", "soft_prompt"])
def test_controls_are_identical_at_training_and_inference(tok, kind, system):
    fmt = FormatConfig(mode_control={"kind": kind, "k": 3}, system_prompt=system)
    for mode in MODES:
        for t in control_tokens(mode, fmt):
            add_special(tok, t)
    prompt = render_prompt(tok, Q, system)
    for mode, seq in zip(MODES, training_sequences("adaptive", Q, A, R, fmt)):
        ex = encode_segments([s.as_dict() for s in seq], tok, 512, label_sem=True, system=system)
        infer = tok(prompt + mode_control(mode, fmt), add_special_tokens=False)["input_ids"]
        n_prompt = len(tok(prompt, add_special_tokens=False)["input_ids"])
        assert ex.input_ids[:len(infer)] == infer  # the router's prompt is the training prefix
        assert infer[n_prompt:] == tok.convert_tokens_to_ids(control_tokens(mode, fmt))
        assert all(lab == IGNORE for lab in ex.labels[:len(infer)])  # never a target
        assert all(p == NO_LOSS for p in ex.parts[:len(infer)])
        if mode == "think":  # inference pre-fills the delimiter the training row continues with
            filled = tok(prompt + mode_control(mode, fmt) + fmt.rationale_prefix,
                         add_special_tokens=False)["input_ids"]
            assert ex.input_ids[:len(filled)] == filled


def test_answer_confidence_reads_the_answer_tokens_only(tok):
    add_special(tok, "[SEM]")
    ids = tok("Answer: 4217\n", add_special_tokens=False)["input_ids"] + tok.convert_tokens_to_ids(["[SEM]"])
    n_prefix = len(tok("Answer:", add_special_tokens=False)["input_ids"])
    n_value = len(tok("Answer: 4217", add_special_tokens=False)["input_ids"]) - n_prefix
    assert n_value >= 1
    lps = [-0.01 * (i + 1) for i in range(len(ids))]
    margins = [0.1 * (i + 1) for i in range(len(ids))]
    conf, margin = answer_confidence({"token_ids": ids, "token_logprobs": lps,
                                      "token_margins": margins}, tok, "Answer:")
    span = lps[n_prefix:n_prefix + n_value]
    assert conf == pytest.approx(math.exp(sum(span) / len(span)))
    assert margin == pytest.approx(margins[n_prefix])
    nothing = answer_confidence({"token_ids": ids[:1], "token_logprobs": lps[:1],
                                 "token_margins": margins[:1]}, tok, "Answer:")
    assert nothing == (0.0, 0.0)


@pytest.mark.model
def test_student_starts_each_control_at_its_delimiter_and_trains_it():
    from pst_distill.train.model import load_student

    fmt = FormatConfig()
    train = TrainConfig.model_validate({"defaults": {"model": MODEL, "steps": 1},
                                        "methods": {"adaptive": {}}})
    settings = train.settings_for("adaptive")
    full, tok, _ = load_student(settings.model_copy(update={"finetune": "full"}), fmt.sem_token,
                                "cpu", mode_controls("adaptive", fmt))
    weight = full.get_input_embeddings().weight
    fast, think = tok.convert_tokens_to_ids(["[FAST]", "[THINK]"])
    for tid, text in ((fast, fmt.answer_prefix), (think, fmt.rationale_prefix)):
        src = tok(text, add_special_tokens=False)["input_ids"]
        assert torch.allclose(weight[tid], weight[src].mean(0))
    assert not torch.allclose(weight[fast], weight[think])  # the modes differ from step one
    lora, tok, sem_id = load_student(settings, fmt.sem_token, "cpu", mode_controls("adaptive", fmt))
    trainable = lora.peft_config["default"].trainable_token_indices
    ids = trainable if isinstance(trainable, list) else next(iter(trainable.values()))
    assert sorted(ids) == sorted([sem_id, fast, think])
    assert mode_controls("pst", fmt) is None


@pytest.mark.model
def test_prompt_features_are_the_last_hidden_state_without_the_lm_head(tmp_path):
    """The decoder alone gives the full model's last hidden state at each prompt's end."""
    import torch
    from student_fixtures import tiny_model_dir

    from pst_distill.evaluate.modes import prompt_features
    from pst_distill.models import load_causal_lm

    model, tok = load_causal_lm(tiny_model_dir(tmp_path / "tiny"), device="cpu", dtype="float32")
    prompts = ["a short one", "a somewhat longer prompt, left-padded in its batch"]
    feats, _ = prompt_features(model, tok, prompts, batch_size=2)
    enc = tok(prompts, return_tensors="pt", padding=True, add_special_tokens=False)
    with torch.inference_mode():
        full = model(**enc, output_hidden_states=True, use_cache=False).hidden_states[-1][:, -1]
    assert feats.shape == (2, model.config.hidden_size)
    torch.testing.assert_close(feats, full.float(), rtol=1e-5, atol=1e-5)
