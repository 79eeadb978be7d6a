"""The report from prediction files on disk (2 methods × 2 seeds × 2 tasks): summary.json
(intervals that contain their mean, baselines, cost), the markdown sections, the training
table read from metrics and curves, both plots; one seed, a missing method, a seed missing
for one method, and files not named <method>-<seed> are handled."""

import json

import pytest

from pst_distill.config.report import ReportConfig
from pst_distill.io import write_json, write_jsonl, write_text
from pst_distill.report.build import Inputs, Outputs, build_report, parse_run
from pst_distill.config.sections import parse
from pst_distill.report.plots import mean_curve, moving_average
from pst_distill.train.metrics import LOGGED, run_metrics, split_metrics
from pst_distill.train.state import RunState

COIN = ["yes"] * 6 + ["no"] * 4  # test gold: best constant "yes" = 0.6
TRAIN_COIN = ["yes"] * 3 + ["no"] * 7  # majority of train "no": 0.4 on the test
ARITH = [str(i) for i in range(1, 9)]  # 8 distinct numbers: every constant gets 1/8
TRAIN_ARITH = ["1", "1", "2"]  # majority "1": 1/8 on the test


def row(task, i, gold, answer_type, pred, seed, tokens, seconds):
    return {"id": f"{task[:4]}{i:02d}", "task": task, "answer": gold, "answer_type": answer_type,
            "pred_flexible": pred, "pred_strict": pred, "correct_flexible": pred == gold,
            "correct_strict": pred == gold, "generated_tokens": tokens, "seconds": seconds,
            "finish_reason": "stop", "seed": seed}


def pst_rows(seed):
    # seed 1: every coin flip right; seed 2: the last two wrong. Arithmetic: first half right
    coin = [g if seed == 1 or i < 8 else ("no" if g == "yes" else "yes") for i, g in enumerate(COIN)]
    arith = [g if i < 4 else "0" for i, g in enumerate(ARITH)]
    return ([row("coin_flip", i, g, "yes-no", p, seed, 4, 0.1) for i, (g, p) in enumerate(zip(COIN, coin))]
            + [row("multistep_arithmetic", i, g, "number", p, seed, 4, 0.1)
               for i, (g, p) in enumerate(zip(ARITH, arith))])


def answer_only_rows(seed):
    # always "yes" (right on 6 of 10); arithmetic never parsed
    return ([row("coin_flip", i, g, "yes-no", "yes", seed, 2, 0.05) for i, g in enumerate(COIN)]
            + [row("multistep_arithmetic", i, g, "number", "[invalid]", seed, 2, 0.05)
               for i, g in enumerate(ARITH)])


ROWS = {"pst": pst_rows, "answer_only": answer_only_rows}


def train_metrics(seed: int, tokens_per_s: float) -> dict:
    """What train_student declares for a 2-step pst run, made by the trainer's own functions
    (so the report reads the keys the trainer writes: a renamed key fails here)."""
    settings = parse("train", {"methods": {"pst": {}}}).methods["pst"]
    curve = [{"step": step, **dict.fromkeys(LOGGED, 0.0), "loss": loss, "ce_answer": ce,
              "grad_norm": 1.0, "lr": 0.1, "tokens": 32 * step}
             for step, loss, ce in ((1, 3.0, 2.0), (2, float(seed), seed / 2))]
    run = RunState(step=2, tokens=64, sequences=64, questions=64,
                   loop_seconds=64 / tokens_per_s, curve=curve)
    metrics = run_metrics(run, settings, "pst", 0, {}, 1.0)
    metrics.update(epochs=0.5)  # as the loop adds it
    return split_metrics({**metrics, "seed": seed})[0]


def make_tree(tmp_path, runs):
    """The report's inputs on disk for ``runs`` = [(method, seed)]; returns (Inputs, Outputs)."""
    for method, seed in runs:
        write_jsonl(tmp_path / "pred" / f"{method}-{seed}.jsonl", ROWS[method](seed))
    write_jsonl(tmp_path / "train.jsonl",
                [{"id": f"t{i}", "task": "coin_flip", "answer": a} for i, a in enumerate(TRAIN_COIN)]
                + [{"id": f"a{i}", "task": "multistep_arithmetic", "answer": a}
                   for i, a in enumerate(TRAIN_ARITH)])
    write_jsonl(tmp_path / "test.jsonl",
                [{"id": f"c{i}", "task": "coin_flip", "answer": a} for i, a in enumerate(COIN + ["yes"] * 5)]
                + [{"id": f"m{i}", "task": "multistep_arithmetic", "answer": a} for i, a in enumerate(ARITH)])
    for seed, tps in ((1, 100.0), (2, 200.0)):
        write_json(tmp_path / "train" / f"pst-{seed}.json", train_metrics(seed, tps))
        write_text(tmp_path / "curves" / f"pst-{seed}.tsv",
                   f"step\tloss\tce_answer\tlr\n1\t3.0\t2.0\t0.1\n2\t{seed}.0\t{seed / 2}\t0.1\n")
    inputs = Inputs(tmp_path / "pred", tmp_path / "train.jsonl", tmp_path / "test.jsonl",
                    tmp_path / "train", tmp_path / "curves")
    outputs = Outputs(tmp_path / "r" / "report.md", tmp_path / "r" / "summary.json",
                      tmp_path / "r" / "accuracy.png", tmp_path / "r" / "loss.png")
    return inputs, outputs


CFG = ReportConfig(n_boot=300, smooth=1)
BOTH = [("pst", 1), ("pst", 2), ("answer_only", 1), ("answer_only", 2)]


@pytest.fixture(scope="module")
def full(tmp_path_factory):
    inputs, outputs = make_tree(tmp_path_factory.mktemp("full"), BOTH)
    build_report(inputs, outputs, CFG)
    return outputs


def test_summary_json_intervals_baselines_and_cost(full):
    summary = json.loads(full.summary.read_text())
    assert list(summary["methods"]) == ["answer_only", "pst"]  # METHODS order
    for method, m in summary["methods"].items():
        assert set(m) == {"accuracy", "tokens_per_question", "seconds_per_question", "invalid_share"}
        assert set(m["accuracy"]) == {"coin_flip", "multistep_arithmetic", "overall"}
        for acc in m["accuracy"].values():
            assert set(acc) == {"mean", "lo", "hi", "n_seeds"} and acc["n_seeds"] == 2
            assert acc["lo"] <= acc["mean"] <= acc["hi"]
    pst, ao = summary["methods"]["pst"], summary["methods"]["answer_only"]
    assert pst["accuracy"]["coin_flip"]["mean"] == 0.9  # (10 + 8) / 20
    assert pst["accuracy"]["multistep_arithmetic"]["mean"] == 0.5
    assert pst["accuracy"]["overall"]["mean"] == round((18 + 8) / 36, 4)
    assert pst["accuracy"]["coin_flip"]["lo"] < 0.9 < pst["accuracy"]["coin_flip"]["hi"]
    assert ao["accuracy"]["coin_flip"]["mean"] == 0.6 and ao["accuracy"]["multistep_arithmetic"]["mean"] == 0.0
    assert (pst["tokens_per_question"], pst["seconds_per_question"]) == (4.0, 0.1)
    assert (ao["tokens_per_question"], ao["invalid_share"]) == (2.0, round(16 / 36, 4))
    assert summary["baselines"] == {
        "coin_flip": {"majority": 0.4, "best_constant": 0.6},
        "multistep_arithmetic": {"majority": 0.125, "best_constant": 0.125},
        "overall": {"majority": round(5 / 18, 4), "best_constant": round(7 / 18, 4)}}


def test_markdown_sections_and_tables(full):
    md = full.markdown.read_text()
    for heading in ("## Evaluation set", "## Accuracy (flexible extraction) with 95% intervals",
                    "## Constant baselines", "## Paired differences", "## Predicted labels",
                    "## Generation cost", "## Training", "## Plots"):
        assert heading in md, heading
    assert "training seeds: 1, 2" in md
    # evaluation set: 10 of the 15 coin flips of the split evaluated, their labels
    assert "| coin_flip | yes-no | 15 | 10 | no 4, yes 6 | no 4, yes 11 |" in md
    assert "| multistep_arithmetic | number | 8 | 8 | – | – |" in md
    assert "| majority of train | 0.400 [" in md and "(no) |" in md and "(yes) |" in md
    assert "| pst − answer_only |" in md
    # no question timed alone in these predictions: "–" in the s/q (alone) column
    assert "| answer_only | 2 | 2.0 | 0.050 | – | 0.444 |" in md and "| pst | 2 | 4.0 | 0.100 | – | 0.000 |" in md
    # training: means over the two seeds of the trainer's final parts (the mean of each
    # run's last steps: (3 + seed) / 2 and (2 + seed / 2) / 2), throughput and data seen
    assert ("| method | seeds | final loss | final ce_answer | final ce_rationale | "
            "final ce_sem_token | final ce_think | final sem | tokens/s | questions seen | "
            "sequences seen | epochs |") in md
    assert "| pst | 2 | 2.2500 | 1.3750 | 0.0000 | 0.0000 | 0.0000 | 0.0000 | 150 | 64 | 64 | 0.50 |" in md
    assert "](accuracy.png)" in md and "](loss.png)" in md


def test_plots_written(full):
    for png in (full.accuracy_plot, full.loss_plot):
        assert png.read_bytes()[:4] == b"\x89PNG" and png.stat().st_size > 1000


def test_one_seed_and_a_missing_method(tmp_path):
    inputs, outputs = make_tree(tmp_path, [("pst", 1)])
    summary = build_report(inputs, outputs, CFG)
    assert list(summary["methods"]) == ["pst"]
    acc = summary["methods"]["pst"]["accuracy"]["coin_flip"]
    assert acc["n_seeds"] == 1 and acc["mean"] == 1.0 and acc["lo"] < 1.0 == acc["hi"]  # Wilson
    md = outputs.markdown.read_text()
    assert "_no pair of methods to compare_" in md and "training seeds: 1." in md


def test_a_seed_missing_for_one_method_is_left_out_and_said(tmp_path):
    inputs, outputs = make_tree(tmp_path, [("pst", 1), ("pst", 2), ("answer_only", 1)])
    (tmp_path / "pred" / "pst.jsonl").write_text("not json\n")  # a file of a run without seeds
    summary = build_report(inputs, outputs, CFG)
    assert {m["accuracy"]["overall"]["n_seeds"] for m in summary["methods"].values()} == {1}
    assert "pst: seed(s) [2] left out (not evaluated for every method)" in outputs.markdown.read_text()


def test_no_predictions_is_a_clear_error(tmp_path):
    inputs, outputs = make_tree(tmp_path, [])
    with pytest.raises(FileNotFoundError, match="predictions"):
        build_report(inputs, outputs, CFG)


def test_parse_run_names():
    assert parse_run("post_thinking-42") == ("post_thinking", 42)
    assert parse_run("pst-a") == ("pst", "a")
    assert parse_run("pst") is None and parse_run("-3") is None


def test_training_metrics_without_a_compared_key_are_an_error(tmp_path):
    inputs, outputs = make_tree(tmp_path, BOTH)
    metrics = json.loads((tmp_path / "train" / "pst-2.json").read_text())
    del metrics["tokens_per_s"]
    write_json(tmp_path / "train" / "pst-2.json", metrics)
    with pytest.raises(ValueError, match=r"pst-2.json: training metrics lack tokens_per_s"):
        build_report(inputs, outputs, CFG)


def test_mean_curve_over_seeds_and_moving_average():
    steps, mean, lo, hi = mean_curve({1: [{"step": 1, "loss": 2.0}, {"step": 2, "loss": 1.0}],
                                      2: [{"step": 1, "loss": 4.0}]})
    assert (steps, mean, lo, hi) == ([1, 2], [3.0, 1.0], [2.0, 1.0], [4.0, 1.0])
    assert moving_average([1.0, 3.0, 5.0, 7.0], 2) == [1.0, 2.0, 4.0, 6.0]
