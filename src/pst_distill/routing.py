"""The adaptive student at test time: both modes per question, and the routers that pick one.

One pass per mode over the questions (fast: the fast control, answer first, stopped after
the answer line; think: the think control, rationale then answer) and one forward pass
for the prompt's last hidden state. Every router is then a rule over these per-question
results, so all of them, and every point of the τ sweep, are scored on the same
generations. A routed answer is charged what the route costs: ``confidence`` always
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
import math
import time
from collections import defaultdict

import numpy as np
import torch

from pst_distill.data import render_prompt
from pst_distill.evaluate import generate_prompts, score
from pst_distill.formats import control_tokens, mode_control

log = logging.getLogger(__name__)

ORACLE = "oracle"
CORRECT = "correct_flexible"


# ------------------------------------------------------------------ both modes
def answer_confidence(res: dict, tok, answer_prefix: str) -> tuple[float, float]:
    """(geometric-mean probability, first-token margin) of the answer value's tokens: the
    generated tokens after the answer prefix up to the end of the line or a special token.
    (0, 0) when the completion has no answer value."""
    ids, lps, margins = res["token_ids"], res["token_logprobs"], res["token_margins"]
    special = set(tok.all_special_ids)
    text, start, end = "", None, len(ids)
    for i, t in enumerate(ids):
        if t in special:
            end = i
            break
        piece = tok.decode([t])
        if start is not None and "\n" in piece:
            end = i
            break
        text += piece
        if start is None and answer_prefix in text:
            start = i + 1
    span = range(start, end) if start is not None else range(0)
    if len(span) == 0:
        return 0.0, 0.0
    return float(math.exp(np.mean([lps[i] for i in span]))), float(margins[span[0]])


def prompt_features(model, tok, prompts: list[str], batch_size: int) -> tuple[torch.Tensor, float]:
    """[N, H] last-layer hidden state at each prompt's last token (left-padded batches)
    and the seconds per question it took."""
    feats, t0 = [], time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            out = model(**enc, output_hidden_states=True, use_cache=False)
        feats.append(out.hidden_states[-1][:, -1].float().cpu())
    return torch.cat(feats), (time.perf_counter() - t0) / max(len(prompts), 1)


def run_modes(model, tok, items: list[dict], fmt, cfg, desc: str) -> dict:
    """Both modes' scored answers (fast ones with their ``confidence`` and ``margin``),
    the prompt features and their cost, for ``items`` in order."""
    if tok.padding_side != "left":
        raise ValueError("generation needs a left-padding tokenizer")
    base = [render_prompt(tok, it["question"], fmt.system_prompt) for it in items]
    suppress = tok.convert_tokens_to_ids(control_tokens("fast", fmt) + control_tokens("think", fmt))
    fast = generate_prompts(model, tok, [p + mode_control("fast", fmt) for p in base],
                            [fmt.rationale_prefix, fmt.sem_token], cfg.max_new_tokens,
                            cfg.batch_size, f"{desc} fast", scores=True, suppress=suppress)
    # think mode starts its completion with the rationale delimiter, exactly as trained
    # (prompt | [THINK] | "Reasoning: ..."): counted as generated, kept in the text
    prefill = fmt.rationale_prefix
    n_prefill = len(tok(prefill, add_special_tokens=False)["input_ids"])
    think = generate_prompts(model, tok, [p + mode_control("think", fmt) + prefill for p in base],
                             [], cfg.max_new_tokens_rationale, cfg.batch_size, f"{desc} think",
                             suppress=suppress, answer_line=fmt.answer_prefix)
    think = [{**r, "text": f"{prefill} {r['text']}",
              "generated_tokens": r["generated_tokens"] + n_prefill} for r in think]
    feats, feat_seconds = prompt_features(model, tok, base, cfg.batch_size)
    fast_rows = []
    for it, res in zip(items, fast):
        conf, margin = answer_confidence(res, tok, fmt.answer_prefix)
        row = score(it, res, "adaptive", True, fmt.answer_prefix)
        fast_rows.append({**row, "confidence_mean_prob": conf, "confidence_margin": margin})
    think_rows = [score(it, res, "adaptive", False, fmt.answer_prefix) for it, res in zip(items, think)]
    return {"fast": fast_rows, "think": think_rows, "features": feats,
            "feature_seconds": feat_seconds}


def split_modes(modes: dict, n: int) -> tuple[dict, dict]:
    """:func:`run_modes` results of the first ``n`` questions and of the rest."""
    def part(sl: slice) -> dict:
        return {"fast": modes["fast"][sl], "think": modes["think"][sl],
                "features": modes["features"][sl], "feature_seconds": modes["feature_seconds"]}

    return part(slice(0, n)), part(slice(n, None))


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


def router_summary(rows: list[dict]) -> dict:
    """Per router (sweep points left out): accuracy, tokens and seconds per question, the
    share sent to thinking, overall and per task."""
    by: dict[str, list[dict]] = defaultdict(list)
    for r in rows:
        if "@" not in r["method"]:
            by[r["method"].split(":", 1)[1]].append(r)

    def figures(rs: list[dict]) -> dict:
        n = max(len(rs), 1)
        return {"n": len(rs),
                "accuracy_flexible": round(sum(r["correct_flexible"] for r in rs) / n, 4),
                "accuracy_strict": round(sum(r["correct_strict"] for r in rs) / n, 4),
                "generated_tokens_per_question": round(sum(r["generated_tokens"] for r in rs) / n, 3),
                "seconds_per_question": round(sum(r["seconds"] for r in rs) / n, 4),
                "think_share": round(sum(r["mode"] == "think" for r in rs) / n, 4)}

    out = {}
    for name, rs in by.items():
        tasks: dict[str, list[dict]] = defaultdict(list)
        for r in rs:
            tasks[r["task"]].append(r)
        out[name] = {**figures(rs), "tasks": {t: figures(v) for t, v in sorted(tasks.items())}}
    return out


def evaluate_adaptive(model, tok, test_items: list[dict], held_items: list[dict], fmt, cfg,
                      acfg, seed: int) -> tuple[list[dict], dict]:
    """(prediction rows of every router, summary): fit the routers on ``held_items``
    (questions the student never trained on), then route ``test_items``."""
    if not held_items:
        raise ValueError("adaptive needs held-out questions (adaptive.holdout_per_task)")
    t0 = time.perf_counter()
    # one generation pass per mode over both sets: a batch costs its longest row, so fewer
    # and fuller batches are faster on a CPU (the questions never see each other)
    both = run_modes(model, tok, held_items + test_items, fmt, cfg, "held-out + test")
    held, test = split_modes(both, len(held_items))
    fitted, fit_info = fit_routers(held, acfg, seed)
    rows = routed_predictions(test, fitted, acfg)
    summary = {"method": "adaptive", "routers": router_summary(rows), "fit": fit_info,
               "wall_seconds": round(time.perf_counter() - t0, 3)}
    return rows, summary


def evaluate_adaptive_split(model, tok, test_rows: list[dict], held_items: list[dict], fmt, cfg,
                            acfg, seed: int) -> tuple[list[dict], dict]:
    """:func:`evaluate_adaptive` on the evaluation set every method gets
    (:func:`pst_distill.evaluate.select_items`)."""
    from pst_distill.evaluate import select_items

    items, selection = select_items(test_rows, cfg.per_task)
    rows, summary = evaluate_adaptive(model, tok, items, held_items, fmt, cfg, acfg, seed)
    summary["selection"] = {"per_task": cfg.per_task, "tasks": selection}
    return rows, summary


def adaptive_metrics(summary: dict, seed: int) -> dict:
    """The declared metrics: per router (not the oracle) the overall figures and τ."""
    routers = {name: {k: v for k, v in fig.items() if k != "tasks"}
               for name, fig in summary["routers"].items() if name != ORACLE}
    return {"method": "adaptive", "seed": seed, "tau": summary["fit"]["tau"], "routers": routers}
