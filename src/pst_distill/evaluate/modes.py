"""The adaptive student at test time: both modes for every question, and what its routers
read.

One generation pass per mode over the held-out and the evaluation questions together (fast:
the fast control, answer first, stopped after the answer line; think: the think control,
rationale then answer), and one forward pass for each prompt's last hidden state. Each
question gives two scored rows (``mode`` fast and think, ``split`` holdout or test); the
fast row carries the answer's confidence (``confidence_mean_prob``, ``confidence_margin``)
and the prompt's features (``features``: float32, base64). The routers
(:mod:`pst_distill.evaluate.routing`) are rules over these rows, applied by the report stage,
so tuning one never re-runs an evaluation.
"""

from __future__ import annotations

import math
import time

import numpy as np
import torch

from pst_distill.evaluate.generate import generate_prompts
from pst_distill.evaluate.select import select_items
from pst_distill.formats import control_tokens, mode_control, render_prompt
from pst_distill.io import encode_f32
from pst_distill.scoring import by_task, figures, score


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
    and the seconds per question it took. The decoder alone runs: no LM head, so no
    [batch, length, vocabulary] logits."""
    decoder = model.get_decoder()
    feats, t0 = [], time.perf_counter()
    for start in range(0, len(prompts), batch_size):
        enc = tok(prompts[start:start + batch_size], return_tensors="pt", padding=True,
                  add_special_tokens=False).to(model.device)
        with torch.inference_mode():
            hidden = decoder(**enc, use_cache=False).last_hidden_state
        feats.append(hidden[:, -1].float().cpu())
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



def mode_rows(modes: dict, split: str, start: int, n: int) -> list[dict]:
    """The two scored rows of questions ``start .. start + n`` of :func:`run_modes`."""
    rows = []
    for i in range(start, start + n):
        fast = {**modes["fast"][i], "mode": "fast", "split": split,
                "features": encode_f32(modes["features"][i]),
                "feature_seconds": round(modes["feature_seconds"], 6)}
        rows += [fast, {**modes["think"][i], "mode": "think", "split": split}]
    return rows


def evaluate_modes(model, tok, test_rows: list[dict], held_items: list[dict], fmt, cfg
                   ) -> tuple[list[dict], dict]:
    """(rows of both modes for the held-out and the evaluation questions, summary with each
    mode's figures on the evaluation questions)."""
    if not held_items:
        raise ValueError("adaptive needs held-out questions (assemble.holdout_per_task)")
    t0 = time.perf_counter()
    items, selection = select_items(test_rows, cfg.per_task)
    # one pass per mode over both sets: a batch costs its longest row, so fewer and fuller
    # batches are faster on a CPU (the questions never see each other)
    modes = run_modes(model, tok, held_items + items, fmt, cfg, "held-out + test")
    rows = (mode_rows(modes, "holdout", 0, len(held_items))
            + mode_rows(modes, "test", len(held_items), len(items)))
    test = [r for r in rows if r["split"] == "test"]
    summary = {"stage": "evaluate_student", "method": "adaptive",
               "modes": {m: {**figures([r for r in test if r["mode"] == m]),
                             "tasks": by_task([r for r in test if r["mode"] == m])}
                         for m in ("fast", "think")},
               "held_out": len(held_items), "wall_seconds": round(time.perf_counter() - t0, 3),
               "selection": {"per_task": cfg.per_task, "tasks": selection}}
    return rows, summary
