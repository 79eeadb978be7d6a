"""A plain PyTorch training loop for one method: the loss of losses.py, gradient
accumulation with effective-batch normalisation, bf16 autocast, periodic checkpoints,
and a hard stop on a non-finite loss that keeps the last good checkpoint.

A plain loop (not the HF Trainer) so the semantic target column cannot be dropped on the
way: :func:`compute_loss` gathers it by ``emb_row`` for every micro-batch.
"""

from __future__ import annotations

import logging
import math
import time
from contextlib import nullcontext
from dataclasses import dataclass, field

import numpy as np
import torch

from pst_distill import losses
from pst_distill.data import Example, collate, encode_rows
from pst_distill.io import write_text
from pst_distill.student import load_student, save_checkpoint

log = logging.getLogger(__name__)
CURVE_COLUMNS = ("step", "loss", "ce_answer", "ce_rationale", "sem", "lr", "tokens")


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    metrics: dict
    model: object
    tokenizer: object
    head: object | None


@dataclass
class RunState:
    step: int = 0
    tokens: int = 0
    loop_seconds: float = 0.0
    last_saved: int = 0
    curve: list[dict] = field(default_factory=list)


def loss_weights(settings) -> losses.LossWeights:
    w = settings.loss
    return losses.LossWeights(w.w_answer, w.w_rationale, w.w_sem, w.reduction)


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Without them bf16 autocast is emulated and
    measured 2-4x slower than float32 on a 2-core AVX512 Xeon, so it is not used there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def autocast_for(device: str, cpu_bf16: bool):
    """bf16 autocast on CUDA (where supported) and, by param, on CPUs with native bf16."""
    if device.startswith("cuda"):
        enabled = torch.cuda.is_bf16_supported()
    else:
        enabled = cpu_bf16 and cpu_supports_bf16() and torch.amp.is_autocast_available("cpu")
    if not enabled:
        return nullcontext()
    return torch.autocast(device_type=device.split(":")[0], dtype=torch.bfloat16)


def effective_batches(examples: list[Example], settings, seed: int):
    """Endless epochs of shuffled effective batches, each split into length-sorted
    micro-batches (less padding) of ``batch_size`` sequences."""
    rng = np.random.default_rng(seed)
    size = settings.batch_size * settings.grad_accum
    order: list[int] = []
    while True:
        while len(order) < size:
            order += rng.permutation(len(examples)).tolist()
        chosen, order = order[:size], order[size:]
        chosen.sort(key=lambda i: len(examples[i]))
        yield [[examples[i] for i in chosen[j:j + settings.batch_size]]
               for j in range(0, size, settings.batch_size)]


def denominators(micro: list[dict], settings) -> losses.Denominators:
    total = losses.Denominators(0.0, 0.0, 0.0)
    for b in micro:
        valid = losses.sem_rows(settings.sem.pooling, b["sem_pos"], b["parts"], b["emb_row"])
        total = total + losses.count_parts(b["labels"], b["parts"], valid)
    return total


def _backbone(model):
    """(decoder returning final normed hidden states, LM head) of a plain or peft model."""
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    return base.get_decoder(), base.get_output_embeddings()


def compute_loss(model, head, batch: dict, targets, settings, den, autocast):
    """One micro-batch: forward, per-part CE sums, semantic loss; normalised by ``den``.

    The LM head runs only on positions that predict a supervised token (the prompt, with
    its chat template, is most of a short sequence), so logits are [M, V], not [B, T, V].
    """
    weights = loss_weights(settings)
    decoder, lm_head = _backbone(model)
    mask, next_ids, next_parts = losses.select_supervised(batch["labels"], batch["parts"])
    with autocast:
        hidden = decoder(input_ids=batch["input_ids"],
                         attention_mask=batch["attention_mask"]).last_hidden_state
        logits = lm_head(hidden[mask])
    ce_sums = losses.part_ce_sums_flat(logits, next_ids, next_parts)
    sem_sum = torch.zeros((), device=ce_sums.device)
    if weights.w_sem > 0 and head is not None:
        opts = settings.sem
        valid = losses.sem_rows(opts.pooling, batch["sem_pos"], batch["parts"], batch["emb_row"])
        if valid.any():
            pooled = losses.pool_hidden(hidden, opts.pooling, batch["sem_pos"], batch["parts"])[valid]
            target = targets[batch["emb_row"][valid]].to(pooled.device)
            sem_sum = losses.semantic_loss(head(pooled), target, opts.loss, opts.temperature).sum()
    return losses.combine(ce_sums, sem_sum, den, weights)


def train_step(model, head, micro_examples, targets, settings, optimizer, scheduler,
               device, pad_id) -> tuple[float, dict, int]:
    """Accumulate over the micro-batches, then one optimizer step; raise on NaN/inf."""
    micro = [{k: v.to(device) for k, v in collate(m, pad_id).items()} for m in micro_examples]
    den = denominators(micro, settings)
    total, parts = 0.0, {"ce_answer": 0.0, "ce_rationale": 0.0, "sem": 0.0}
    autocast = autocast_for(device, settings.cpu_bf16)
    for batch in micro:
        loss, p = compute_loss(model, head, batch, targets, settings, den, autocast)
        if not torch.isfinite(loss):
            optimizer.zero_grad(set_to_none=True)
            raise TrainingDiverged(f"loss is {loss.item()}")
        loss.backward()
        total += loss.item()
        parts = {k: parts[k] + p[k] for k in parts}
    params = [p for g in optimizer.param_groups for p in g["params"]]
    norm = torch.nn.utils.clip_grad_norm_(params, settings.max_grad_norm or float("inf"))
    if not torch.isfinite(norm):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"gradient norm is {norm.item()}")
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    tokens = sum(int(b["attention_mask"].sum()) for b in micro)
    return total, parts, tokens


def make_optimizer(model, head, settings, steps: int):
    params = [p for p in model.parameters() if p.requires_grad]
    if head is not None:
        params += list(head.parameters())
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay)
    warm = settings.warmup_steps

    def factor(step: int) -> float:
        if step < warm:
            return (step + 1) / (warm + 1)
        progress = (step - warm) / max(steps - warm, 1)
        if settings.schedule == "linear":
            return max(1.0 - progress, 0.0)
        if settings.schedule == "cosine":
            return 0.5 * (1.0 + math.cos(math.pi * min(progress, 1.0)))
        return 1.0

    return opt, torch.optim.lr_scheduler.LambdaLR(opt, factor)


def write_curve(path, curve: list[dict]) -> None:
    lines = ["\t".join(CURVE_COLUMNS)]
    lines += ["\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                        for c in CURVE_COLUMNS) for row in curve]
    write_text(path, "\n".join(lines) + "\n")


def build_head(model, settings, targets):
    if settings.loss.w_sem <= 0:
        return None
    if targets is None:
        raise ValueError("w_sem > 0 needs the rationale embeddings (--embeddings)")
    d_model = int(model.config.hidden_size)
    head = losses.SemanticHead(d_model, settings.sem.hidden, int(targets.shape[1]))
    return head.to(next(model.parameters()).device)


def _state(run: RunState, method: str, settings, loss: float | None) -> dict:
    return {"method": method, "step": run.step, "loss": loss, "base_model": settings.model,
            "finetune": settings.finetune, "merged_lora": settings.finetune == "lora"}


def train(rows: list[dict], settings, method: str, fmt, seed: int, out_dir, curve_path,
          embeddings: np.ndarray | None = None, device: str = "cpu") -> TrainResult:
    """Train one method's student on assembled ``rows``; return metrics and the model.

    Saves a checkpoint to ``out_dir`` every ``save_every`` steps and at the end. On a
    non-finite loss raises :class:`TrainingDiverged`, leaving the last good checkpoint.
    """
    from tqdm.auto import tqdm

    torch.manual_seed(seed)
    t0 = time.perf_counter()
    model, tok, sem_id = load_student(settings, fmt.sem_token, device)
    if settings.max_items and settings.max_items < len(rows):  # a seeded sample, not the head
        keep = np.random.default_rng(seed).permutation(len(rows))[: settings.max_items]
        rows = [rows[i] for i in sorted(keep)]
    examples, data_stats = encode_rows(rows, tok, settings.max_length, settings.label_sem_token)
    if not examples:
        raise ValueError(f"no training sequences for {method!r} (all longer than max_length?)")
    targets = None if embeddings is None or settings.loss.w_sem <= 0 else \
        torch.from_numpy(np.asarray(embeddings, dtype=np.float32)).to(device)
    head = build_head(model, settings, targets)
    optimizer, scheduler = make_optimizer(model, head, settings, settings.steps)
    run, batches = RunState(), effective_batches(examples, settings, seed)
    bar = tqdm(total=settings.steps, desc=f"train {method}", unit="step")
    loss = None
    try:
        while run.step < settings.steps:
            started = time.perf_counter()
            loss, parts, tokens = train_step(model, head, next(batches), targets, settings,
                                             optimizer, scheduler, device, tok.pad_token_id)
            run.loop_seconds += time.perf_counter() - started
            run.step, run.tokens = run.step + 1, run.tokens + tokens
            run.curve.append({"step": run.step, "loss": loss, **parts,
                              "lr": scheduler.get_last_lr()[0], "tokens": run.tokens})
            bar.set_postfix(loss=f"{loss:.3f}", tok_s=f"{run.tokens / run.loop_seconds:.0f}")
            bar.update()
            if run.step % settings.save_every == 0 or run.step == settings.steps:
                save_checkpoint(model, tok, head, out_dir, _state(run, method, settings, loss))
                run.last_saved = run.step
                write_curve(curve_path, run.curve)
    except TrainingDiverged as exc:
        write_curve(curve_path, run.curve)
        kept = (f"the last good checkpoint (step {run.last_saved}) is kept in {out_dir}"
                if run.last_saved else "no checkpoint had been saved yet")
        raise TrainingDiverged(f"{method}: training stopped at step {run.step + 1}: {exc}; "
                               f"{kept}. Lower train lr or check the data.") from None
    finally:
        bar.close()
    metrics = _metrics(run, settings, method, sem_id, data_stats, loss, time.perf_counter() - t0)
    metrics["bf16_autocast"] = not isinstance(autocast_for(device, settings.cpu_bf16), nullcontext)
    metrics["device"] = device
    return TrainResult(metrics, model, tok, head)


def _metrics(run: RunState, settings, method: str, sem_id: int, data_stats: dict,
             loss: float | None, wall: float) -> dict:
    return {
        "method": method, "steps": run.step, "final_loss": loss,
        "loss_weights": settings.loss.model_dump(), "sem": settings.sem.model_dump(),
        "model": settings.model, "finetune": settings.finetune,
        "lora": settings.lora.model_dump() if settings.finetune == "lora" else None,
        "batch_size": settings.batch_size, "grad_accum": settings.grad_accum, "lr": settings.lr,
        "max_length": settings.max_length, "sem_token_id": sem_id, "data": data_stats,
        "tokens": run.tokens, "loop_seconds": round(run.loop_seconds, 3),
        "tokens_per_s": round(run.tokens / max(run.loop_seconds, 1e-9), 1),
        "wall_seconds": round(wall, 3),
    }
