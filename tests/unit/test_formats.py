"""Exact assembled sequences per method with the default delimiters (the format contract)."""

from __future__ import annotations

import pytest

from pst_distill.config.common import FormatConfig
from pst_distill.formats import control_tokens, inference_prompt, stop_strings, training_sequences
from pst_distill.methods import METHODS

FMT = FormatConfig()
Q = "Rosa has 45 stickers. Rosa gets 8 more. How many stickers does Rosa have now?"
A = "53"
R = "Rosa starts with 45 stickers. After getting 8 more: 45 + 8 = 53.  "  # trailing space stripped
RS = "Reasoning: Rosa starts with 45 stickers. After getting 8 more: 45 + 8 = 53."

EXPECTED = {
    "answer_only": [[("prompt", Q), ("answer", "Answer: 53")]],
    "pre_thinking": [[("prompt", Q), ("rationale", RS + "\n"), ("answer", "Answer: 53")]],
    "post_thinking": [[("prompt", Q), ("answer", "Answer: 53\n"), ("rationale", RS)]],
    "pst": [[("prompt", Q), ("answer", "Answer: 53\n"), ("sem", "[SEM]"), ("rationale", RS)]],
    "step_by_step": [[("prompt", "predict: " + Q), ("answer", "Answer: 53")],
                     [("prompt", "explain: " + Q), ("rationale", RS)]],
    "adaptive": [[("prompt", Q), ("control", "[FAST]"), ("answer", "Answer: 53\n"), ("sem", "[SEM]"),
                  ("rationale", RS)],
                 [("prompt", Q), ("control", "[THINK]"), ("think_rationale", RS + "\n"),
                  ("think_answer", "Answer: 53")]],
}

# what the student is trained to generate after the prompt, as one string
COMPLETIONS = {
    "answer_only": ["Answer: 53"],
    "pre_thinking": [RS + "\nAnswer: 53"],
    "post_thinking": ["Answer: 53\n" + RS],
    "pst": ["Answer: 53\n[SEM]" + RS],
    "step_by_step": ["Answer: 53", RS],
    "adaptive": ["[FAST]Answer: 53\n[SEM]" + RS, "[THINK]" + RS + "\nAnswer: 53"],
}


@pytest.mark.parametrize("method", METHODS)
def test_exact_segments(method):
    seqs = training_sequences(method, Q, A, R, FMT)
    assert [[(s.kind, s.text) for s in seq] for seq in seqs] == EXPECTED[method]


@pytest.mark.parametrize("method", METHODS)
def test_exact_completion_strings(method):
    seqs = training_sequences(method, Q, A, R, FMT)
    assert ["".join(s.text for s in seq[1:]) for seq in seqs] == COMPLETIONS[method]


@pytest.mark.parametrize("method", METHODS)
def test_inference_prompt_matches_training_prompt(method):
    first = training_sequences(method, Q, A, R, FMT)[0][0]
    assert first.kind == "prompt" and inference_prompt(method, Q) == first.text


def test_stop_strings():
    assert stop_strings("pst", FMT) == ["Reasoning:", "[SEM]"]
    assert stop_strings("pst", FMT, generate_rationale=True) == []
    assert stop_strings("pre_thinking", FMT) == []


def test_custom_delimiters():
    fmt = FormatConfig(answer_prefix="A:", rationale_prefix="Why:", sem_token="<sem>")
    seq = training_sequences("pst", "q?", "x", "because", fmt)[0]
    assert "".join(s.text for s in seq) == "q?A: x\n<sem>Why: because"


def test_unknown_method():
    with pytest.raises(ValueError, match="unknown method 'cot'"):
        training_sequences("cot", Q, A, R, FMT)


def test_soft_prompt_controls_are_k_tokens_per_mode():
    fmt = FormatConfig(mode_control={"kind": "soft_prompt", "k": 3})
    fast, think = training_sequences("adaptive", Q, A, R, fmt)
    assert fast[1].text == "[FAST_1][FAST_2][FAST_3]" and think[1].text == "[THINK_1][THINK_2][THINK_3]"
    assert control_tokens("fast", FMT) == ["[FAST]"]
    with pytest.raises(ValueError, match="unknown mode 'slow'"):
        control_tokens("slow", FMT)
