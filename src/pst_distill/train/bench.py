"""Training throughput as a benchmark measures it: a few timed optimizer steps of the real
loop (:func:`pst_distill.train.loop.train_step`) on given examples."""

from __future__ import annotations

import time

import torch

from pst_distill.train.data import Example, effective_batches
from pst_distill.train.launch import make_accelerator, precision_record
from pst_distill.train.loop import step_batches, train_step
from pst_distill.train.model import PSTModel
from pst_distill.train.optim import prepare


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
