"""Helpers for the student tests: a tiny random Llama with the SmolLM2 tokenizer and
assembled rows built with formats.training_sequences (the assemble stage's contract)."""

from __future__ import annotations

import numpy as np

from pst_distill.config.sections import parse
from pst_distill.config.common import FormatConfig
from pst_distill.formats import training_sequences

FMT = FormatConfig()
D_EMBED = 16


def tiny_model_dir(path, seed: int = 0) -> str:
    """Save a 2-layer, 64-wide random LlamaForCausalLM + the SmolLM2 tokenizer to ``path``."""
    import torch
    from transformers import AutoTokenizer, LlamaConfig, LlamaForCausalLM

    from pst_distill.models import resolve_model

    tok = AutoTokenizer.from_pretrained(resolve_model("smollm2-135m-instruct"))
    torch.manual_seed(seed)
    cfg = LlamaConfig(vocab_size=len(tok), hidden_size=64, intermediate_size=128,
                      num_hidden_layers=2, num_attention_heads=4, num_key_value_heads=2,
                      max_position_embeddings=1024, tie_word_embeddings=True,
                      bos_token_id=tok.bos_token_id, eos_token_id=tok.eos_token_id,
                      pad_token_id=tok.pad_token_id)
    LlamaForCausalLM(cfg).save_pretrained(path)
    tok.save_pretrained(path)
    return str(path)


def items(n: int = 8, task: str = "last_letter_concatenation") -> list[dict]:
    from pst_distill.config.prepare import TaskSpec
    from pst_distill.tasks import build_task

    spec = TaskSpec(name=task, n=n, options={"k": 2})
    return build_task(spec, 0)


def assembled_rows(method: str, its: list[dict]) -> list[dict]:
    rows = []
    for i, it in enumerate(its):
        for seq in training_sequences(method, it["question"], it["answer"],
                                      it["reference_rationale"], FMT):
            rows.append({"id": it["id"], "key": it["id"], "task": it["task"], "method": method,
                         "answer": it["answer"], "answer_type": it["answer_type"], "emb_row": i,
                         "segments": [s.as_dict() for s in seq]})
    return rows


def embeddings(n: int, seed: int = 0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, D_EMBED)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


def settings(model_dir: str, method: str = "pst", **over):
    defaults = {"model": model_dir, "steps": 3, "batch_size": 2, "lr": 1e-2, "save_every": 2,
                "max_length": 128, "finetune": "full", "cpu_bf16": False, "warmup_steps": 0,
                "schedule": "constant"}
    method_over = over.pop("method_over", {})
    sem = {"hidden": 32, **over.pop("sem", {})}
    defaults.update(over)
    raw = {"defaults": defaults, "sem": sem, "methods": {method: method_over}}
    return parse("train", raw).methods[method]
