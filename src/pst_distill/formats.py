"""Sequence formats of the methods (:mod:`pst_distill.methods`), as text segments shared by
training and inference.

A training sequence is a list of :class:`Segment`; the first is always the ``prompt``
(the user turn, wrapped in the student's chat template at tokenisation time). The
trainer tokenises each segment separately and concatenates the ids, so the token span
of every part is exact, and appends EOS to the last segment.

    answer_only    prompt | answer
    pre_thinking   prompt | rationale | answer
    post_thinking  prompt | answer | rationale
    pst            prompt | answer | sem | rationale
    step_by_step   "predict: " prompt | answer      and    "explain: " prompt | rationale
    adaptive       prompt | [FAST] | answer | sem | rationale   and   prompt | [THINK] | rationale | answer

``adaptive`` trains one student in both modes; a mode control (:func:`mode_control`: one
special token per mode, or a soft prompt of k learned virtual tokens per mode) opens the
assistant turn, and at inference a router (:mod:`pst_distill.evaluate.routing`) appends the
control of the mode it picks. The think-first half has its own segment kinds, so its loss is
a plain CE of its own (``think_rationale``/``think_answer``: part THINK of the train losses).

Inference uses :func:`inference_prompt`, the same prompt segment, rendered by
:func:`render_prompt` as in training, and stops answer-first methods at :func:`stop_strings`
(the rationale delimiter and the [SEM] token).
"""

from __future__ import annotations

from dataclasses import asdict, dataclass
from typing import Literal

from pst_distill.methods import ANSWER_FIRST, method as _method

Kind = Literal["prompt", "control", "answer", "rationale", "sem", "think_rationale", "think_answer"]
PREDICT, EXPLAIN = "predict: ", "explain: "
MODES = ("fast", "think")  # adaptive: answer first | rationale first


@dataclass(frozen=True)
class Segment:
    kind: Kind
    text: str

    def as_dict(self) -> dict:
        return asdict(self)


def answer_text(answer: str, fmt) -> str:
    return f"{fmt.answer_prefix} {answer}"


def rationale_text(rationale: str, fmt) -> str:
    return f"{fmt.rationale_prefix} {rationale.strip()}"


def training_sequences(method: str, question: str, answer: str, rationale: str,
                       fmt) -> list[list[Segment]]:
    """The sequences one (question, answer, rationale) item contributes for ``method``."""
    a, r = answer_text(answer, fmt), rationale_text(rationale, fmt)
    q = Segment("prompt", question)
    if method == "answer_only":
        return [[q, Segment("answer", a)]]
    if method == "pre_thinking":
        return [[q, Segment("rationale", r + "\n"), Segment("answer", a)]]
    if method == "post_thinking":
        return [[q, Segment("answer", a + "\n"), Segment("rationale", r)]]
    if method == "pst":
        return [[q, Segment("answer", a + "\n"), Segment("sem", fmt.sem_token),
                 Segment("rationale", r)]]
    if method == "step_by_step":
        return [[Segment("prompt", PREDICT + question), Segment("answer", a)],
                [Segment("prompt", EXPLAIN + question), Segment("rationale", r)]]
    if method == "adaptive":
        return [[q, Segment("control", mode_control("fast", fmt)), Segment("answer", a + "\n"),
                 Segment("sem", fmt.sem_token), Segment("rationale", r)],
                [q, Segment("control", mode_control("think", fmt)),
                 Segment("think_rationale", r + "\n"), Segment("think_answer", a)]]
    _method(method)  # raises: unknown method
    raise AssertionError(f"method {method!r} is in the table but has no sequence format")


def control_tokens(mode: str, fmt) -> list[str]:
    """The special tokens that open ``mode``: ``[FAST]`` / ``[THINK]`` (kind ``token``) or
    ``[FAST_1]``..``[FAST_k]`` (kind ``soft_prompt``: k learned virtual tokens)."""
    if mode not in MODES:
        raise ValueError(f"unknown mode {mode!r}; allowed: {', '.join(MODES)}")
    ctl = fmt.mode_control
    name = mode.upper()
    if ctl.kind == "token":
        return [f"[{name}]"]
    return [f"[{name}_{i}]" for i in range(1, ctl.k + 1)]


def mode_control(mode: str, fmt) -> str:
    """The control text of ``mode``, identical in training rows and inference prompts."""
    return "".join(control_tokens(mode, fmt))


def inference_prompt(method: str, question: str) -> str:
    """The user turn at test time: identical to the training prompt segment."""
    _method(method)
    return PREDICT + question if method == "step_by_step" else question


def stop_strings(method: str, fmt, generate_rationale: bool = False) -> list[str]:
    """Answer-first methods stop at the rationale delimiter (and [SEM]) unless asked on."""
    if method in ANSWER_FIRST and not generate_rationale:
        return [fmt.rationale_prefix, fmt.sem_token]
    return []


def render_prompt(tokenizer, text: str, system: str | None = None) -> str:
    """The user turn as the student sees it, identical at training and inference;
    ``system`` (common.format.system_prompt): a system turn, or None for the template's."""
    if getattr(tokenizer, "chat_template", None):
        system_turn = [] if system is None else [{"role": "system", "content": system}]
        return tokenizer.apply_chat_template([*system_turn, {"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    return f"Q: {text}\nA: " if not system else f"{system}\nQ: {text}\nA: "
