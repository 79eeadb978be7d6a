"""The report's headline: paired differences said to resolve only where their interval
excludes zero, the cost ratio against pre-thinking, and the validation split."""

from __future__ import annotations

import pytest

from pst_distill.report import tables as rt
from pst_distill.report.headline import accuracy_lines, cost_lines, cost_ratio, headline
from pst_distill.tasks import split_records


def rows(method, task, answers, correct, tokens, seed=1):
    return [{"id": f"{task}-{i}", "task": task, "answer": a, "answer_type": "text",
             "pred_flexible": a if c else "x", "pred_strict": a if c else "x",
             "correct_flexible": c, "correct_strict": c, "generated_tokens": tokens,
             "seconds": tokens / 100, "method": method, "seed": seed}
            for i, (a, c) in enumerate(zip(answers, correct))]


def predictions(pre_right: int, n: int = 60) -> dict:
    answers = [f"a{i}" for i in range(n)]
    return {"answer_only": {1: rows("answer_only", "t", answers, [False] * n, 4)},
            "pre_thinking": {1: rows("pre_thinking", "t", answers,
                                     [i < pre_right for i in range(n)], 40)},
            "pst": {1: rows("pst", "t", answers, [False] * n, 10)}}


def test_a_large_difference_resolves_and_a_null_one_does_not():
    arrays = rt.build_arrays(predictions(pre_right=30))
    lines = accuracy_lines(arrays, 500, 0)
    resolved = [ln for ln in lines if ln.startswith("- **Resolved**")]
    assert len(resolved) == 2  # pre_thinking − answer_only on t and overall
    assert all("pre_thinking above answer_only" in ln and "0.50 against 0.00" in ln
               for ln in resolved)
    assert not any("pst" in ln for ln in resolved)  # pst − answer_only is 0 − 0

    arrays = rt.build_arrays(predictions(pre_right=0))
    assert accuracy_lines(arrays, 500, 0)[0].startswith("- **No accuracy difference resolves**")


def test_cost_ratio_pairs_questions_and_seeds():
    p = predictions(pre_right=0)
    ratio, lo, hi = cost_ratio(p["pst"], p["pre_thinking"], "generated_tokens", 200, 0)
    assert ratio == pytest.approx(0.25) and lo == pytest.approx(0.25) and hi == pytest.approx(0.25)
    p["pst"][2] = rows("pst", "t", [f"a{i}" for i in range(60)], [False] * 60, 10, seed=2)
    with pytest.raises(ValueError, match="no questions in common"):
        cost_ratio({2: p["pst"][2]}, p["pre_thinking"], "generated_tokens", 200, 0)


def test_latency_ratio_pairs_only_the_questions_timed_alone_in_both():
    p = predictions(pre_right=0)
    for i, r in enumerate(p["pre_thinking"][1][:10]):
        r["latency_seconds"] = 2.0 + i % 2
    for r in p["pst"][1][:20]:  # pst timed 20 questions; only the 10 pre_thinking timed pair
        r["latency_seconds"] = 0.25
    ratio, lo, hi = cost_ratio(p["pst"], p["pre_thinking"], "latency_seconds", 500, 0)
    assert ratio == pytest.approx(2.5 / 25) and lo < ratio < hi
    text = "\n".join(cost_lines(p, 500, 0))
    assert "0.10 [" in text and "(10 questions timed one at a time)" in text
    del p["pst"][1][0]["latency_seconds"], p["pst"][1][1]["latency_seconds"]
    assert "(8 questions timed one at a time)" in "\n".join(cost_lines(p, 500, 0))
    # no question timed alone in pre_thinking's run: no latency share is claimed
    for r in p["pre_thinking"][1]:
        r.pop("latency_seconds", None)
    text = "\n".join(cost_lines(p, 500, 0))
    assert "asked alone" not in text and "0.25 [0.25, 0.25] of pre_thinking's generated" in text


def test_headline_names_the_validation_split():
    p = predictions(pre_right=30)
    arrays = rt.build_arrays(p)
    summary = {"baselines": {rt.OVERALL: {"best_constant": 0.1}},
               "methods": {m: {"accuracy": {rt.OVERALL: {"lo": lo}}}
                           for m, lo in (("answer_only", 0.0), ("pre_thinking", 0.37), ("pst", 0.0))}}
    text = headline(arrays, p, summary, "validation", 200, 0, [1])
    assert text.startswith("## In short") and "**validation** split" in text
    assert "Above the best constant answer overall (0.100, interval excluded): pre_thinking." in text
    assert "pst answers first and stops after the answer: 0.25 [0.25, 0.25]" in text


def test_validation_split_comes_from_the_training_questions_only():
    records = [{"id": f"{i:04x}"} for i in range(2000)]
    train, test = split_records(records, 0.2)
    vtrain, val = split_records(records, 0.2, "validation", 0.25)
    assert {r["id"] for r in vtrain} | {r["id"] for r in val} == {r["id"] for r in train}
    assert not {r["id"] for r in val} & {r["id"] for r in test}
    assert not {r["id"] for r in vtrain} & {r["id"] for r in val}
    assert 0.2 < len(val) / len(train) < 0.3 and all(r["split"] == "validation" for r in val)
