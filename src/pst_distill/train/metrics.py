"""What a training run reports: the per-step curve (TSV, a DVC plot), the compared figures
(the stage's declared metrics) and the details (settings, data counts, precision, timings)."""

from __future__ import annotations

from pst_distill.io import write_text
from pst_distill.train.launch import precision_record
from pst_distill.train.data import questions_per_step


LOGGED = ("loss", "ce_answer", "ce_rationale", "ce_sem_token", "ce_think", "sem")


CURVE_COLUMNS = ("step", *LOGGED, "grad_norm", "lr", "tokens")


FINAL_WINDOW = 5  # the compared final loss parts: mean over the last 5 steps


# the figures a team compares (the stage's declared metrics); the rest are details
COMPARED = ("method", "seed", "steps", "final", "tokens_per_s", "questions_seen",
            "sequences_seen", "epochs")


def write_curve(path, curve: list[dict]) -> None:
    lines = ["\t".join(CURVE_COLUMNS)]
    lines += ["\t".join(f"{row[c]:.6g}" if isinstance(row[c], float) else str(row[c])
                        for c in CURVE_COLUMNS) for row in curve]
    write_text(path, "\n".join(lines) + "\n")


def final_parts(curve: list[dict], window: int = FINAL_WINDOW) -> dict[str, float]:
    """The loss and its parts, mean over the last ``window`` steps (fewer in a shorter run)."""
    tail = curve[-window:]
    return {k: sum(row[k] for row in tail) / len(tail) for k in LOGGED} if tail else {}


def run_metrics(run, settings, method: str, sem_id: int, data_stats: dict,
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


def run_record(accelerator, settings) -> dict:
    where = accelerator.device
    return {**precision_record(str(where), settings), "processes": accelerator.num_processes,
            "device": str(where) if where.type == "cuda" else where.type,
            "questions_per_step": questions_per_step(settings, accelerator.num_processes)}


def split_metrics(metrics: dict) -> tuple[dict, dict]:
    """(the compared figures: :data:`COMPARED`, the details: everything else)."""
    compared = {k: metrics[k] for k in COMPARED if k in metrics}
    details = {k: v for k, v in metrics.items() if k not in COMPARED or k in ("method", "seed")}
    return compared, details
