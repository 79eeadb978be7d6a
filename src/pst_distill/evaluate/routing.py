"""The adaptive student's routers: rules that pick a mode per question from the evaluated
rows of both modes (:mod:`pst_distill.evaluate.modes`).

Every router, and every point of the τ sweep, is scored on the same generations, fitted on
the held-out questions (never trained on, never tested on) and applied to the evaluation
questions; the report stage runs them, so tuning a router re-runs no evaluation. A routed answer is charged what the route costs: ``confidence`` always
pays for the fast answer and, when it falls back, for the thinking too; ``perception``
pays for the chosen mode (its forward pass is counted in seconds).

Routers (``adaptive`` in params.yaml):

- ``always_fast`` / ``always_think``: the two ends;
- ``confidence``: think when the fast answer's confidence is below τ (τ chosen on the
  held-out questions unless set);
- ``perception``: an MLP on the prompt's last hidden state, fitted on the held-out
  questions to predict "thinking pays" (think right and fast wrong), so it thinks only
  where that changes the outcome;
- ``oracle``: the better mode per question (fast when both are right): an upper bound for
  analysis, never a method.

Correctness here (labels, τ choice, oracle) is the flexible score.
"""

from __future__ import annotations

import logging

import numpy as np
import torch

from pst_distill.io import decode_f32

log = logging.getLogger(__name__)
ROW_ONLY = ("split", "features", "feature_seconds")  # what a routed row leaves out


def modes_of(rows: list[dict], split: str) -> dict:
    """The rows of ``split`` as the routers read them: ``{"fast": [...], "think": [...],
    "features": [N, H], "feature_seconds": s}``, questions in file order."""
    fast = [r for r in rows if r["split"] == split and r["mode"] == "fast"]
    think = {r["id"]: r for r in rows if r["split"] == split and r["mode"] == "think"}
    if len(think) != len(fast) or any(r["id"] not in think for r in fast):
        raise ValueError(f"adaptive predictions: the {split} questions lack one of the modes")
    feats = np.stack([decode_f32(r["features"]) for r in fast]) if fast else np.zeros((0, 1))
    strip = lambda r: {k: v for k, v in r.items() if k not in ROW_ONLY}  # noqa: E731
    return {"fast": [strip(r) for r in fast], "think": [strip(think[r["id"]]) for r in fast],
            "features": torch.from_numpy(np.array(feats, dtype=np.float32)),
            "feature_seconds": fast[0]["feature_seconds"] if fast else 0.0}


ORACLE = "oracle"


CORRECT = "correct_flexible"


# ------------------------------------------------------------------ routers
def confidences(modes: dict, kind: str) -> np.ndarray:
    return np.array([r[f"confidence_{kind}"] for r in modes["fast"]], dtype=float)


def route(modes: dict, think: np.ndarray, router: str, conf: np.ndarray,
          think_prob: np.ndarray | None = None, tau: float | None = None) -> list[dict]:
    """Prediction rows of ``router`` deciding ``think`` [N] bool, charged its route's cost."""
    rows = []
    for i, (fast, slow) in enumerate(zip(modes["fast"], modes["think"])):
        chosen = slow if think[i] else fast
        tokens, seconds = chosen["generated_tokens"], chosen["seconds"]
        if router.startswith("confidence") and think[i]:  # the discarded fast answer was paid for
            tokens, seconds = tokens + fast["generated_tokens"], seconds + fast["seconds"]
        if router == "perception":
            seconds += modes["feature_seconds"]
        keep = {k: v for k, v in chosen.items() if not k.startswith("confidence_")}
        rows.append({**keep, "method": f"adaptive:{router}", "mode": "think" if think[i] else "fast",
                     "generated_tokens": tokens, "seconds": round(seconds, 4),
                     "confidence": round(float(conf[i]), 6),
                     "think_prob": None if think_prob is None else round(float(think_prob[i]), 6),
                     "tau": tau})
    return rows


def correct_arrays(modes: dict) -> tuple[np.ndarray, np.ndarray]:
    return (np.array([r[CORRECT] for r in modes["fast"]], dtype=bool),
            np.array([r[CORRECT] for r in modes["think"]], dtype=bool))


def oracle_decisions(fast_ok: np.ndarray, think_ok: np.ndarray) -> np.ndarray:
    """Think only where the fast answer is wrong and the thought-out one right."""
    return ~fast_ok & think_ok


def choose_tau(conf: np.ndarray, fast_ok: np.ndarray, think_ok: np.ndarray,
               grid: list[float], think_cost: float) -> tuple[float, float]:
    """The τ of ``grid`` with the best accuracy − think_cost · think share on these
    questions (ties: the one that thinks least); returns (τ, that objective)."""
    best = None
    for tau in sorted(grid):
        think = conf < tau
        acc = float(np.where(think, think_ok, fast_ok).mean())
        value = acc - think_cost * float(think.mean())
        if best is None or value > best[1] + 1e-12:
            best = (tau, value)
    return best


# ------------------------------------------------------------------ perception
class Perception(torch.nn.Module):
    """P(thinking pays | prompt's last hidden state): standardise, then a small MLP."""

    def __init__(self, mean: torch.Tensor, std: torch.Tensor, hidden: int):
        super().__init__()
        self.register_buffer("mean", mean)
        self.register_buffer("std", std)
        self.net = torch.nn.Sequential(torch.nn.Linear(mean.numel(), hidden), torch.nn.GELU(),
                                       torch.nn.Linear(hidden, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net((x - self.mean) / self.std).squeeze(-1)


def fit_perception(x: torch.Tensor, y: np.ndarray, opts, seed: int) -> tuple[Perception | None, dict]:
    """Fit on held-out features ``x`` [N, H] and labels ``y`` [N] (thinking pays); classes
    weighted to balance. None (never think) when no held-out question has thinking pay."""
    info = {"questions": int(len(y)), "thinking_pays": int(y.sum())}
    if y.sum() == 0:
        log.warning("perception: thinking paid on none of the %d held-out questions; it never thinks",
                    len(y))
        return None, info
    torch.manual_seed(seed)
    model = Perception(x.mean(0), x.std(0).clamp(min=1e-6), opts.hidden)
    target = torch.as_tensor(y, dtype=torch.float32)
    pos_weight = torch.tensor(max(float(len(y) - y.sum()), 1.0) / float(y.sum()))
    opt = torch.optim.Adam(model.net.parameters(), lr=opts.lr, weight_decay=opts.weight_decay)
    for _ in range(opts.epochs):
        opt.zero_grad()
        loss = torch.nn.functional.binary_cross_entropy_with_logits(model(x), target,
                                                                    pos_weight=pos_weight)
        loss.backward()
        opt.step()
    with torch.no_grad():
        fitted = (torch.sigmoid(model(x)) >= opts.threshold).numpy()
    info.update(final_loss=round(float(loss.detach()), 4),
                train_accuracy=round(float((fitted == y).mean()), 4))
    return model.eval(), info


def think_probs(model: Perception | None, x: torch.Tensor) -> np.ndarray:
    if model is None:
        return np.zeros(len(x))
    with torch.no_grad():
        return torch.sigmoid(model(x)).numpy().astype(float)


# ------------------------------------------------------------------ everything
def fit_routers(held: dict, acfg, seed: int) -> tuple[dict, dict]:
    """The routers' fitted parts from the held-out questions: τ and the perception MLP."""
    conf = confidences(held, acfg.confidence.score)
    fast_ok, think_ok = correct_arrays(held)
    c = acfg.confidence
    tau, objective = (c.tau, None) if c.tau is not None else choose_tau(
        conf, fast_ok, think_ok, c.sweep, acfg.think_cost)
    labels = oracle_decisions(fast_ok, think_ok)
    perception, pinfo = fit_perception(held["features"], labels, acfg.perception, seed)
    info = {"held_out": len(fast_ok), "fast_accuracy": round(float(fast_ok.mean()), 4),
            "think_accuracy": round(float(think_ok.mean()), 4),
            "tau": tau, "tau_chosen_on_held_out": c.tau is None,
            "tau_objective": None if objective is None else round(objective, 4),
            "perception": pinfo}
    return {"tau": tau, "perception": perception}, info


def routed_predictions(test: dict, fitted: dict, acfg) -> list[dict]:
    """Every router's rows on the test questions, the oracle's and the τ sweep's."""
    conf = confidences(test, acfg.confidence.score)
    fast_ok, think_ok = correct_arrays(test)
    probs = think_probs(fitted["perception"], test["features"])
    n = len(conf)
    rows = (route(test, np.zeros(n, bool), "always_fast", conf)
            + route(test, np.ones(n, bool), "always_think", conf)
            + route(test, conf < fitted["tau"], "confidence", conf, tau=fitted["tau"])
            + route(test, probs >= acfg.perception.threshold, "perception", conf, probs)
            + route(test, oracle_decisions(fast_ok, think_ok), ORACLE, conf))
    for tau in acfg.confidence.sweep:
        rows += route(test, conf < tau, f"confidence@{tau:.2f}", conf, tau=tau)
    return rows



def route_rows(rows: list[dict], acfg, seed: int) -> tuple[list[dict], dict]:
    """(every router's rows on the evaluation questions, the fit): the routers fitted on
    the held-out rows of one seed's adaptive predictions, then applied to its test rows."""
    fitted, info = fit_routers(modes_of(rows, "holdout"), acfg, seed)
    return routed_predictions(modes_of(rows, "test"), fitted, acfg), info
