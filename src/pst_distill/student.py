"""The student model: load it for training (full or LoRA), save and reload checkpoints.

A checkpoint folder holds a plain transformers model (safetensors) and its tokenizer
(with [SEM]), ``semantic_head.safetensors`` + ``semantic_head.json`` when the run had a
semantic loss, and ``train_state.json``. LoRA runs are saved *merged* (adapters folded
into a copy of the weights): every checkpoint then loads the same way, with no peft and
no base model needed at evaluation time. Folders are written beside the target and moved
into place, so a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import copy
import logging
import os
import shutil
import tempfile
from pathlib import Path

from pst_distill.data import add_sem_token
from pst_distill.io import write_json
from pst_distill.models import resolve_model

log = logging.getLogger(__name__)
HEAD_WEIGHTS, HEAD_CONFIG, STATE = "semantic_head.safetensors", "semantic_head.json", "train_state.json"


def load_student(settings, sem_token: str, device: str):
    """(model in float32 on ``device``, tokenizer with [SEM] and a pad token, sem id)."""
    import torch
    from transformers import AutoModelForCausalLM, AutoTokenizer

    path = resolve_model(settings.model)
    kwargs = {"revision": settings.revision, "trust_remote_code": settings.trust_remote_code}
    tok = AutoTokenizer.from_pretrained(path, **kwargs)
    if tok.pad_token is None:
        tok.pad_token = tok.eos_token
    sem_id = add_sem_token(tok, sem_token)
    model = AutoModelForCausalLM.from_pretrained(path, dtype=torch.float32, **kwargs)
    if len(tok) > model.get_input_embeddings().num_embeddings:
        model.resize_token_embeddings(len(tok))  # new rows start at the mean embedding
    model.to(device)
    if settings.finetune == "lora":
        model = wrap_lora(model, settings.lora, sem_id)
    model.train()
    return model, tok, sem_id


def wrap_lora(model, opts, sem_id: int):
    """LoRA adapters plus a trainable [SEM] row of the input (and tied output) embedding."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                     target_modules=list(opts.target_modules), trainable_token_indices=[sem_id],
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d: %d trainable parameters", opts.r, trainable)
    return model


def plain_model(model):
    """A transformers model to save: a merged copy for peft models, else the model itself."""
    if hasattr(model, "merge_and_unload"):
        return copy.deepcopy(model).merge_and_unload()
    return model


def replace_dir(tmp: Path, target: Path) -> None:
    """Move folder ``tmp`` onto ``target``; the old one is removed only once the new is in place."""
    old = None
    if target.exists():
        old = target.with_name(f".{target.name}.old")
        shutil.rmtree(old, ignore_errors=True)
        os.replace(target, old)
    os.replace(tmp, target)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def save_checkpoint(model, tokenizer, head, out_dir: str | os.PathLike, state: dict) -> None:
    """Write the student (+ head) to ``out_dir`` atomically."""
    from safetensors.torch import save_file

    out = Path(out_dir)
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(dir=out.parent, prefix=f".{out.name}.tmp-"))
    try:
        plain_model(model).save_pretrained(tmp)
        tokenizer.save_pretrained(tmp)
        if head is not None:
            weights = {k: v.detach().float().cpu().contiguous() for k, v in head.state_dict().items()}
            save_file(weights, tmp / HEAD_WEIGHTS)
            write_json(tmp / HEAD_CONFIG, head.dims)
        write_json(tmp / STATE, state)
        replace_dir(tmp, out)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


def load_head(model_dir: str | os.PathLike):
    """The saved SemanticHead, or None when the run had no semantic loss."""
    from safetensors.torch import load_file

    from pst_distill.io import read_json
    from pst_distill.losses import SemanticHead

    folder = Path(model_dir)
    if not (folder / HEAD_WEIGHTS).exists():
        return None
    head = SemanticHead(**read_json(folder / HEAD_CONFIG))
    head.load_state_dict(load_file(folder / HEAD_WEIGHTS))
    return head.eval()
