"""Checkpoints of a trained student, written atomically (a folder beside the target, then
swapped in).

A checkpoint folder holds the tokenizer (with [SEM] and any mode controls),
``semantic_head.safetensors`` + ``semantic_head.json`` when the run had a semantic loss,
``train_state.json``, and the weights: a plain transformers model (safetensors) for a full
finetune; for LoRA only the adapter (peft's ``adapter_model.safetensors``, with the trained
rows of the added tokens) plus ``base_model.json`` naming the base, ~20 MB instead of a copy
of the base model per run. :func:`pst_distill.models.load_causal_lm` loads either kind (an
adapter onto its base, merged).
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from pst_distill.io import read_json, replace_dir, write_json
from pst_distill.models import BASE_REF

log = logging.getLogger(__name__)
HEAD_WEIGHTS, HEAD_CONFIG, STATE = "semantic_head.safetensors", "semantic_head.json", "train_state.json"


def save_checkpoint(model, tokenizer, head, out_dir: str | os.PathLike, state: dict,
                    full_state: dict | None = None, base: dict | None = None,
                    dtype=None) -> None:
    """Write the student (+ head) to ``out_dir`` atomically. ``full_state``: the gathered
    state dict of a sharded (FSDP) PSTModel (keys ``student.*``, ``head.*``), used in place
    of the model's own (sharded) tensors. ``base``: ``{model, revision,
    trust_remote_code}`` of the base a peft model's adapter is loaded onto. ``dtype``: a
    full finetune's floating-point weights are written in it (the training dtype, bf16 on
    CUDA: half the bytes to write, hash and move)."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        if full_state is None:
            if hasattr(model, "peft_config"):
                if base is None:
                    raise ValueError("a LoRA checkpoint needs its base model (base=...)")
                # the added tokens' rows are in the adapter (trainable_token_indices)
                model.save_pretrained(tmp, save_embedding_layers=False)
                stable_adapter_config(tmp)
                write_json(tmp / BASE_REF, base)
            else:
                model.save_pretrained(tmp, state_dict=in_dtype(model.state_dict(), dtype))
            head_state = None if head is None else head.state_dict()
        else:  # FSDP runs are full finetunes (config/train.py): no adapters to merge
            model.save_pretrained(tmp, state_dict=in_dtype(_sub_state(full_state, "student."),
                                                           dtype))
            head_state = _sub_state(full_state, "head.")
        tokenizer.save_pretrained(tmp)
        if head is not None:
            weights = {k: v.detach().float().cpu().contiguous() for k, v in head_state.items()}
            save_file(weights, tmp / HEAD_WEIGHTS)
            write_json(tmp / HEAD_CONFIG, head.dims)
        write_json(tmp / STATE, state)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def stable_adapter_config(folder: Path) -> None:
    """peft keeps ``target_modules`` as a set and writes it in the set's order, which
    changes with Python's hash seed: sorted, the same adapter gives the same folder, so a
    re-trained identical student keeps its DVC hash and its evaluation is not run again."""
    path = folder / "adapter_config.json"
    config = read_json(path)
    for key in ("target_modules", "modules_to_save", "exclude_modules"):
        if isinstance(config.get(key), list):
            config[key] = sorted(config[key])
    write_json(path, config)


def in_dtype(state: dict, dtype) -> dict:
    """``state`` with its floating-point tensors in ``dtype`` (None: as they are). Tensors
    that share memory (tied embeddings) still share it after, so they are saved once."""
    if dtype is None:
        return state
    converted: dict = {}
    out = {}
    for k, v in state.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        same = (v.data_ptr(), tuple(v.shape), v.stride())
        out[k] = converted.setdefault(same, v.to(dtype))
    return out


def checkpoint_dtype(device: str, mixed_precision: str, finetune: str):
    """The dtype a full finetune is saved in: bf16 where it trained under bf16 autocast on
    CUDA, else its own (float32). LoRA adapters are small and stay float32."""
    import torch

    cuda = device.startswith("cuda")
    return torch.bfloat16 if cuda and mixed_precision == "bf16" and finetune == "full" else None


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


def load_head(model_dir: str | os.PathLike):
    """The saved SemanticHead, or None when the run had no semantic loss."""
    from safetensors.torch import load_file

    from pst_distill.io import read_json
    from pst_distill.train.model import SemanticHead

    folder = Path(model_dir)
    if not (folder / HEAD_WEIGHTS).exists():
        return None
    head = SemanticHead(**read_json(folder / HEAD_CONFIG))
    head.load_state_dict(load_file(folder / HEAD_WEIGHTS))
    return head.eval()


def save_outputs(accelerator, model, tok, out_dir, state: dict, settings) -> None:
    """The model checkpoint of the outs, written by the main process only."""
    pst = accelerator.unwrap_model(model)
    dtype = checkpoint_dtype(str(accelerator.device), accelerator.mixed_precision,
                             settings.finetune)
    if accelerator.distributed_type.name == "FSDP":  # gather the full weights on every rank
        full = accelerator.get_state_dict(model)
        if accelerator.is_main_process:
            save_checkpoint(pst.student, tok, pst.head, out_dir, state, full_state=full,
                            dtype=dtype)
    elif accelerator.is_main_process:
        base = {"model": settings.model, "revision": settings.revision,
                "trust_remote_code": settings.trust_remote_code}
        save_checkpoint(pst.student, tok, pst.head, out_dir, state, base=base, dtype=dtype)
    accelerator.wait_for_everyone()


def checkpoint_state(run, method: str, settings, loss: float | None) -> dict:
    return {"method": method, "step": run.step, "loss": loss, "base_model": settings.model,
            "finetune": settings.finetune, "lora_adapter": settings.finetune == "lora"}
