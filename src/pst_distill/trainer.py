"""The training loop for one method, on one or many processes through ``accelerate``.

One :class:`~pst_distill.pst_model.PSTModel` (student + semantic head, forward returns
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
:mod:`pst_distill.train_state`) is written every ``save_every`` steps into a folder keyed
by the run's inputs, outside DVC's outs, and removed after a finished run. A non-finite
loss stops the run and keeps the last good model checkpoint.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import shutil
import subprocess
import sys
import time
from contextlib import nullcontext
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pst_distill import losses, train_state
from pst_distill.data import Example, encode_rows, make_batch
from pst_distill.formats import control_tokens
from pst_distill.io import write_text
from pst_distill.pst_model import PSTModel, build_pst_model
from pst_distill.student import save_checkpoint

log = logging.getLogger(__name__)
LOGGED = ("loss", "ce_answer", "ce_rationale", "ce_sem_token", "ce_think", "sem")
CURVE_COLUMNS = ("step", *LOGGED, "grad_norm", "lr", "tokens")
FINAL_WINDOW = 5  # the compared final loss parts: mean over the last 5 steps
# the figures a team compares (the stage's declared metrics); the rest are details
COMPARED = ("method", "seed", "steps", "final", "tokens_per_s", "questions_seen",
            "sequences_seen", "epochs")


class TrainingDiverged(RuntimeError):
    """The loss (or gradient) became NaN/inf; the last good checkpoint is kept."""


@dataclass
class TrainResult:
    metrics: dict
    model: object
    tokenizer: object
    head: object | None
    is_main: bool = True


@dataclass
class RunState:
    """Progress that a resume restores (with the model, optimizer, scheduler and RNG of
    :mod:`pst_distill.train_state`)."""

    step: int = 0
    tokens: int = 0
    sequences: int = 0
    questions: int = 0
    loop_seconds: float = 0.0
    last_saved: int = 0
    curve: list[dict] = field(default_factory=list)


def mode_controls(method: str, fmt) -> dict | None:
    """adaptive: ``{mode: (control tokens, the delimiter its rows start from)}``."""
    if method != "adaptive":
        return None
    return {"fast": (control_tokens("fast", fmt), fmt.answer_prefix),
            "think": (control_tokens("think", fmt), fmt.rationale_prefix)}


def loss_weights(settings) -> losses.LossWeights:
    w = settings.loss
    return losses.LossWeights(w.w_answer, w.w_rationale, w.w_sem, w.reduction, w.w_sem_token,
                              w.w_think)


def cpu_supports_bf16() -> bool:
    """Native bf16 matmuls (AVX512-BF16 or AMX). Without them bf16 autocast is emulated and
    measured 2-4x slower than float32 on a 2-core AVX512 Xeon, so it is not used there."""
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as fh:
            flags = next((ln for ln in fh if ln.startswith("flags")), "").split()
    except OSError:
        return False
    return "avx512_bf16" in flags or "amx_bf16" in flags


def mixed_precision(device: str, settings) -> str:
    """accelerate's ``mixed_precision``: bf16 on CUDA where supported; on CPU only when
    ``cpu_bf16`` asks and the CPU has native bf16 (default off: float32 on every CPU)."""
    if device.startswith("cuda"):
        return "bf16" if torch.cuda.is_bf16_supported() else "no"
    native = cpu_supports_bf16() and torch.amp.is_autocast_available("cpu")
    return "bf16" if settings.cpu_bf16 and native else "no"


def precision_record(device: str, settings) -> dict:
    """What the metrics say about the arithmetic: weights, autocast, matmul precision."""
    mp = mixed_precision(device, settings)
    kind = device.split(":")[0]
    return {"bf16_autocast": mp == "bf16", "weights_dtype": "float32",
            "compute_dtype": "bfloat16" if mp == "bf16" else "float32",
            "autocast": f"torch.autocast({kind}, bfloat16)" if mp == "bf16" else "none",
            "float32_matmul_precision": torch.get_float32_matmul_precision()}


class Step(list):
    """One effective batch: its micro-batches (lists of examples) and ``questions``, the
    number of questions drawn for it."""

    questions: int = 0


def question_groups(examples: list[Example]) -> list[list[int]]:
    """The indices of each question's sequences (by ``row_id``; a row without one is its
    own question), questions in order of first appearance."""
    groups: list[list[int]] = []
    where: dict[str, int] = {}
    for i, ex in enumerate(examples):
        if ex.row_id is None:
            groups.append([i])
            continue
        if ex.row_id not in where:
            where[ex.row_id] = len(groups)
            groups.append([])
        groups[where[ex.row_id]].append(i)
    return groups


def questions_per_step(settings, processes: int = 1) -> int:
    return settings.batch_size * settings.grad_accum * processes


def total_steps(settings, n_questions: int, processes: int = 1) -> int:
    """``steps``, or ``ceil(epochs · questions / questions per step)``."""
    if settings.steps is not None:
        return settings.steps
    per_step = questions_per_step(settings, processes)
    return max(1, math.ceil(settings.epochs * n_questions / per_step))


def split_even(items: list, parts: int) -> list[list]:
    """``parts`` consecutive chunks whose sizes differ by at most one (longer ones first)."""
    size, extra = divmod(len(items), parts)
    out, start = [], 0
    for j in range(parts):
        end = start + size + (1 if j < extra else 0)
        out.append(items[start:end])
        start = end
    return out


def effective_batches(examples: list[Example], settings, seed: int, processes: int = 1):
    """Endless epochs of shuffled effective batches of ``batch_size · grad_accum ·
    processes`` questions with all their sequences, sorted by length (less padding) and
    cut into ``grad_accum · processes`` micro-batches (``batch_size`` sequences each when
    a question has one). Every process draws the same stream; :func:`shard` splits it.
    With one sequence per question this is the stream of shuffled sequences."""
    groups = question_groups(examples)
    rng = np.random.default_rng(seed)
    size, n_micro = questions_per_step(settings, processes), settings.grad_accum * processes
    order: list[int] = []
    while True:
        while len(order) < size:
            order += rng.permutation(len(groups)).tolist()
        chosen, order = order[:size], order[size:]
        rows = sorted((i for q in chosen for i in groups[q]), key=lambda i: len(examples[i]))
        step = Step([examples[i] for i in part] for part in split_even(rows, n_micro))
        step.questions = size
        yield step


def shard(micro: list, rank: int, processes: int) -> list:
    """This process's micro-batches of an effective batch (lengths spread over ranks)."""
    return micro[rank::processes]


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


def make_optimizer(model, settings, steps: int, device: str = "cpu"):
    """AdamW (fused on CUDA) over the trainable parameters and the LR schedule."""
    params = [p for p in model.parameters() if p.requires_grad]
    fused = device.startswith("cuda") and not settings.distributed.fsdp
    opt = torch.optim.AdamW(params, lr=settings.lr, weight_decay=settings.weight_decay,
                            **({"fused": True} if fused else {}))
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


def make_accelerator(settings, device: str):
    """A fresh Accelerator (several runs may share a process, e.g. in tests)."""
    from accelerate import Accelerator
    from accelerate.state import AcceleratorState, GradientState

    AcceleratorState._reset_state(reset_partial_state=not torch.distributed.is_initialized())
    GradientState._reset_state()
    kwargs = {"cpu": not device.startswith("cuda"), "step_scheduler_with_optimizer": False,
              "mixed_precision": mixed_precision(device, settings)}
    if settings.distributed.fsdp:
        from accelerate import FullyShardedDataParallelPlugin

        kwargs["fsdp_plugin"] = FullyShardedDataParallelPlugin(
            fsdp_version=2, auto_wrap_policy="transformer_based_wrap",
            state_dict_type="FULL_STATE_DICT", reshard_after_forward=True)
    return Accelerator(**kwargs)


def prepare(accelerator, pst_model: PSTModel, settings, steps: int):
    optimizer, scheduler = make_optimizer(pst_model, settings, steps, str(accelerator.device))
    return accelerator.prepare(pst_model, optimizer, scheduler)


def write_curve(path, curve: list[dict]) -> None:
    lines = ["\t".join(CURVE_COLUMNS)]
    lines += ["\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                        for c in CURVE_COLUMNS) for row in curve]
    write_text(path, "\n".join(lines) + "\n")


def build_head(model, settings, targets):
    """The semantic head (None without a semantic loss); ``targets`` is the embedding
    matrix (or its width)."""
    if settings.loss.w_sem <= 0:
        return None
    if targets is None:
        raise ValueError("w_sem > 0 needs the rationale embeddings (--embeddings)")
    d_embed = targets if isinstance(targets, int) else int(targets.shape[1])
    head = losses.SemanticHead(int(model.config.hidden_size), settings.sem.hidden, d_embed)
    return head.to(next(model.parameters()).device)


def state_folder(root, method: str, settings, seed: int, sem_token: str, rows: list[dict],
                 embeddings, processes: int = 1) -> Path:
    """``root/<method>-<hash>``: the hash covers everything that makes the run what it is
    (settings, seed, [SEM] token, processes, the data and the embeddings, the state
    format), so a resume never picks up the state of a different run."""
    h = hashlib.sha256()
    h.update(json.dumps([method, settings.model_dump(mode="json"), seed, sem_token, processes,
                         train_state.FORMAT], sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    if embeddings is not None and settings.loss.w_sem > 0:
        h.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    return Path(root) / f"{method}-{h.hexdigest()[:16]}"


def resume_folder(accelerator, settings, state_dir, key: tuple) -> Path | None:
    """The run's state folder, or None (no state_dir, or FSDP: refused, with a warning)."""
    if state_dir is None:
        return None
    if not train_state.supported(accelerator, settings.distributed.fsdp):
        log.warning("resumable training state is not written or read under FSDP "
                    "(train.distributed.fsdp: true): its optimizer state is sharded and the "
                    "project writes no pickle; an interrupted run starts again from step 0")
        return None
    return state_folder(state_dir, *key, processes=accelerator.num_processes)


def save_resume_state(accelerator, parts: tuple, folder: Path, run: RunState) -> None:
    """Model, optimizer, scheduler, RNG per process and our progress
    (:func:`pst_distill.train_state.save`), swapped in whole."""
    model, optimizer, scheduler = parts
    train_state.save(accelerator, model, optimizer, scheduler, folder, asdict(run))


def load_resume_state(accelerator, parts: tuple, folder: Path | None) -> RunState:
    model, optimizer, scheduler = parts
    progress = train_state.load(accelerator, model, optimizer, scheduler, folder)
    if progress is None:
        return RunState()
    run = RunState(**progress)
    log.info("resuming from step %d (%s)", run.step, folder)
    return run


def save_outputs(accelerator, model, tok, out_dir, state: dict, settings) -> None:
    """The model checkpoint of the outs, written by the main process only."""
    pst = accelerator.unwrap_model(model)
    if accelerator.distributed_type.name == "FSDP":  # gather the full weights on every rank
        full = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_checkpoint(pst.student, tok, pst.head, out_dir, state, full_state=full)
    elif accelerator.is_main_process:
        base = {"model": settings.model, "revision": settings.revision,
                "trust_remote_code": settings.trust_remote_code}
        save_checkpoint(pst.student, tok, pst.head, out_dir, state, base=base)
    accelerator.wait_for_everyone()


def _state(run: RunState, method: str, settings, loss: float | None) -> dict:
    return {"method": method, "step": run.step, "loss": loss, "base_model": settings.model,
            "finetune": settings.finetune, "lora_adapter": settings.finetune == "lora"}


def sample_rows(rows: list[dict], settings, seed: int) -> list[dict]:
    """The rows of ``max_items`` questions (all rows of each), a seeded sample, not the
    head of the file."""
    groups: dict = {}
    for i, row in enumerate(rows):
        key = row.get("id")
        groups.setdefault(("row", i) if key is None else key, []).append(i)
    if settings.max_items and settings.max_items < len(groups):
        order = list(groups.values())
        keep = np.random.default_rng(seed).permutation(len(order))[: settings.max_items]
        rows = [rows[i] for i in sorted(i for q in keep for i in order[q])]
    return rows


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


def train(rows: list[dict], settings, method: str, fmt, seed: int, out_dir, curve_path,
          embeddings: np.ndarray | None = None, device: str = "cpu",
          state_dir=None) -> TrainResult:
    """Train one method's student on assembled ``rows``; return metrics and the model.

    Saves a checkpoint to ``out_dir`` every ``save_every`` steps and at the end, and, with
    ``state_dir``, the resumable state (continued from there when a previous run of the
    same inputs was cut short; removed after a finished run; not under FSDP). On a
    non-finite loss raises :class:`TrainingDiverged`, leaving the last good checkpoint.
    ``metrics`` holds everything; :func:`split_metrics` separates the compared figures.
    """
    t0 = time.perf_counter()
    accelerator = make_accelerator(settings, device)
    torch.manual_seed(seed)
    targets = None if embeddings is None or settings.loss.w_sem <= 0 else \
        torch.from_numpy(np.asarray(embeddings, dtype=np.float32))
    pst, tok, sem_id = build_pst_model(settings, fmt.sem_token, str(accelerator.device),
                                       None if targets is None else int(targets.shape[1]),
                                       mode_controls(method, fmt))
    rows = sample_rows(rows, settings, seed)
    examples, data_stats = encode_rows(rows, tok, settings.max_length, settings.label_sem_token,
                                       fmt.system_prompt)
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
    try:
        _loop(accelerator, parts, tok, batches, settings, steps, run, targets,
              (method, out_dir, curve_path, folder))
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
    metrics = _metrics(run, settings, method, sem_id, data_stats, time.perf_counter() - t0)
    metrics.update(_run_record(accelerator, settings), epochs=round(run.questions / n_questions, 4))
    pst = accelerator.unwrap_model(parts[0])
    return TrainResult(metrics, pst.student, tok, pst.head, accelerator.is_main_process)


def _loop(accelerator, parts, tok, batches, settings, steps: int, run: RunState, targets,
          where) -> None:
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
                save_outputs(accelerator, model, tok, out_dir,
                             _state(run, method, settings, logged["loss"]), settings)
                run.last_saved = run.step
                if accelerator.is_main_process:
                    write_curve(curve_path, run.curve)
                if folder is not None and run.step < steps:
                    save_resume_state(accelerator, parts, folder, run)
    finally:
        bar.close()


def final_parts(curve: list[dict], window: int = FINAL_WINDOW) -> dict[str, float]:
    """The loss and its parts, mean over the last ``window`` steps (fewer in a shorter run)."""
    tail = curve[-window:]
    return {k: sum(row[k] for row in tail) / len(tail) for k in LOGGED} if tail else {}


def _metrics(run: RunState, settings, method: str, sem_id: int, data_stats: dict,
             wall: float) -> dict:
    return {
        "method": method, "steps": run.step, "final": final_parts(run.curve),
        "final_window": min(FINAL_WINDOW, len(run.curve)),
        "final_loss": run.curve[-1]["loss"] if run.curve else None,  # the last step's
        "loss_weights": settings.loss.model_dump(), "sem": settings.sem.model_dump(),
        "model": settings.model, "finetune": settings.finetune,
        "lora": settings.lora.model_dump() if settings.finetune == "lora" else None,
        "batch_size": settings.batch_size, "grad_accum": settings.grad_accum, "lr": settings.lr,
        "budget": {"steps": settings.steps, "epochs": settings.epochs},
        "max_length": settings.max_length, "packing": settings.packing,
        "pack_length": settings.pack_length if settings.packing else None,
        "sem_token_id": sem_id, "data": data_stats,
        "tokens": run.tokens, "sequences_seen": run.sequences, "questions_seen": run.questions,
        "loop_seconds": round(run.loop_seconds, 3),
        "tokens_per_s": round(run.tokens / max(run.loop_seconds, 1e-9), 1),
        "wall_seconds": round(wall, 3),
    }


def _run_record(accelerator, settings) -> dict:
    where = accelerator.device
    return {**precision_record(str(where), settings), "processes": accelerator.num_processes,
            "device": str(where) if where.type == "cuda" else where.type,
            "questions_per_step": questions_per_step(settings, accelerator.num_processes)}


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """(the compared figures: :data:`COMPARED`, the details: everything else)."""
    compared = {k: metrics[k] for k in COMPARED if k in metrics}
    details = {k: v for k, v in metrics.items() if k not in COMPARED or k in ("method", "seed")}
    return compared, details


def throughput(pst_model: PSTModel, examples: list[Example], settings, steps: int, *,
               pad_id: int, device: str = "cpu", warmup: int = 1, targets=None) -> dict:
    """Train ``pst_model`` (see :func:`pst_distill.pst_model.wrap_student`) for ``warmup``
    untimed and ``steps`` timed optimizer steps on ``examples`` as :func:`train` would;
    return real (non-padding) tokens/s and what else a benchmark reports."""
    accelerator = make_accelerator(settings, device)
    model, optimizer, scheduler = prepare(accelerator, pst_model, settings, steps + warmup)
    stream = effective_batches(examples, settings, 0, accelerator.num_processes)
    cuda = accelerator.device.type == "cuda"

    def one() -> tuple[int, int, float]:
        mine, counts = step_batches(accelerator, next(stream), settings, pad_id, targets)
        logged, _ = train_step(accelerator, model, mine, settings, optimizer, scheduler)
        return counts["tokens"], sum(b["input_ids"].numel() for b in mine), logged["loss"]

    for _ in range(warmup):
        one()
    if cuda:
        torch.cuda.synchronize()
        torch.cuda.reset_peak_memory_stats()
    tokens = padded = 0
    loss = float("nan")
    t0 = time.perf_counter()
    for _ in range(steps):
        n, p, loss = one()
        tokens, padded = tokens + n, padded + p
    if cuda:
        torch.cuda.synchronize()
    seconds = time.perf_counter() - t0
    return {"tokens_per_s": tokens / seconds, "tokens": tokens, "padded_tokens": padded,
            "seconds": seconds, "steps": steps, "final_loss": loss,
            "peak_mem_bytes": torch.cuda.max_memory_allocated() if cuda else None,
            **precision_record(str(accelerator.device), settings)}


def in_distributed_launch() -> bool:
    """True inside torchrun / accelerate launch (or any launcher that sets WORLD_SIZE)."""
    return "WORLD_SIZE" in os.environ or "LOCAL_RANK" in os.environ


def relaunch(processes: int, argv: list[str]) -> int:
    """Run this script again on ``processes`` processes (torch.distributed.run, one
    machine) and return its exit code. Called by a stage that was started as one process
    while its params ask for several."""
    cmd = [sys.executable, "-m", "torch.distributed.run", "--standalone",
           f"--nproc-per-node={processes}", *argv]
    log.info("launching %d processes: %s", processes, " ".join(cmd))
    return subprocess.run(cmd, check=False).returncode
