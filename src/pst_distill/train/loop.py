"""The training loop for one method, on one or many processes through ``accelerate``.

One :class:`~pst_distill.train.model.PSTModel` (student + semantic head, forward returns
the loss sums) is prepared by accelerate: DDP or FSDP2 across processes, bf16 autocast
on CUDA. Each optimizer step takes one *effective batch* of ``batch_size · grad_accum ·
processes`` *questions* with all their sequences (one per question for most methods, two
for step_by_step), so every method sees the same questions per step and per run. Every
process draws the same seeded stream; a step's sequences are sorted by length and cut into
``grad_accum · processes`` micro-batches, and process ``r`` runs micro-batches ``r, r + P,
…`` (no_sync on all but its last). The denominators of the loss (tokens per part, rows
with a semantic target) are summed over all processes before the first forward, so each
micro-batch loss is its sums over the global totals and the step is the single-process
step. The budget is ``steps`` or ``epochs`` (passes over the questions).

State for an exact resume (model, optimizer, scheduler, RNG, step; pickle-free, see
:mod:`pst_distill.train.state`) is written every ``save_every`` steps into a folder keyed
by the run's inputs, outside DVC's outs, and removed after a finished run. A non-finite
loss stops the run and keeps the last good model checkpoint.
"""

from __future__ import annotations

import logging
import math
import shutil
import time
from contextlib import nullcontext
from dataclasses import dataclass

import numpy as np
import torch

from pst_distill.train import losses
from pst_distill.train.checkpoint import checkpoint_state, save_outputs
from pst_distill.train.data import (Example, effective_batches, make_batch, question_groups,
                                    sample_rows, shard, total_steps, encode_rows_cached)
from pst_distill.train.launch import make_accelerator
from pst_distill.train.metrics import LOGGED, run_metrics, run_record, write_curve
from pst_distill.train.model import build_pst_model, mode_controls
from pst_distill.train.optim import prepare
from pst_distill.train.state import (RunState, load_resume_state, resume_folder,
                                     save_resume_state)

log = logging.getLogger(__name__)


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    metrics: dict
    model: object
    tokenizer: object
    head: object | None
    is_main: bool = True


def loss_weights(settings) -> losses.LossWeights:
    w = settings.loss
    return losses.LossWeights(w.w_answer, w.w_rationale, w.w_sem, w.reduction, w.w_sem_token,
                              w.w_think)


def denominators(batches: list[dict], settings) -> losses.Denominators:
    """This process's token counts per part and rows with a semantic target."""
    total = losses.Denominators(0.0, 0.0, 0.0, 0.0)
    for b in batches:
        valid = losses.sem_rows_flat(settings.sem.pooling, b["sem_flat"], b["parts"].reshape(-1),
                                     b["seq_index"].reshape(-1), b["emb_row"])
        total = total + losses.count_parts(b["labels"], b["parts"], valid)
    return total


def global_denominators(accelerator, batches: list[dict], settings) -> losses.Denominators:
    """:func:`denominators` summed over all processes (the single-process totals)."""
    local = torch.tensor(denominators(batches, settings).as_list(), dtype=torch.float64,
                         device=accelerator.device)
    return losses.Denominators(*accelerator.reduce(local, "sum").tolist())


def step_batches(accelerator, micro: list[list[Example]], settings, pad_id, targets
                 ) -> tuple[list[dict], dict]:
    """This process's collated micro-batches on its device, and the effective batch's
    counts (tokens, sequences, questions drawn), the same on every process."""
    mine = shard(micro, accelerator.process_index, accelerator.num_processes)
    batches = [{k: v.to(accelerator.device, non_blocking=True)
                for k, v in make_batch(m, pad_id, settings.packing, settings.pack_length,
                                       targets).items()} for m in mine]
    flat = [e for m in micro for e in m]
    return batches, {"tokens": sum(len(e) for e in flat), "sequences": len(flat),
                     "questions": getattr(micro, "questions", len(flat))}


def train_step(accelerator, model, batches: list[dict], settings, optimizer, scheduler
               ) -> tuple[dict, float]:
    """Accumulate this process's micro-batches, then one optimizer step. Returns the
    logged parts (summed over processes, and the gradient norm before clipping) and the
    learning rate the step used."""
    den = global_denominators(accelerator, batches, settings)
    weights, world = loss_weights(settings), accelerator.num_processes
    logged = torch.zeros(len(LOGGED), dtype=torch.float64, device=accelerator.device)
    for i, batch in enumerate(batches):
        last = i == len(batches) - 1
        with nullcontext() if last else accelerator.no_sync(model):
            out = model(batch)
            loss, parts = losses.combine(out["ce"], out["sem"], den, weights)
            accelerator.backward(loss * world)  # DDP/FSDP average gradients over processes
        logged += torch.stack([loss.detach(), *(parts[k] for k in LOGGED[1:])]).double()
    logged = accelerator.reduce(logged, "sum")
    if not bool(torch.isfinite(logged[0])):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"loss is {logged[0].item()}")
    norm = accelerator.clip_grad_norm_(model.parameters(), settings.max_grad_norm or math.inf)
    if not bool(torch.isfinite(torch.as_tensor(norm))):
        optimizer.zero_grad(set_to_none=True)
        raise TrainingDiverged(f"gradient norm is {float(norm)}")
    lr = scheduler.get_last_lr()[0]  # the rate of this step, read before stepping
    optimizer.step()
    scheduler.step()
    optimizer.zero_grad(set_to_none=True)
    return {**dict(zip(LOGGED, logged.tolist())), "grad_norm": float(norm)}, lr


def train(rows: list[dict], settings, method: str, fmt, seed: int, out_dir, curve_path,
          embeddings: np.ndarray | None = None, device: str = "cpu",
          state_dir=None, token_cache=None) -> TrainResult:
    """Train one method's student on assembled ``rows``; return metrics and the model.

    Saves a checkpoint to ``out_dir`` every ``save_every`` steps and at the end, and, with
    ``state_dir``, the resumable state (continued from there when a previous run of the
    same inputs was cut short; removed after a finished run; not under FSDP), and with
    ``token_cache`` the tokenised rows (shared by the method's seeds). On a
    non-finite loss raises :class:`TrainingDiverged`, leaving the last good checkpoint.
    ``metrics`` holds everything; :func:`split_metrics` separates the compared figures.
    """
    t0 = time.perf_counter()
    timings: dict[str, float] = {}
    accelerator = make_accelerator(settings, device)
    torch.manual_seed(seed)
    targets = None if embeddings is None or settings.loss.w_sem <= 0 else \
        torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    pst, tok, sem_id = build_pst_model(settings, fmt.sem_token, str(accelerator.device),
                                       None if targets is None else int(targets.shape[1]),
                                       mode_controls(method, fmt))
    timings["model_load"] = time.perf_counter() - t0
    rows = sample_rows(rows, settings, seed)
    started = time.perf_counter()
    examples, data_stats = encode_rows_cached(rows, tok, settings.max_length,
                                              settings.label_sem_token, fmt.system_prompt,
                                              token_cache)
    timings["tokenize"] = time.perf_counter() - started
    if not examples:
        raise ValueError(f"no training sequences for {method!r} (all longer than max_length?)")
    n_questions = len(question_groups(examples))
    steps = total_steps(settings, n_questions, accelerator.num_processes)
    parts = prepare(accelerator, pst, settings, steps)
    folder = resume_folder(accelerator, settings, state_dir,
                           (method, settings, seed, fmt.sem_token, rows, embeddings))
    run = load_resume_state(accelerator, parts, folder)
    batches = effective_batches(examples, settings, seed, accelerator.num_processes)
    for _ in range(run.step):  # the data position: replay the seeded stream
        next(batches)
    timings["setup"] = time.perf_counter() - t0 - timings["model_load"] - timings["tokenize"]
    try:
        _loop(accelerator, parts, tok, batches, settings, steps, run, targets,
              (method, out_dir, curve_path, folder), timings)
    except TrainingDiverged as exc:
        if accelerator.is_main_process:
            write_curve(curve_path, run.curve)
        kept = (f"the last good checkpoint (step {run.last_saved}) is kept in {out_dir}"
                if run.last_saved else "no checkpoint had been saved yet")
        raise TrainingDiverged(f"{method}: training stopped at step {run.step + 1}: {exc}; "
                               f"{kept}. Lower train lr or check the data.") from None
    if folder is not None and accelerator.is_main_process:
        shutil.rmtree(folder, ignore_errors=True)  # finished: nothing left to resume
    data_stats.update(questions=n_questions)
    metrics = run_metrics(run, settings, method, sem_id, data_stats, time.perf_counter() - t0)
    metrics.update(run_record(accelerator, settings), epochs=round(run.questions / n_questions, 4),
                   timings={k: round(v, 3) for k, v in timings.items()})
    pst = accelerator.unwrap_model(parts[0])
    return TrainResult(metrics, pst.student, tok, pst.head, accelerator.is_main_process)


def _loop(accelerator, parts, tok, batches, settings, steps: int, run: RunState, targets,
          where, timings: dict) -> None:
    from tqdm.auto import tqdm

    model, optimizer, scheduler = parts
    method, out_dir, curve_path, folder = where
    bar = tqdm(total=steps, initial=run.step, desc=f"train {method}", unit="step",
               disable=not accelerator.is_main_process)
    try:
        while run.step < steps:
            started = time.perf_counter()
            mine, counts = step_batches(accelerator, next(batches), settings, tok.pad_token_id,
                                        targets)
            logged, lr = train_step(accelerator, model, mine, settings, optimizer, scheduler)
            run.loop_seconds += time.perf_counter() - started
            run.step += 1
            run.tokens += counts["tokens"]
            run.sequences += counts["sequences"]
            run.questions += counts["questions"]
            run.curve.append({"step": run.step, **logged, "lr": lr, "tokens": run.tokens})
            bar.set_postfix(loss=f"{logged['loss']:.3f}",
                            tok_s=f"{run.tokens / run.loop_seconds:.0f}")
            bar.update()
            if run.step % settings.save_every == 0 or run.step == steps:
                saving = time.perf_counter()
                save_outputs(accelerator, model, tok, out_dir,
                             checkpoint_state(run, method, settings, logged["loss"]), settings)
                run.last_saved = run.step
                if accelerator.is_main_process:
                    write_curve(curve_path, run.curve)
                if folder is not None and run.step < steps:
                    save_resume_state(accelerator, parts, folder, run)
                timings["save"] = timings.get("save", 0.0) + time.perf_counter() - saving
    finally:
        bar.close()
