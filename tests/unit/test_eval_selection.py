"""The evaluation set (evaluate.per_task): a fixed number per task, balanced by gold label for
yes-no and choice tasks, chosen by id hash (deterministic, independent of input order, the
same for every method and seed, stable when unrelated questions are added); and the split of
an evaluation summary into the few declared metrics and the details file."""

import random
from collections import Counter

import pytest

from pst_distill.evaluate.run import COMPARED, split_summary
from pst_distill.evaluate.select import select_items


def item(task: str, i: int, answer: str, answer_type: str) -> dict:
    return {"id": f"{task}-{i:03d}", "task": task, "question": f"q{i}", "answer": answer,
            "answer_type": answer_type}


def coin(n_yes: int, n_no: int, start: int = 0) -> list[dict]:
    answers = ["yes"] * n_yes + ["no"] * n_no
    return [item("coin_flip", start + i, a, "yes-no") for i, a in enumerate(answers)]


def arithmetic(n: int, start: int = 0) -> list[dict]:
    return [item("multistep_arithmetic", i, str(i), "number") for i in range(start, start + n)]


def ids(items) -> set[str]:
    return {it["id"] for it in items}


def per_task(items) -> Counter:
    return Counter(it["task"] for it in items)


def test_fixed_number_per_task_and_all_when_null():
    items = coin(30, 30) + arithmetic(50)
    chosen, info = select_items(items, 12)
    assert per_task(chosen) == {"coin_flip": 12, "multistep_arithmetic": 12}
    assert info["multistep_arithmetic"] == {"available": 50, "selected": 12}
    everything, _ = select_items(items, None)
    assert everything == items
    few, info = select_items(arithmetic(5), 12)  # fewer than asked: all of them, said so
    assert len(few) == 5 and info["multistep_arithmetic"]["selected"] == 5


def test_yes_no_task_is_balanced_despite_a_skewed_split():
    chosen, info = select_items(coin(70, 30), 20)
    assert Counter(it["answer"] for it in chosen) == {"yes": 10, "no": 10}
    assert info["coin_flip"]["labels"] == {"no": 10, "yes": 10}
    assert info["coin_flip"]["short_labels"] == {}


def test_a_label_that_runs_short_is_topped_up_and_named():
    chosen, info = select_items(coin(40, 6), 20)
    assert Counter(it["answer"] for it in chosen) == {"yes": 14, "no": 6}  # still 20 questions
    assert info["coin_flip"]["short_labels"] == {"no": {"wanted": 10, "available": 6}}


def test_choice_task_balanced_over_its_labels_remainder_to_the_first():
    answers = ["A"] * 20 + ["B"] * 20 + ["C"] * 3 + ["D"] * 20
    items = [item("mcq", i, a, "choice") for i, a in enumerate(answers)]
    chosen, info = select_items(items, 14)
    # shares 4, 4, 3, 3 (14 = 4 × 3 + 2); C has 3 of its 3, so the shares are met exactly
    assert Counter(it["answer"] for it in chosen) == {"A": 4, "B": 4, "C": 3, "D": 3}
    chosen, info = select_items(items, 18)  # shares 5, 5, 4, 4: C short by one, D (next in turn) fills it
    assert Counter(it["answer"] for it in chosen) == {"A": 5, "B": 5, "C": 3, "D": 5}
    assert info["mcq"]["short_labels"] == {"C": {"wanted": 4, "available": 3}}


def test_labels_are_normalised_before_balancing():
    items = [item("coin_flip", i, a, "yes-no") for i, a in enumerate(["Yes", "yes", "No", "no"] * 5)]
    chosen, info = select_items(items, 10)
    assert info["coin_flip"]["labels"] == {"no": 5, "yes": 5}


def test_deterministic_and_independent_of_input_order():
    items = coin(50, 25) + arithmetic(60)
    chosen, info = select_items(items, 16)
    shuffled = items[:]
    random.Random(3).shuffle(shuffled)
    again, info_again = select_items(shuffled, 16)
    assert ids(again) == ids(chosen) and info_again == info
    assert [it["id"] for it in again] == [it["id"] for it in shuffled if it["id"] in ids(chosen)]
    # by id hash, not the first questions of the file
    assert ids(chosen) != ids(coin(8, 0) + coin(0, 8, start=50) + arithmetic(16))


def test_stable_when_unrelated_questions_are_added():
    base = coin(50, 25) + arithmetic(60)
    chosen, _ = select_items(base, 16)
    # questions of another task change nothing
    more_tasks = base + [item("mcq", i, "ABCD"[i % 4], "choice") for i in range(40)]
    with_other, _ = select_items(more_tasks, 16)
    assert ids(chosen) <= ids(with_other) and per_task(with_other)["mcq"] == 16
    # k more questions of the same task displace at most k chosen ones
    grown, _ = select_items(base + arithmetic(5, start=500), 16)
    arith = lambda xs: {i for i in ids(xs) if i.startswith("multistep")}
    assert len(arith(chosen) - arith(grown)) <= 5 and len(arith(grown)) == 16
    assert {i for i in ids(grown) if i.startswith("coin")} == {i for i in ids(chosen) if i.startswith("coin")}


def test_duplicate_ids_are_refused():
    with pytest.raises(ValueError, match="duplicate ids"):
        select_items(coin(2, 2) + coin(1, 0), 2)


def test_split_summary_keeps_only_compared_figures_as_metrics():
    task = {"n": 4, "accuracy_flexible": 0.5, "accuracy_strict": 0.25,
            "parse_failures_strict": 1, "parse_failures_flexible": 0}
    summary = {"stage": "evaluate_student", "method": "pst", **task, "tasks": {"coin_flip": task},
               "generated_tokens_per_question": 5.12345, "seconds_per_question": 0.123456,
               "finish_reasons": {"stop": 4}, "wall_seconds": 3.0, "generation": {"greedy": True},
               "selection": {"per_task": 4, "tasks": {}}}
    metrics, details = split_summary(summary, 7)
    assert metrics == {"method": "pst", "seed": 7, "n": 4, "accuracy_flexible": 0.5,
                       "accuracy_strict": 0.25, "tasks": {"coin_flip": {k: task[k] for k in COMPARED}},
                       "generated_tokens_per_question": 5.123, "seconds_per_question": 0.1235}
    assert details["seed"] == 7 and details["finish_reasons"] == {"stop": 4}
    assert details["tasks"]["coin_flip"]["parse_failures_strict"] == 1 and "selection" in details


# ------------------------------------------------------------------ think-first stop
class CharTokenizer:
    """A character-level tokenizer (id = code point, 0 = EOS and padding): enough to drive
    the stopping rule and the decoder without a model."""

    eos_token_id = pad_token_id = 0

    def __len__(self) -> int:
        return 128

    def decode(self, ids, skip_special_tokens: bool = True) -> str:
        return "".join(chr(i) for i in ids if i)

    def batch_decode(self, rows) -> list[str]:
        return [self.decode(r) for r in rows]


def _ids(text: str) -> list[int]:
    return [ord(c) for c in text]


def test_answer_line_stop_ends_a_row_after_its_first_answer_line():
    from stops import incremental_stop_steps, quadratic_stop_steps

    from pst_distill.evaluate.generate import answer_line_end

    assert answer_line_end("Reasoning: 2+2=4.\nAnswer: 4\nAnswer: 5", "Answer:") == 28
    assert answer_line_end("Reasoning: 2+2=4.\nAnswer: 4", "Answer:") is None  # line not ended
    assert answer_line_end("Reasoning: no answer\n", "Answer:") is None
    prompt = _ids("Q?")
    rows = [prompt + _ids(text) for text in (
        "R: x\nAnswer: 4\n", "R: x\nAnswer: 4", "R: x\nmore\n", "Answer: 1 so\nAnswer: 2\n",
        "R: the Answer: 7\nnext\n", "\n\n\nAnswer:\n", "R: no\nAnswer")]
    tok = CharTokenizer()
    steps = incremental_stop_steps(tok, rows, len(prompt), "Answer:")
    assert steps == quadratic_stop_steps(tok, rows, len(prompt), "Answer:")
    assert steps == [len(rows[0]), None, None, len(prompt) + 13, len(prompt) + 17,
                     len(rows[5]), None]


def test_a_stopped_think_first_row_is_cut_after_its_answer_line():
    from pst_distill.evaluate.generate import _finish

    tok = CharTokenizer()
    row = _ids("R: 2+2=4.\nAnswer: 4\n") + [0, 0]  # stopped, then padded by generate
    res = _finish(row, tok, [], "Answer:")
    assert res == {"text": "R: 2+2=4.\nAnswer: 4", "generated_tokens": len(_ids("R: 2+2=4.\nAnswer: 4\n")),
                   "finish_reason": "stop"}
    ended = _finish(_ids("R: 4.\nAnswer: 4") + [0], tok, [], "Answer:")  # the model's own EOS
    assert ended["finish_reason"] == "eos" and ended["generated_tokens"] == len("R: 4.\nAnswer: 4") + 1
    assert _finish(_ids("R: 4.\nAnswer: 4\n") + [0], tok, [])["finish_reason"] == "eos"  # rule off
