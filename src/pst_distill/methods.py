"""The one table of methods: what each training method is, read by config, assembly,
training, evaluation and the report.

=============  =========================================  ======  ====  ========  ======
method         training sequence(s) per question          answer  rows  semantic  modes
                                                          first         loss
=============  =========================================  ======  ====  ========  ======
answer_only    prompt | answer                            yes     1     no        no
pre_thinking   prompt | rationale | answer                no      1     no        no
step_by_step   predict: prompt | answer;                  yes     2     no        no
               explain: prompt | rationale
post_thinking  prompt | answer | rationale                yes     1     no        no
pst            prompt | answer | [SEM] | rationale        yes     1     yes       no
adaptive       prompt | [FAST] | answer | [SEM] | ratio-  both    2     yes       yes
               nale; prompt | [THINK] | rationale | answer
=============  =========================================  ======  ====  ========  ======

*Answer first*: generation stops after the answer line, so the student costs what an
answer-only student costs. *Semantic loss*: the sequences carry ``[SEM]`` and the method's
``w_sem`` defaults to ``train.sem.weight``. *Modes*: one student trained in both orders,
opened by mode controls; a router picks the mode per question. ``loss`` holds the default
loss weights a ``train.methods.<method>.loss`` block leaves out.
"""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True)
class Method:
    name: str
    answer_first: bool     # the answer precedes the rationale (adaptive: per mode)
    rows: int              # training sequences per question
    semantic: bool         # [SEM] in its sequences; w_sem defaults to train.sem.weight
    modes: bool = False    # two modes behind mode controls, routed per question
    loss: dict = field(default_factory=dict)


TABLE = (
    Method("answer_only", True, 1, False, loss={"reduction": "joint"}),
    Method("pre_thinking", False, 1, False, loss={"reduction": "joint"}),
    Method("step_by_step", True, 2, False, loss={"alpha": 0.5}),
    Method("post_thinking", True, 1, False, loss={"w_answer": 1.0, "w_rationale": 1.0,
                                                   "w_sem": 0.0}),
    Method("pst", True, 1, True, loss={"w_answer": 1.0, "w_rationale": 0.1}),
    # fast half: pst's loss; think half: plain CE (w_think) over its rationale and answer
    Method("adaptive", False, 2, True, modes=True,
           loss={"w_answer": 1.0, "w_rationale": 0.1, "w_think": 1.0}),
)
METHODS = tuple(m.name for m in TABLE)
BY_NAME = {m.name: m for m in TABLE}
ANSWER_FIRST = tuple(m.name for m in TABLE if m.answer_first)


def method(name: str) -> Method:
    """The table row of ``name``, or a ValueError naming the allowed methods."""
    try:
        return BY_NAME[name]
    except KeyError:
        raise ValueError(f"unknown method {name!r}; allowed: {', '.join(METHODS)}") from None
