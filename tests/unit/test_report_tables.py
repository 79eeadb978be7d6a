"""Report tables on a small constructed comparison: shape, cells, marks and refusals."""

import re

import pytest

from pst_distill.report.tables import accuracy_table, baseline_table, build_arrays, comparison_pairs, comparison_report, histogram_tables, paired_table

COIN = ["yes"] * 14 + ["no"] * 6  # 20 yes-no questions
ARITH = [str(i % 4) for i in range(12)]  # 12 number questions
TRAIN = {"coin": ["yes", "no", "yes"], "arith": ["3", "3", "1"]}
N_BOOT = 200
CELL = r"\d\.\d{3} \[\d\.\d{2}, \d\.\d{2}\]"


def rows(coin_pred, arith_pred):
    """Prediction rows of one seed; ``*_pred(i, gold)`` gives the predicted answer."""
    out = []
    for task, golds, kind, pred in (("coin", COIN, "yes-no", coin_pred), ("arith", ARITH, "number", arith_pred)):
        for i, gold in enumerate(golds):
            p = pred(i, gold)
            out.append({"id": f"{task}-{i:02d}", "task": task, "answer": gold, "answer_type": kind,
                        "pred_flexible": p, "pred_strict": p,
                        "correct_flexible": p == gold, "correct_strict": p == gold})
    return out


def right(i, gold):
    return gold


def wrong_num(i, gold):
    return "99"


PREDICTIONS = {  # deliberately not in METHODS order
    "pst": {0: rows(right, right), 1: rows(right, right)},
    "answer_only": {0: rows(lambda i, g: "yes", wrong_num), 1: rows(lambda i, g: "yes", wrong_num)},
    "post_thinking": {0: rows(right, right), 1: rows(right, right)},
    "pre_thinking": {0: rows(lambda i, g: "[invalid]" if i < 2 else g, right),
                     1: rows(lambda i, g: "no", right)},
}


@pytest.fixture(scope="module")
def arrays():
    return build_arrays(PREDICTIONS)


def table_rows(md):
    return [ln for ln in md.splitlines() if ln.startswith("| ") and not ln.startswith("|---")]


def test_accuracy_table_shape_and_cells(arrays):
    md = accuracy_table(arrays, N_BOOT)
    lines = table_rows(md)
    assert lines[0] == "| method | arith | coin | overall | seeds |"
    assert [ln.split(" | ")[0][2:] for ln in lines[1:]] == ["answer_only", "pre_thinking",
                                                            "post_thinking", "pst"]
    for ln in lines[1:]:
        assert len(re.findall(CELL, ln)) == 3 and ln.endswith("| 2 |")
    # answer_only: always "yes" on coin = 14/20 on both seeds, never right on arith
    assert lines[1].startswith("| answer_only | 0.000 [0.00, 0.") and "| 0.700 [" in lines[1]
    assert lines[4].endswith("| 1.000 [0.89, 1.00] | 2 |")  # pst overall: Wilson(32 of 32)


def test_baseline_table_majority_and_best_constant(arrays):
    lines = table_rows(baseline_table(arrays, TRAIN))
    assert lines[0] == "| baseline | arith | coin | overall |"
    # majority of train: arith "3" (3/12), coin "yes" (14/20); overall 17/32
    assert lines[1] == "| majority of train | 0.250 [0.09, 0.53] (3) | 0.700 [0.48, 0.85] (yes) | 0.531 [0.36, 0.69] |"
    # best constant on test: arith ties at 3/12 -> "0", coin "yes"
    assert lines[2].startswith("| best constant on test | 0.250 [0.09, 0.53] (0) | 0.700 [0.48, 0.85] (yes) |")
    with pytest.raises(ValueError, match=r"no training labels for task\(s\) \['arith'\]"):
        baseline_table(arrays, {"coin": TRAIN["coin"]})


def test_paired_table_rows_and_marks(arrays):
    lines = table_rows(paired_table(arrays, n_boot=N_BOOT))
    assert lines[0] == "| A − B | arith | coin | overall |"
    assert [ln.split(" | ")[0][2:] for ln in lines[1:]] == [
        "pst − answer_only", "pst − pre_thinking", "pst − post_thinking",
        "post_thinking − answer_only", "post_thinking − pre_thinking"]
    pst_ao = lines[1].split(" | ")
    assert pst_ao[1].startswith("**+1.000 [+1.00, +1.00] ✓**")  # right on all 12 vs none
    assert pst_ao[2].startswith("**+0.300 [") and pst_ao[2].endswith("✓**")  # 6/20 wrong "yes"
    assert "| +0.000 [+0.00, +0.00] | +0.000 [+0.00, +0.00] | +0.000 [+0.00, +0.00] |" in lines[3]
    assert "✓" not in lines[3] and "**" not in lines[3]


def test_comparison_pairs_only_present_methods_once():
    assert comparison_pairs(["pst", "post_thinking", "step_by_step"]) == [
        ("pst", "step_by_step"), ("pst", "post_thinking"), ("post_thinking", "step_by_step")]
    assert comparison_pairs(["answer_only", "pre_thinking"]) == []


def test_histogram_tables_for_label_tasks_only(arrays):
    md = histogram_tables(arrays)
    assert "### coin (2 seeds × 20 questions)" in md and "arith" not in md
    lines = table_rows(md)
    assert lines[0] == "| predicted | no | yes | [invalid] |"
    assert lines[1] == "| gold (×2) | 12 | 28 | 0 |"
    assert "| answer_only | 0 | 40 | 0 |" in lines
    # pre_thinking: seed 0 gold except 2 invalid (first two are "yes"), seed 1 always "no"
    assert "| pre_thinking | 26 | 12 | 2 |" in lines


def test_comparison_report_has_every_section():
    md = comparison_report(PREDICTIONS, TRAIN, n_boot=N_BOOT)
    for heading in ("## Accuracy (flexible extraction) with 95% intervals", "## Constant baselines",
                    "## Paired differences", "## Predicted labels"):
        assert heading in md


def test_methods_must_share_questions_and_seeds():
    other_ids = {**PREDICTIONS, "step_by_step": {0: rows(right, right)[1:], 1: rows(right, right)[1:]}}
    with pytest.raises(ValueError, match="different question ids"):
        build_arrays(other_ids)
    other_seeds = {**PREDICTIONS, "step_by_step": {0: rows(right, right), 2: rows(right, right)}}
    with pytest.raises(ValueError, match="seeds"):
        build_arrays(other_seeds)
