"""AdamW (fused on CUDA) over the trainable parameters and its learning-rate schedule."""

from __future__ import annotations

import math

import torch


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


def prepare(accelerator, pst_model, settings, steps: int):
    optimizer, scheduler = make_optimizer(pst_model, settings, steps, str(accelerator.device))
    return accelerator.prepare(pst_model, optimizer, scheduler)
