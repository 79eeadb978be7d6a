"""Evaluation: a tiny model overfit on one post-thinking sequence must stop at the rationale
delimiter (and write it when asked); metrics and predictions carry what the report needs."""

import pytest
from student_fixtures import FMT, assembled_rows, items, settings, tiny_model_dir

from pst_distill import trainer
from pst_distill.config import EvaluateConfig
from pst_distill.evaluate import evaluate, select_items
from pst_distill.models import load_causal_lm


@pytest.fixture(scope="module")
def overfit(tmp_path_factory):
    """(model folder, the item) after memorising Q ⊕ "Answer: a" ⊕ "Reasoning: …"."""
    tmp = tmp_path_factory.mktemp("overfit")
    item = items(1)[0]
    s = settings(tiny_model_dir(tmp / "base"), "post_thinking", steps=60, batch_size=1,
                 save_every=60, lr=1e-2, max_grad_norm=1.0)
    trainer.train(assembled_rows("post_thinking", [item]), s, "post_thinking", FMT, 0,
                  tmp / "model", tmp / "loss.tsv", None, "cpu")
    return tmp / "model", item


def run_eval(model_dir, item, method, **cfg):
    model, tok = load_causal_lm(str(model_dir), device="cpu", dtype="float32")
    cfg = EvaluateConfig(**{"batch_size": 2, "max_new_tokens": 40, **cfg})
    return evaluate(model, tok, [item, {**item, "id": "other"}], method, FMT, cfg)


@pytest.mark.slow
def test_answer_first_generation_stops_at_rationale_delimiter(overfit):
    model_dir, item = overfit
    preds, metrics = run_eval(model_dir, item, "post_thinking")
    p = preds[0]
    assert p["completion"] == f"{FMT.answer_prefix} {item['answer']}"
    assert p["finish_reason"] == "stop" and FMT.rationale_prefix not in p["completion"]
    assert p["correct_strict"] and p["correct_flexible"]
    # "Answer: xy\n" plus the tokens of the delimiter, far fewer than the rationale's
    assert p["generated_tokens"] <= 10
    assert metrics["accuracy_strict"] == 1.0 and metrics["parse_failures_strict"] == 0
    assert metrics["generation"]["stop_strings"] == [FMT.rationale_prefix, FMT.sem_token]


@pytest.mark.slow
def test_generate_rationale_goes_past_the_delimiter(overfit):
    model_dir, item = overfit
    preds, metrics = run_eval(model_dir, item, "post_thinking", generate_rationale=True,
                              max_new_tokens_rationale=60)
    p = preds[0]
    assert p["completion"].startswith(f"{FMT.answer_prefix} {item['answer']}\n{FMT.rationale_prefix}")
    assert p["generated_tokens"] > 15 and p["correct_strict"]
    assert metrics["generation"]["max_new_tokens"] == 60


@pytest.mark.slow
def test_metrics_per_task_and_time(overfit):
    model_dir, item = overfit
    _, m = run_eval(model_dir, item, "post_thinking")
    assert m["stage"] == "evaluate_student" and m["method"] == "post_thinking" and m["n"] == 2
    assert set(m["tasks"]) == {item["task"]} and m["tasks"][item["task"]]["n"] == 2
    assert m["seconds_per_question"] > 0 and m["generated_tokens_per_question"] > 0


def test_select_items_is_balanced_over_tasks_and_stable():
    its = [{"id": f"{t}{i}", "task": t} for t in "abc" for i in range(5)]
    chosen = select_items(list(reversed(its)), 7)
    assert [c["task"] for c in chosen] == list("abcabca")
    assert chosen == select_items(its, 7)
    assert select_items(its, None) == its


def test_answer_first_is_scored_on_its_first_line():
    from pst_distill.evaluate import answer_part, score

    assert answer_part("\nAnswer: no\nAnswer: yes") == "Answer: no"
    item = {"id": "x", "task": "coin_flip", "answer": "no", "answer_type": "yes-no"}
    res = {"text": "Answer: no\nAnswer: yes", "generated_tokens": 9, "finish_reason": "length",
           "seconds": 0.1}
    assert score(item, res, "pst", first_line=True)["correct_strict"]
    assert not score(item, res, "pre_thinking")["correct_strict"]  # last answer line counts
