"""The student model: load it for training (full or LoRA), save and reload checkpoints.

A checkpoint folder holds the tokenizer (with [SEM] and any mode controls),
``semantic_head.safetensors`` + ``semantic_head.json`` when the run had a semantic loss,
``train_state.json``, and the weights: a plain transformers model (safetensors) for a full
finetune; for LoRA only the adapter (peft's ``adapter_model.safetensors``, with the trained
rows of the added tokens) plus ``base_model.json`` naming the base, ~20 MB instead of a
copy of the base model per run. :func:`pst_distill.models.load_causal_lm` loads either
kind (an adapter onto its base, merged). Folders are written beside the target and moved
into place, so a crash leaves the previous checkpoint whole.
"""

from __future__ import annotations

import logging
import os
import shutil
import tempfile
from pathlib import Path

from pst_distill.data import add_sem_token, add_special
from pst_distill.io import write_json
from pst_distill.models import BASE_REF, load_causal_lm, load_tokenizer

log = logging.getLogger(__name__)
HEAD_WEIGHTS, HEAD_CONFIG, STATE = "semantic_head.safetensors", "semantic_head.json", "train_state.json"


def load_student(settings, sem_token: str, device: str,
                 controls: dict[str, tuple[list[str], str]] | None = None):
    """(model in float32 on ``device``, tokenizer with [SEM] and a pad token, sem id).

    ``controls``: the adaptive student's mode controls, ``{mode: (special tokens, text)}``;
    each token is added and its input-embedding row starts at the mean embedding of
    ``text`` (the delimiter that follows it), so the two modes differ from the first step.
    """
    tok = load_tokenizer(settings.model, settings.revision, settings.trust_remote_code)
    sem_id = add_sem_token(tok, sem_token)
    control_ids = {mode: [add_special(tok, t) for t in tokens]
                   for mode, (tokens, _) in (controls or {}).items()}
    model, tok = load_causal_lm(settings.model, settings.revision, device, "float32",
                                settings.trust_remote_code, tokenizer=tok)
    for mode, ids in control_ids.items():
        init_rows(model, tok, ids, controls[mode][1])
    if settings.finetune == "lora":
        model = wrap_lora(model, settings.lora, [sem_id, *(i for ids in control_ids.values() for i in ids)])
    model.train()
    return model, tok, sem_id


def init_rows(model, tok, ids: list[int], text: str) -> None:
    """Input-embedding rows ``ids`` := the mean embedding of ``text``'s tokens."""
    import torch

    emb = model.get_input_embeddings().weight
    src = tok(text, add_special_tokens=False)["input_ids"]
    with torch.no_grad():
        emb[ids] = emb[src].mean(0).to(emb.dtype)


def wrap_lora(model, opts, token_ids: list[int]):
    """LoRA adapters plus trainable rows of the input (and tied output) embedding for the
    added tokens ``token_ids`` ([SEM], mode controls)."""
    from peft import LoraConfig, get_peft_model

    cfg = LoraConfig(r=opts.r, lora_alpha=opts.alpha, lora_dropout=opts.dropout,
                     target_modules=list(opts.target_modules), trainable_token_indices=token_ids,
                     task_type="CAUSAL_LM")
    model = get_peft_model(model, cfg)
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    log.info("LoRA r=%d: %d trainable parameters", opts.r, trainable)
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


def save_checkpoint(model, tokenizer, head, out_dir: str | os.PathLike, state: dict,
                    full_state: dict | None = None, base: dict | None = None) -> None:
    """Write the student (+ head) to ``out_dir`` atomically. ``full_state``: the gathered
    state dict of a sharded (FSDP) PSTModel (keys ``student.*``, ``head.*``), used in place
    of the model's own (sharded) tensors. ``base``: ``{model, revision,
    trust_remote_code}`` of the base a peft model's adapter is loaded onto."""
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
                write_json(tmp / BASE_REF, base)
            else:
                model.save_pretrained(tmp)
            head_state = None if head is None else head.state_dict()
        else:  # FSDP runs are full finetunes (config.py): no adapters to merge
            model.save_pretrained(tmp, state_dict=_sub_state(full_state, "student."))
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


def _sub_state(state: dict, prefix: str) -> dict:
    return {k[len(prefix):]: v for k, v in state.items() if k.startswith(prefix)}


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
