"""The transformers teacher generating for real with the packaged SmolLM2-135M-Instruct."""

import pytest

from pst_distill.config.teacher import TeacherConfig
from pst_distill.teacher.generate import generate_rationales, make_backend
from pst_distill.teacher.transformers_backend import trim_completion

pytestmark = pytest.mark.model
PREFIX = "Answer:"


@pytest.fixture(scope="module")
def backend():
    cfg = TeacherConfig(backend="transformers", batch_size=3, max_new_tokens=48, only_correct=False)
    return make_backend(cfg, PREFIX)


def test_generates_scored_records(backend, teacher_items):
    items = teacher_items(3)
    kept, gens, stats = generate_rationales(items, backend.cfg, PREFIX, seed=0, backend=backend)
    assert len(gens) == 3 and stats["generations"] == 3
    assert {g["id"] for g in gens} == {i["id"] for i in items}
    for g in gens:
        assert g["prompt"].startswith("<|im_start|>")  # the model's chat template
        assert g["prompt"].rstrip().endswith("assistant")
        assert g["finish_reason"] in ("stop", "length")
        assert 0 < g["completion_tokens"] <= 48 and g["prompt_tokens"] > 20
        assert g["teacher"]["backend"] == "transformers"
        assert g["correct"] == (g["pred_answer"] == g["answer"])
        if g["finish_reason"] == "length":
            assert g["dropped"] == "truncated"
    assert stats["kept"] + sum(stats["dropped"].values()) == 3
    assert sum(stats["finish_reasons"].values()) == 3


def test_sampling_n_per_question(backend, teacher_items):
    cfg = backend.cfg.model_copy(update={"n": 2, "temperature": 0.8, "max_new_tokens": 16})
    _, gens, _ = generate_rationales(teacher_items(2), cfg, PREFIX, seed=1, backend=backend)
    assert sorted((g["id"], g["sample"]) for g in gens) == sorted(
        (i["id"], s) for i in teacher_items(2) for s in (0, 1))
    assert len({g["key"] for g in gens}) == 4


def test_stops_once_the_answer_line_is_complete():
    text, stopped = trim_completion("3 + 4 = 7.\nAnswer: 7\nQ: next question", PREFIX, ())
    assert (text, stopped) == ("3 + 4 = 7.\nAnswer: 7", True)
    assert trim_completion("still thinking", PREFIX, ()) == ("still thinking", False)
    assert trim_completion("a\n\nb", PREFIX, ("\n\n",)) == ("a", True)
