"""Resumable training state without pickle: tensors in safetensors, everything else in JSON.

One state is a folder, written beside the previous one and swapped in (``latest``), so a
kill leaves one whole state::

    latest/progress.json          the run's progress (step, counts, loss curve)        main
    latest/state.json             format, processes, optimizer hyperparameters
                                  (param_groups) and non-tensor state, scheduler state main
    latest/model.safetensors      the trainable parameters of the PSTModel (all weights
                                  of a full finetune, or LoRA adapters + [SEM] row),
                                  the semantic head included                           main
    latest/optimizer.safetensors  optimizer state tensors, ``<param index>.<name>``     main
    latest/rng-<rank>.safetensors torch CPU (and CUDA) generator states, uint8         each rank
    latest/rng-<rank>.json        numpy and python ``random`` states                   each rank

DDP replicates the model and optimizer, so the main process writes them and every rank
reads them; RNG states differ per rank (dropout), so each rank writes and reads its own.
FSDP shards the optimizer state: :func:`supported` says no there (the trainer then
neither writes nor reads a state and an interrupted run starts again from step 0).
"""

from __future__ import annotations

import hashlib
import json
import logging
import random
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch

from pst_distill.io import read_json, replace_dir, write_json

log = logging.getLogger(__name__)
FORMAT = "pst-train-state/1"
PROGRESS, STATE = "progress.json", "state.json"
MODEL, OPTIMIZER = "model.safetensors", "optimizer.safetensors"


def supported(accelerator, fsdp: bool = False) -> bool:
    """False under FSDP (sharded optimizer state, which this writer does not gather): when
    the params ask for it (``fsdp``; accelerate runs it as DDP on CPU) or a launcher set it."""
    return not fsdp and accelerator.distributed_type.name != "FSDP"


def save(accelerator, model, optimizer, scheduler, folder: Path, progress: dict) -> None:
    """Write the state of step ``progress['step']`` to ``folder/latest`` (all ranks call)."""
    from safetensors.torch import save_file

    tmp = Path(folder) / f".tmp-{progress['step']}"
    if accelerator.is_main_process:
        shutil.rmtree(tmp, ignore_errors=True)
        tmp.mkdir(parents=True)
    accelerator.wait_for_everyone()
    save_rng(tmp, accelerator.process_index)
    if accelerator.is_main_process:
        save_file(trainable_state(accelerator.unwrap_model(model)), tmp / MODEL)
        tensors, rest = split_optimizer(optimizer.state_dict())
        save_file(tensors, tmp / OPTIMIZER)
        write_json(tmp / STATE, {"format": FORMAT, "processes": accelerator.num_processes,
                                 "optimizer": rest, "scheduler": scheduler_state(scheduler)})
        write_json(tmp / PROGRESS, progress)
    accelerator.wait_for_everyone()  # every rank's RNG file is in tmp
    if accelerator.is_main_process:
        replace_dir(tmp, Path(folder) / "latest")
    accelerator.wait_for_everyone()


def latest(folder: Path | None) -> Path | None:
    """The last whole state (``latest``, or the previous one when a kill hit the swap)."""
    if folder is None:
        return None
    for name in ("latest", ".latest.old"):
        if (Path(folder) / name / PROGRESS).exists():
            return Path(folder) / name
    return None


def load(accelerator, model, optimizer, scheduler, folder: Path | None) -> dict | None:
    """Restore model, optimizer, scheduler and this rank's RNG from the state in
    ``folder``; return its progress, or None when there is none to resume (an unreadable
    or older-format state is reported and ignored)."""
    from safetensors.torch import load_file

    where = latest(folder)
    if where is None:
        return None
    state = read_json(where / STATE) if (where / STATE).exists() else {}
    if state.get("format") != FORMAT or state.get("processes") != accelerator.num_processes:
        log.warning("ignoring the resumable state in %s (format %s, %s processes; this run: "
                    "%s, %d processes): training starts from step 0", where,
                    state.get("format", "unknown"), state.get("processes", "?"), FORMAT,
                    accelerator.num_processes)
        return None
    load_trainable(accelerator.unwrap_model(model), load_file(where / MODEL))
    optimizer.load_state_dict(join_optimizer(load_file(where / OPTIMIZER), state["optimizer"]))
    load_scheduler(scheduler, state["scheduler"])
    load_rng(where, accelerator.process_index)
    return read_json(where / PROGRESS)


# ------------------------------------------------------------------ model
def trainable_state(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    """Independent CPU copies of the trainable parameters (tied weights appear once)."""
    return {name: p.detach().to("cpu", copy=True).contiguous()
            for name, p in model.named_parameters() if p.requires_grad}


def load_trainable(model: torch.nn.Module, saved: dict[str, torch.Tensor]) -> None:
    """Copy ``saved`` into the trainable parameters in place (the optimizer keeps them)."""
    params = {name: p for name, p in model.named_parameters() if p.requires_grad}
    if params.keys() != saved.keys():
        raise ValueError(f"resumable state does not match the model: missing "
                         f"{sorted(params.keys() - saved.keys())[:5]}, unexpected "
                         f"{sorted(saved.keys() - params.keys())[:5]}")
    with torch.no_grad():
        for name, p in params.items():
            p.copy_(saved[name])


# ------------------------------------------------------------------ optimizer, scheduler
def split_optimizer(state_dict: dict) -> tuple[dict[str, torch.Tensor], dict]:
    """(tensors ``<index>.<name>``, JSON part: param_groups and non-tensor state)."""
    tensors, scalars = {}, {}
    for index, entry in state_dict["state"].items():
        for name, value in entry.items():
            if isinstance(value, torch.Tensor):
                tensors[f"{index}.{name}"] = value.detach().to("cpu", copy=True).contiguous()
            else:
                scalars[f"{index}.{name}"] = _plain(value, f"optimizer state {index}.{name}")
    groups = [{k: _plain(v, f"optimizer param_groups.{k}") for k, v in g.items()}
              for g in state_dict["param_groups"]]
    return tensors, {"param_groups": groups, "scalars": scalars}


def join_optimizer(tensors: dict[str, torch.Tensor], rest: dict) -> dict:
    """The optimizer state_dict that :func:`split_optimizer` split."""
    state: dict[int, dict] = {}
    for key, value in [*tensors.items(), *rest["scalars"].items()]:
        index, name = key.split(".", 1)
        state.setdefault(int(index), {})[name] = value
    groups = [{k: (tuple(v) if isinstance(v, list) and k != "params" else v) for k, v in g.items()}
              for g in rest["param_groups"]]  # betas are a tuple
    return {"state": state, "param_groups": groups}


def _inner(scheduler):
    return getattr(scheduler, "scheduler", scheduler)  # accelerate's wrapper


def scheduler_state(scheduler) -> dict:
    """The scheduler's state (last_epoch, base_lrs, _last_lr, ...) without its lambdas,
    which are code, rebuilt from the settings."""
    state = dict(_inner(scheduler).state_dict())
    state.pop("lr_lambdas", None)
    return {k: _plain(v, f"scheduler {k}") for k, v in state.items()}


def load_scheduler(scheduler, saved: dict) -> None:
    inner = _inner(scheduler)
    state = dict(saved)
    if hasattr(inner, "lr_lambdas"):
        state["lr_lambdas"] = [None] * len(inner.lr_lambdas)
    inner.load_state_dict(state)


def _plain(value, what: str):
    """A JSON value, or a clear error (never a pickle fallback)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (list, tuple)):
        return [_plain(v, what) for v in value]
    if isinstance(value, torch.Tensor) and value.numel() == 1:
        return value.item()
    raise TypeError(f"{what}: cannot store a {type(value).__name__} in the resumable state")


# ------------------------------------------------------------------ RNG
def save_rng(folder: Path, rank: int) -> None:
    from safetensors.torch import save_file

    tensors = {"torch_cpu": torch.get_rng_state()}
    if torch.cuda.is_available() and torch.cuda.is_initialized():
        tensors.update({f"torch_cuda.{i}": s for i, s in enumerate(torch.cuda.get_rng_state_all())})
    save_file(tensors, Path(folder) / f"rng-{rank}.safetensors")
    kind, keys, pos, has_gauss, cached = np.random.get_state()
    version, internal, gauss_next = random.getstate()
    write_json(Path(folder) / f"rng-{rank}.json", {
        "numpy": {"kind": kind, "keys": keys.tolist(), "pos": int(pos),
                  "has_gauss": int(has_gauss), "cached_gaussian": float(cached)},
        "python": {"version": version, "internal": list(internal), "gauss_next": gauss_next}})


def load_rng(folder: Path, rank: int) -> None:
    from safetensors.torch import load_file

    tensors = load_file(Path(folder) / f"rng-{rank}.safetensors")
    torch.set_rng_state(tensors["torch_cpu"])
    cuda = [tensors[f"torch_cuda.{i}"] for i in range(len(tensors) - 1)]
    if cuda and torch.cuda.is_available() and len(cuda) == torch.cuda.device_count():
        torch.cuda.set_rng_state_all(cuda)
    saved = read_json(Path(folder) / f"rng-{rank}.json")
    n = saved["numpy"]
    np.random.set_state((n["kind"], np.asarray(n["keys"], dtype=np.uint32), n["pos"],
                         n["has_gauss"], n["cached_gaussian"]))
    p = saved["python"]
    random.setstate((p["version"], tuple(p["internal"]), p["gauss_next"]))


# ------------------------------------------------------------------ the run's progress
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


def state_folder(root, method: str, settings, seed: int, sem_token: str, rows: list[dict],
                 embeddings, processes: int = 1) -> Path:
    """``root/<method>-<hash>``: the hash covers everything that makes the run what it is
    (settings, seed, [SEM] token, processes, the data and the embeddings, the state
    format), so a resume never picks up the state of a different run."""
    h = hashlib.sha256()
    h.update(json.dumps([method, settings.model_dump(mode="json"), seed, sem_token, processes,
                         FORMAT], sort_keys=True).encode())
    for row in rows:
        h.update(json.dumps(row, sort_keys=True).encode())
    if embeddings is not None and settings.loss.w_sem > 0:
        h.update(np.ascontiguousarray(embeddings, dtype=np.float32).tobytes())
    return Path(root) / f"{method}-{h.hexdigest()[:16]}"


def resume_folder(accelerator, settings, state_dir, key: tuple) -> Path | None:
    """The run's state folder, or None (no state_dir, or FSDP: refused, with a warning)."""
    if state_dir is None:
        return None
    if not supported(accelerator, settings.distributed.fsdp):
        log.warning("resumable training state is not written or read under FSDP "
                    "(train.distributed.fsdp: true): its optimizer state is sharded and the "
                    "project writes no pickle; an interrupted run starts again from step 0")
        return None
    return state_folder(state_dir, *key, processes=accelerator.num_processes)


def save_resume_state(accelerator, parts: tuple, folder: Path, run: RunState) -> None:
    """Model, optimizer, scheduler, RNG per process and our progress
    (:func:`save`), swapped in whole."""
    model, optimizer, scheduler = parts
    save(accelerator, model, optimizer, scheduler, folder, asdict(run))


def load_resume_state(accelerator, parts: tuple, folder: Path | None) -> RunState:
    model, optimizer, scheduler = parts
    progress = load(accelerator, model, optimizer, scheduler, folder)
    if progress is None:
        return RunState()
    run = RunState(**progress)
    log.info("resuming from step %d (%s)", run.step, folder)
    return run
