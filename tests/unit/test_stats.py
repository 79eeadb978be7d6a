"""Statistics on known samples: Wilson values, bootstrap behaviour, pairing, baselines."""

import numpy as np
import pytest

from pst_distill.report.stats import accuracy_interval, aligned_by_task, as_matrix, best_constant_baseline, check_aligned, label_histogram, majority_baseline, paired_difference, wilson

N_BOOT = 1000


def first_k(k, n):
    """A 0/1 vector of length n, correct on the first k questions."""
    return np.arange(n) < k


def width(iv):
    return iv.hi - iv.lo


# ---------------------------------------------------------------- Wilson / one seed

@pytest.mark.parametrize("k,n,lo,hi", [
    (8, 10, 0.4902, 0.9433),  # textbook values (e.g. Newcombe 1998; Agresti & Coull 1998)
    (50, 100, 0.4038, 0.5962),
    (0, 20, 0.0, 0.1611),
    (20, 20, 0.8389, 1.0),
    (1, 20, 0.0089, 0.2361),
])
def test_wilson_textbook_values(k, n, lo, hi):
    assert wilson(k, n) == pytest.approx((lo, hi), abs=1e-4)


def test_wilson_rejects_impossible_counts():
    for k, n in [(3, 2), (-1, 5), (0, 0)]:
        with pytest.raises(ValueError, match="0 <= k <= n"):
            wilson(k, n)


def test_one_seed_uses_wilson_over_questions():
    iv = accuracy_interval(first_k(13, 20))
    assert (iv.mean, iv.n_seeds, iv.n_questions, iv.method) == (0.65, 1, 20, "wilson")
    assert (iv.lo, iv.hi) == wilson(13, 20)
    assert accuracy_interval(first_k(13, 20)[None, :]) == iv  # [1, Q] is the same as [Q]


@pytest.mark.parametrize("n_seeds", [1, 3])
def test_all_correct_and_all_wrong(n_seeds):
    right = accuracy_interval(np.ones((n_seeds, 20), bool), N_BOOT)
    wrong = accuracy_interval(np.zeros((n_seeds, 20), bool), N_BOOT)
    assert (right.mean, right.hi) == (1.0, 1.0) and right.lo == pytest.approx(0.8389, abs=1e-4)
    assert (wrong.mean, wrong.lo) == (0.0, 0.0) and wrong.hi == pytest.approx(0.1611, abs=1e-4)
    if n_seeds > 1:  # the bootstrap would collapse to a point; Wilson over questions instead
        assert right.method == wrong.method == "wilson (bootstrap degenerate)"


def test_matrix_input_is_checked():
    with pytest.raises(ValueError, match="0/1"):
        as_matrix([[0, 2, 1]])
    with pytest.raises(ValueError, match="non-empty"):
        as_matrix(np.zeros((2, 0)))
    with pytest.raises(ValueError, match="n_boot"):
        accuracy_interval(np.ones((2, 5)), n_boot=10)


# ---------------------------------------------------------------- two-level bootstrap

def three_seeds(q=40):
    rng = np.random.default_rng(1)
    return rng.random((3, q)) < 0.6


def test_bootstrap_is_reproducible_with_its_rng_seed():
    data = three_seeds()
    a, b = accuracy_interval(data, N_BOOT, rng_seed=7), accuracy_interval(data, N_BOOT, rng_seed=7)
    other = accuracy_interval(data, N_BOOT, rng_seed=8)
    assert a == b and a.method == "bootstrap-seeds-questions"
    assert (other.lo, other.hi) != (a.lo, a.hi)
    assert a.mean == pytest.approx(data.mean()) and a.lo < a.mean < a.hi


def test_bootstrap_shrinks_with_more_questions():
    # seeds equally good (0.6) on partly different questions: no between-seed variance left
    small = np.stack([np.roll(first_k(24, 40), 5 * s) for s in range(3)])
    large = np.tile(small, 10)  # the same pattern over 10× the questions: same mean
    w_small, w_large = width(accuracy_interval(small, N_BOOT)), width(accuracy_interval(large, N_BOOT))
    assert w_large < 0.5 * w_small  # ~1/sqrt(10) ≈ 0.32


def test_identical_seeds_give_the_one_seed_width():
    # seeds that agree add no information: resampling questions independently per seed
    # would wrongly shrink this interval by ~1/sqrt(5)
    one = first_k(60, 100)
    iv = accuracy_interval(np.tile(one, (5, 1)), N_BOOT)
    lo, hi = wilson(60, 100)
    assert width(iv) == pytest.approx(hi - lo, rel=0.2)


def test_between_seed_variance_widens_the_interval():
    same = np.tile(first_k(50, 100), (3, 1))  # every seed 0.5 on the same questions
    spread = np.stack([first_k(20, 100), first_k(50, 100), first_k(80, 100)])  # 0.2, 0.5, 0.8
    iv_same, iv_spread = accuracy_interval(same, N_BOOT), accuracy_interval(spread, N_BOOT)
    assert iv_same.mean == iv_spread.mean == 0.5
    assert width(iv_spread) > 1.5 * width(iv_same)


# ---------------------------------------------------------------- paired differences

def test_paired_difference_of_identical_arrays_is_exactly_zero():
    data = three_seeds(50)
    d = paired_difference(data, data.copy(), N_BOOT)
    assert (d.mean, d.lo, d.hi, d.excludes_zero, d.p_value) == (0.0, 0.0, 0.0, False, 1.0)


def superset_pair(extra, n_q=200, n_seeds=3):
    """B right on the first 100 questions (shifted per seed), A on those plus ``extra`` more."""
    b = np.stack([np.roll(first_k(100, n_q), s) for s in range(n_seeds)])
    a = np.stack([np.roll(first_k(100 + extra, n_q), s) for s in range(n_seeds)])
    return a, b


def test_a_large_known_difference_excludes_zero():
    a, b = superset_pair(extra=30)
    d = paired_difference(a, b, N_BOOT)
    assert d.mean == pytest.approx(0.15) and d.lo > 0.05 and d.excludes_zero
    assert d.p_value < 0.01
    back = paired_difference(b, a, N_BOOT)  # the other way round: negative, mirrored
    assert back.mean == pytest.approx(-0.15) and back.hi < 0 and back.excludes_zero


def test_a_tiny_known_difference_includes_zero():
    a, b = superset_pair(extra=1)
    d = paired_difference(a, b, N_BOOT)
    assert d.mean == pytest.approx(0.005) and d.lo <= 0 <= d.hi and not d.excludes_zero


def test_pairing_removes_the_shared_question_variance():
    # A and B agree except on 20 of 200 questions: unpaired resampling (different question
    # draws for A and B) would give an interval about twice as wide (~0.19)
    a, b = superset_pair(extra=20, n_seeds=1)
    d = paired_difference(a, b, N_BOOT)
    assert width(d) < 0.12


def test_paired_difference_with_seed_resampling_sees_seed_variance():
    b = np.tile(first_k(100, 200), (3, 1))
    a = np.stack([first_k(100 + e, 200) for e in (0, 30, 60)])  # gains 0, 0.15, 0.3 by seed
    within = paired_difference(a, b, N_BOOT, resample_seeds=False)
    across = paired_difference(a, b, N_BOOT, resample_seeds=True)
    assert within.mean == across.mean == pytest.approx(0.15)
    assert width(across) > 2 * width(within)


def test_several_seeds_resample_seeds_by_default_one_seed_does_not():
    b = np.tile(first_k(100, 200), (3, 1))
    a = np.stack([first_k(100 + e, 200) for e in (0, 30, 60)])
    assert paired_difference(a, b, N_BOOT) == paired_difference(a, b, N_BOOT, resample_seeds=True)
    one_a, one_b = a[1:2], b[1:2]  # one seed: the question draws (and the interval) unchanged
    assert paired_difference(one_a, one_b, N_BOOT) == paired_difference(
        one_a, one_b, N_BOOT, resample_seeds=False)


def test_paired_difference_needs_the_same_shape():
    with pytest.raises(ValueError, match="same"):
        paired_difference(np.ones((2, 10)), np.ones((3, 10)))


# ---------------------------------------------------------------- baselines, histograms

COIN = ["yes"] * 14 + ["no"] * 6


def test_baselines_on_an_unbalanced_yes_no_set():
    maj_yes = majority_baseline(["yes", "yes", "no"], COIN)
    maj_no = majority_baseline(["no", "no", "yes"], COIN)
    best = best_constant_baseline(COIN)
    assert (maj_yes.label, maj_yes.accuracy.mean) == ("yes", pytest.approx(0.7))
    assert (maj_no.label, maj_no.accuracy.mean) == ("no", pytest.approx(0.3))
    assert (best.label, best.accuracy.mean) == ("yes", pytest.approx(0.7))
    assert (best.accuracy.lo, best.accuracy.hi) == wilson(14, 20)


def test_baselines_on_a_balanced_set_are_one_half():
    balanced = ["yes", "no"] * 10
    assert majority_baseline(["yes"] * 5 + ["no"] * 3, balanced).accuracy.mean == 0.5
    best = best_constant_baseline(balanced)
    assert best.accuracy.mean == 0.5 and best.label == "no"  # ties: first label in sorted order


def test_best_constant_is_an_upper_bound_on_choice_labels():
    test = list("AABBBCD")
    best = best_constant_baseline(test)
    assert best.label == "B" and best.accuracy.mean == pytest.approx(3 / 7)
    for label in "ABCDE":
        assert majority_baseline([label], test).accuracy.mean <= best.accuracy.mean


def test_label_histogram_counts_over_seeds_with_invalid():
    preds = [["yes", "yes", "no", "[invalid]"], ["yes", "no", "no", "no"]]
    hist = label_histogram(preds, labels=["yes", "no"])
    assert hist == {"no": 4, "yes": 3, "[invalid]": 1}
    assert list(hist) == ["no", "yes", "[invalid]"]
    assert label_histogram([["A", "A"]], labels="ABC") == {"A": 2, "B": 0, "C": 0, "[invalid]": 0}


# ---------------------------------------------------------------- rows -> aligned arrays

def row(qid, task, gold, pred, answer_type="yes-no", strict=None):
    strict = pred if strict is None else strict
    return {"id": qid, "task": task, "answer": gold, "answer_type": answer_type,
            "pred_flexible": pred, "pred_strict": strict,
            "correct_flexible": pred == gold, "correct_strict": strict == gold}


def seed_rows(preds_coin, preds_num):
    rows = [row(f"c{i}", "coin", g, p) for i, (g, p) in enumerate(zip("yyn", preds_coin))]
    rows += [row(f"n{i}", "num", g, p, "number") for i, (g, p) in enumerate(zip(["1", "2"], preds_num))]
    return rows


def test_aligned_by_task_sorts_ids_and_stacks_seeds():
    s0 = list(reversed(seed_rows("yny", ["1", "2"])))  # row order must not matter
    s1 = seed_rows("yyn", ["3", "2"])
    s1[-1]["pred_strict"], s1[-1]["correct_strict"] = "[invalid]", False  # n1 strictly unparsed
    arrays = aligned_by_task({1: s1, 0: s0})
    coin, num = arrays["coin"], arrays["num"]
    assert coin.seeds == (0, 1) and coin.ids == ("c0", "c1", "c2") and coin.answers == tuple("yyn")
    assert coin.correct.tolist() == [[True, False, False], [True, True, True]]
    assert coin.preds.tolist() == [list("yny"), list("yyn")]
    assert coin.is_label_task and not num.is_label_task
    assert num.correct.tolist() == [[True, True], [False, True]]
    strict = aligned_by_task({0: s0, 1: s1}, score="strict")["num"]
    assert strict.correct.tolist() == [[True, True], [False, False]]


def test_aligned_by_task_refuses_different_questions():
    s0, s1 = seed_rows("yny", ["1", "2"]), seed_rows("yyn", ["1", "2"])
    s1[0]["id"] = "c9"
    with pytest.raises(ValueError, match=r"different question ids of task 'coin'.*c0.*c9"):
        aligned_by_task({0: s0, 1: s1})
    with pytest.raises(ValueError, match="different tasks"):
        aligned_by_task({0: s0, 1: [r for r in s0 if r["task"] == "coin"]})
    with pytest.raises(ValueError, match="appears twice"):
        aligned_by_task({0: s0 + s0[:1]})
    changed = seed_rows("yny", ["1", "2"])
    changed[0]["answer"] = "n"
    with pytest.raises(ValueError, match="gold answer differs"):
        aligned_by_task({0: s0, 1: changed})
    with pytest.raises(ValueError, match="score"):
        aligned_by_task({0: s0}, score="loose")


def test_check_aligned_between_methods():
    a = aligned_by_task({0: seed_rows("yny", ["1", "2"])})["coin"]
    b = aligned_by_task({1: seed_rows("yny", ["1", "2"])})["coin"]
    check_aligned(a, a)
    assert aligned_by_task({10: seed_rows("yny", ["1", "2"]), 2: seed_rows("yny", ["1", "2"])})["coin"].seeds == (2, 10)
    with pytest.raises(ValueError, match="seeds"):
        check_aligned(a, b)
