"""The adaptive student in the report (2 seeds × 2 tasks, pre_thinking, answer_only and one
adaptive file per seed with 4 routers, the oracle and 3 confidence sweep points): rows are
regrouped into methods; the oracle and the sweep stay out of the main tables and
summary["methods"]; think shares, the sweep's order, a point's accuracy and the plot."""

import json

import pytest

from pst_distill.config.report import ReportConfig
from pst_distill.report.frontier import ORACLE_LABEL, frontier_points, kind_of, split_analysis, think_share_table, think_shares
from pst_distill.report.plots import plot_frontier
from pst_distill.io import write_jsonl, write_text
from pst_distill.report.build import Inputs, Outputs, build_report, load_predictions, regroup
from pst_distill.report.tables import build_arrays, comparison_pairs, method_order, overall_correct

GOLD = {"coin_flip": ["yes", "no", "yes", "no"], "arith": ["1", "2", "3", "4"]}
TYPE = {"coin_flip": "yes-no", "arith": "number"}
CONF = {"coin_flip": [0.9, 0.8, 0.4, 0.1], "arith": [0.6, 0.3, 0.2, 0.45]}  # fast answer's
FAST_TOKENS, THINK_TOKENS = 2, 10
ROUTERS = ["adaptive:always_fast", "adaptive:always_think", "adaptive:confidence",
           "adaptive:perception"]
CFG = ReportConfig(n_boot=200, smooth=1)


def fast_right(task, i, seed):
    """Fast mode: coin flips 0-1 right (seed 2: only 0), arithmetic 0 right."""
    return i < (2 if seed == 1 else 1) if task == "coin_flip" else i == 0


def think_right(task, i, seed):
    """Think mode: every coin flip, arithmetic 0-2."""
    return task == "coin_flip" or i < 3


THINK_WHEN = {  # router -> does question (task, i) of seed go to thinking?
    "always_fast": lambda t, i, s: False,
    "always_think": lambda t, i, s: True,
    "confidence": lambda t, i, s: CONF[t][i] < 0.5,
    "perception": lambda t, i, s: (t, i) in {("coin_flip", 3), ("arith", 1), ("arith", 2)},
    "oracle": lambda t, i, s: think_right(t, i, s) and not fast_right(t, i, s),
    **{f"confidence@{tau:.2f}": (lambda tau: lambda t, i, s: CONF[t][i] < tau)(tau)
       for tau in (0.75, 0.25, 0.5)},  # written out of order: the report sorts by tokens
}


def row(method, task, i, seed, right, tokens, **extra):
    gold = GOLD[task][i]
    pred = gold if right else ("[invalid]" if task == "arith" else "maybe")
    return {"id": f"{task}-{i}", "task": task, "method": method, "answer": gold,
            "answer_type": TYPE[task], "completion": "", "pred_strict": pred, "pred_flexible": pred,
            "correct_strict": right, "correct_flexible": right, "generated_tokens": tokens,
            "finish_reason": "stop", "seconds": tokens / 100, "seed": seed, **extra}


def questions():
    return [(t, i) for t in GOLD for i in range(len(GOLD[t]))]


def routed(router, seed):
    """Rows of one router: the chosen mode's answer, the whole route's tokens."""
    out = []
    for t, i in questions():
        think = THINK_WHEN[router](t, i, seed)
        falls_back = router.startswith("confidence")
        tokens = (FAST_TOKENS + THINK_TOKENS if falls_back else THINK_TOKENS) if think else FAST_TOKENS
        right = think_right(t, i, seed) if think else fast_right(t, i, seed)
        out.append(row(f"adaptive:{router}", t, i, seed, right, tokens,
                       mode="think" if think else "fast", confidence=CONF[t][i],
                       think_prob=0.5 if router == "perception" else None,
                       tau=float(router.partition("@")[2]) if "@" in router else None))
    return out


def fixed(method, seed):
    right = think_right if method == "pre_thinking" else fast_right
    tokens = THINK_TOKENS if method == "pre_thinking" else FAST_TOKENS
    return [row(method, t, i, seed, right(t, i, seed), tokens) for t, i in questions()]


def make_tree(tmp_path, adaptive=True):
    for seed in (1, 2):
        for method in ("pre_thinking", "answer_only"):
            write_jsonl(tmp_path / "pred" / f"{method}-{seed}.jsonl", fixed(method, seed))
        if adaptive:
            write_jsonl(tmp_path / "pred" / f"adaptive-{seed}.jsonl",
                        [r for router in THINK_WHEN for r in routed(router, seed)])
    write_jsonl(tmp_path / "train.jsonl", [{"id": f"t{t}{i}", "task": t, "answer": a}
                                           for t in GOLD for i, a in enumerate(GOLD[t])])
    write_text(tmp_path / "curves" / "pre_thinking-1.tsv", "step\tloss\n1\t2.0\n2\t1.0\n")
    inputs = Inputs(tmp_path / "pred", tmp_path / "train.jsonl", tmp_path / "train.jsonl",
                    tmp_path / "train_metrics", tmp_path / "curves")
    outputs = Outputs(*(tmp_path / "r" / n for n in ("report.md", "summary.json", "accuracy.png",
                                                     "loss.png", "frontier.png")))
    return inputs, outputs


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    inputs, outputs = make_tree(tmp_path_factory.mktemp("adaptive"))
    summary = build_report(inputs, outputs, CFG)
    return inputs, outputs, summary


def test_rows_are_regrouped_by_their_method_in_report_order(built):
    inputs, _, _ = built
    predictions, notes, _ = load_predictions(inputs.predictions)
    sweep = ["adaptive:confidence@0.25", "adaptive:confidence@0.50", "adaptive:confidence@0.75"]
    assert list(predictions) == ["answer_only", "pre_thinking", *ROUTERS, *sweep, "adaptive:oracle"]
    assert not notes and all(list(by_seed) == [1, 2] for by_seed in predictions.values())
    assert {r["method"] for r in predictions["adaptive:perception"][2]} == {"adaptive:perception"}
    assert len(predictions["adaptive:oracle"][1]) == 8
    # rows naming the file's own method (or none) stay with it
    assert set(regroup("adaptive", [{"method": "adaptive"}, {}, {"method": "adaptive:x"}])) == {
        "adaptive", "adaptive:x"}


def test_oracle_and_sweep_are_not_methods(built):
    _, outputs, summary = built
    assert list(summary["methods"]) == ["answer_only", "pre_thinking", *ROUTERS]
    assert json.loads(outputs.summary.read_text())["methods"].keys() == summary["methods"].keys()
    md = outputs.markdown.read_text()
    main, frontier = md.split("## Adaptive thinking: accuracy against generated tokens")
    assert "oracle" not in main and "@" not in main
    assert "| adaptive:confidence | " in main  # accuracy and cost tables
    assert f"| {ORACLE_LABEL} | – |" in frontier and "| adaptive:confidence@0.25 | 0.25 |" in frontier
    assert "](frontier.png)" in frontier


def test_paired_differences_compare_routers_with_fixed_orders(built):
    md = built[1].markdown.read_text()
    for pair in ("adaptive:confidence − pre_thinking", "adaptive:confidence − answer_only",
                 "adaptive:perception − pre_thinking", "adaptive:perception − answer_only"):
        assert f"| {pair} |" in md
    assert comparison_pairs(["pst", "answer_only", "adaptive:confidence"]) == [
        ("pst", "answer_only"), ("adaptive:confidence", "answer_only")]


def test_think_shares_in_summary_and_table(built):
    _, outputs, summary = built
    shares = {m: summary["methods"][m].get("think_share") for m in summary["methods"]}
    assert shares == {"answer_only": None, "pre_thinking": None, "adaptive:always_fast": 0.0,
                      "adaptive:always_think": 1.0, "adaptive:confidence": 0.625,
                      "adaptive:perception": 0.375}
    assert "think_share" not in summary["methods"]["answer_only"]
    md = outputs.markdown.read_text()
    header = "| router | think share arith | think share coin_flip | think share overall | accuracy | tokens/q |"
    assert header in md
    assert "| adaptive:confidence | 0.750 | 0.500 | 0.625 |" in md
    # oracle: coin 2-3 (seed 1) / 1-3 (seed 2), arith 1-2 -> coin 5/8, arith 4/8
    assert f"| {ORACLE_LABEL} | 0.500 | 0.625 | 0.562 |" in md


def test_think_shares_of_constructed_rows():
    rows = {1: [{"task": "a", "mode": "think"}, {"task": "a", "mode": "fast"},
                {"task": "b", "mode": "fast"}],
            2: [{"task": "a", "mode": "think"}, {"task": "a", "mode": "think"},
                {"task": "b", "mode": "think"}]}
    assert think_shares(rows) == {"a": 0.75, "b": 0.5, "overall": 4 / 6}
    assert think_shares({1: [{"task": "a"}]}) is None
    with pytest.raises(ValueError, match="mode"):
        think_shares({1: [{"task": "a", "mode": "slow", "method": "adaptive:x"}]})


def test_sweep_sorted_by_tokens_and_oracle_in_summary(built):
    frontier = built[2]["frontier"]
    sweep = frontier["confidence_sweep"]
    assert [p["tau"] for p in sweep] == [0.25, 0.5, 0.75]
    assert [p["think_share"] for p in sweep] == [0.25, 0.625, 0.75]
    tokens = [p["tokens_per_question"] for p in sweep]
    assert tokens == sorted(tokens) and tokens[0] == FAST_TOKENS + 0.25 * THINK_TOKENS
    # oracle: right wherever either mode is (coin all, arith 0-2): 14 of 16; thinks on 9 of 16
    assert frontier["oracle"] == {"accuracy": 0.875, "think_share": 0.5625,
                                  "tokens_per_question": round(2 + 0.5625 * 8, 4)}


def test_a_point_is_the_hand_computed_mean(built):
    inputs, _, _ = built
    predictions, _, _ = load_predictions(inputs.predictions)
    points = {p.method: p for p in frontier_points(build_arrays(predictions), predictions, 200)}
    # confidence router over 2 seeds: coin 0-1 fast (right 2 + 1), 2-3 think (right 4);
    # arith 0 fast (right 2), 1-3 think (right on 1-2: 4) -> 13 of 16
    conf = points["adaptive:confidence"]
    assert conf.accuracy.mean == 13 / 16 and conf.kind == "router"
    assert conf.accuracy.lo < 13 / 16 < conf.accuracy.hi
    assert conf.tokens_per_question == FAST_TOKENS + 0.625 * THINK_TOKENS
    assert points["answer_only"].accuracy.mean == 5 / 16 and points["answer_only"].think_share is None
    assert points["adaptive:oracle"].kind == "oracle" and kind_of("adaptive:confidence@0.5") == "sweep"
    order = [p.kind for p in points.values()]
    assert order == ["method"] * 2 + ["router"] * 4 + ["sweep"] * 3 + ["oracle"]
    arrays = build_arrays(split_analysis(predictions)[0])
    assert overall_correct(arrays["adaptive:confidence"]).sum() == 13


def test_frontier_plot_is_a_png(built):
    png = built[1].frontier_plot
    assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000
    assert not list(png.parent.glob("*.tmp.png"))


def test_without_adaptive_rows_the_plot_still_exists(tmp_path):
    inputs, outputs = make_tree(tmp_path, adaptive=False)
    summary = build_report(inputs, outputs, CFG)
    assert list(summary["methods"]) == ["answer_only", "pre_thinking"]
    assert summary["frontier"] == {"confidence_sweep": [], "oracle": None}
    assert outputs.frontier_plot.read_bytes()[:4] == b"\x89PNG"
    md = outputs.markdown.read_text()
    assert "No adaptive predictions" in md and "adaptive:" not in md


def test_method_order_and_a_table_without_routers(tmp_path):
    names = ["adaptive:oracle", "adaptive:perception", "pst", "adaptive:always_think", "zzz",
             "adaptive:confidence", "adaptive:always_fast", "answer_only"]
    assert sorted(names, key=method_order) == [
        "answer_only", "pst", "adaptive:always_fast", "adaptive:always_think",
        "adaptive:confidence", "adaptive:perception", "adaptive:oracle", "zzz"]
    assert think_share_table({}, []) == "_no adaptive routers_"
    plot_frontier([], tmp_path / "empty.png")  # nothing to draw is still a plot
    assert (tmp_path / "empty.png").stat().st_size > 0


def test_target_line_says_whether_a_router_matches_pre_thinking_at_a_third_of_its_tokens():
    from pst_distill.report.frontier import Point, target_line
    from pst_distill.report.stats import Interval

    def point(method, kind, acc, tokens):
        return Point(method, kind, Interval(acc, acc - 0.1, acc + 0.1, 2, 20, "bootstrap"), tokens, 0.1,
                     None)

    pre = point("pre_thinking", "method", 0.6, 60.0)
    cheap = point("adaptive:confidence", "router", 0.55, 15.0)
    dear = point("adaptive:perception", "router", 0.7, 61.0)
    line = target_line([pre, cheap, dear])
    assert "not met**, short by 0.050" in line and "adaptive:confidence" in line and "0.25×" in line
    assert "**met**: the best router within it, adaptive:perception" in target_line(
        [pre, cheap, point("adaptive:perception", "router", 0.6, 19.0)])
    assert "no router stays within" in target_line([pre, dear])
    fast = point("adaptive:always_fast", "router", 0.65, 5.0)  # an end, not a choosing router
    line = target_line([pre, cheap, fast])
    assert "adaptive:confidence" in line and "vacuous here" in line
    assert "not measured" in target_line([cheap])
