"""The adaptive routers' decisions and costs on constructed per-question results."""

from __future__ import annotations

import numpy as np
import pytest
import torch

from pst_distill.config.adaptive import AdaptiveConfig, PerceptionRouter
from pst_distill.evaluate.routing import (ORACLE, choose_tau, fit_perception, fit_routers,
                                         oracle_decisions, route, route_rows, routed_predictions)
from pst_distill.io import encode_f32
from pst_distill.scoring import by_task, figures


def _row(i: int, ok: bool, tokens: int, seconds: float, task: str = "t", conf: float = 0.5) -> dict:
    return {"id": f"q{i}", "task": task, "method": "adaptive", "answer": "1", "answer_type": "numeric",
            "completion": "", "pred_strict": "1" if ok else "2", "pred_flexible": "1" if ok else "2",
            "correct_strict": ok, "correct_flexible": ok, "generated_tokens": tokens,
            "finish_reason": "eos", "seconds": seconds, "confidence_mean_prob": conf,
            "confidence_margin": conf / 2}


def _modes(fast_ok, think_ok, conf, features=None, tasks=None) -> dict:
    n = len(fast_ok)
    tasks = tasks or ["t"] * n
    return {"fast": [_row(i, fast_ok[i], 5, 0.1, tasks[i], conf[i]) for i in range(n)],
            "think": [_row(i, think_ok[i], 60, 1.0, tasks[i]) for i in range(n)],
            "features": torch.zeros(n, 3) if features is None else features,
            "feature_seconds": 0.01}


def test_confidence_router_thinks_only_on_an_unsure_fast_answer():
    # q0: the fast answer is confident (and right); q1: unsure (wrong), thinking gets it right
    modes = _modes([True, False], [True, True], [0.9, 0.2])
    conf = np.array([0.9, 0.2])
    rows = route(modes, conf < 0.5, "confidence", conf, tau=0.5)
    assert [r["mode"] for r in rows] == ["fast", "think"]
    assert [r["correct_flexible"] for r in rows] == [True, True]
    # the unsure question paid for the discarded fast answer and for the thinking
    assert [r["generated_tokens"] for r in rows] == [5, 65]
    assert rows[1]["seconds"] == pytest.approx(1.1)
    assert all(r["method"] == "adaptive:confidence" and r["tau"] == 0.5 for r in rows)
    assert not any(k.startswith("confidence_") for k in rows[0])


def test_perception_pays_for_the_chosen_mode_and_its_forward_pass():
    modes = _modes([True, False], [True, True], [0.9, 0.2])
    rows = route(modes, np.array([False, True]), "perception", np.array([0.9, 0.2]),
                 np.array([0.1, 0.8]))
    assert [r["generated_tokens"] for r in rows] == [5, 60]
    assert [r["seconds"] for r in rows] == [pytest.approx(0.11), pytest.approx(1.01)]
    assert [r["think_prob"] for r in rows] == [0.1, 0.8]


def test_oracle_thinks_only_where_it_changes_the_outcome():
    fast = np.array([True, False, False, True])
    think = np.array([True, True, False, False])
    assert oracle_decisions(fast, think).tolist() == [False, True, False, False]


def test_choose_tau_trades_accuracy_against_think_share():
    conf = np.array([0.9, 0.8, 0.3, 0.2])
    fast_ok = np.array([True, True, False, False])
    think_ok = np.array([True, True, True, False])
    # τ 0.5 thinks on q2 and q3: accuracy 0.75 for a think share of 0.5
    assert choose_tau(conf, fast_ok, think_ok, [0.0, 0.5, 1.0], 0.1)[0] == 0.5
    # thinking costs more than the accuracy it buys: never think
    assert choose_tau(conf, fast_ok, think_ok, [0.0, 0.5, 1.0], 1.0)[0] == 0.0
    # a tie goes to the τ that thinks less
    assert choose_tau(conf, fast_ok, fast_ok, [0.0, 0.5], 0.0)[0] == 0.0


def test_perception_learns_a_separable_rule_and_never_thinks_without_positives():
    gen = torch.Generator().manual_seed(0)
    x = torch.randn(40, 8, generator=gen)
    y = (x[:, 0] > 0.5).numpy()  # thinking pays where feature 0 is large
    model, info = fit_perception(x, y, PerceptionRouter(epochs=200), seed=0)
    assert info["train_accuracy"] >= 0.95 and info["thinking_pays"] == int(y.sum())
    x_new = torch.zeros(2, 8)
    x_new[0, 0], x_new[1, 0] = 3.0, -3.0
    p = torch.sigmoid(model(x_new))
    assert p[0] > 0.5 > p[1]
    none, info = fit_perception(x, np.zeros(40, bool), PerceptionRouter(), seed=0)
    assert none is None and info["thinking_pays"] == 0


def test_routed_predictions_cover_every_router_and_sweep_point():
    cfg = AdaptiveConfig(confidence={"sweep": [0.0, 0.5, 1.0]}, perception={"epochs": 5})
    held = _modes([True, False, True, False], [True, True, False, True], [0.9, 0.1, 0.8, 0.2],
                  torch.tensor([[1.0, 0, 0], [-1, 0, 0], [1, 0, 0], [-1, 0, 0]]))
    fitted, info = fit_routers(held, cfg, seed=0)
    assert info["tau"] == 0.5 and info["tau_chosen_on_held_out"] and info["held_out"] == 4
    test = _modes([True, False, False], [False, True, True], [0.9, 0.3, 0.6],
                  tasks=["a", "a", "b"])
    rows = routed_predictions(test, fitted, cfg)
    by = {}
    for r in rows:
        by.setdefault(r["method"], []).append(r)
    assert set(by) == {"adaptive:always_fast", "adaptive:always_think", "adaptive:confidence",
                       "adaptive:perception", f"adaptive:{ORACLE}", "adaptive:confidence@0.00",
                       "adaptive:confidence@0.50", "adaptive:confidence@1.00"}
    assert all([r["id"] for r in rs] == ["q0", "q1", "q2"] for rs in by.values())
    assert [r["mode"] for r in by["adaptive:confidence"]] == ["fast", "think", "fast"]
    assert [r["mode"] for r in by[f"adaptive:{ORACLE}"]] == ["fast", "think", "think"]
    assert figures(by[f"adaptive:{ORACLE}"])["accuracy_flexible"] == 1.0
    assert figures(by["adaptive:confidence"])["think_share"] == pytest.approx(1 / 3)
    assert by_task(by["adaptive:confidence"])["b"]["think_share"] == 0.0
    assert figures(by["adaptive:always_think"])["generated_tokens_per_question"] == 60


def file_rows(modes: dict, split: str) -> list[dict]:
    """The rows evaluate_student writes for adaptive (evaluate.modes.mode_rows)."""
    rows = []
    for i, (fast, think) in enumerate(zip(modes["fast"], modes["think"])):
        rows += [{**fast, "mode": "fast", "split": split,
                  "features": encode_f32(modes["features"][i].numpy()),
                  "feature_seconds": modes["feature_seconds"]},
                 {**think, "mode": "think", "split": split}]
    return rows


def test_routing_the_evaluated_rows_equals_routing_in_memory():
    """The report routes what evaluate_student wrote: the same decisions and rows."""
    cfg = AdaptiveConfig(confidence={"sweep": [0.0, 0.5, 1.0]}, perception={"epochs": 5})
    feats = torch.tensor([[1.0, 0.5, 0], [-1, 0.25, 0], [1, 0, 0.125], [-1, 0, 0]])
    held = _modes([True, False, True, False], [True, True, False, True], [0.9, 0.1, 0.8, 0.2], feats)
    test = _modes([True, False, False], [False, True, True], [0.9, 0.3, 0.6], feats[:3])
    fitted, info = fit_routers(held, cfg, seed=0)
    expected = routed_predictions(test, fitted, cfg)
    rows, fit = route_rows(file_rows(held, "holdout") + file_rows(test, "test"), cfg, seed=0)
    assert rows == expected and fit["tau"] == info["tau"]
    assert not any(k in r for r in rows for k in ("split", "features", "feature_seconds"))
    with pytest.raises(ValueError, match="the test questions lack one of the modes"):
        route_rows(file_rows(held, "holdout") + file_rows(test, "test")[:-1], cfg, seed=0)
