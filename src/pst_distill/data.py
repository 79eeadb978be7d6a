"""Tokenisation of assembled sequences (formats.py segments) and batching for the trainer.

Each segment is tokenised on its own and the ids are concatenated, so the span of every
part is exact. The prompt segment is wrapped in the student's chat template (or
"Q: …\\nA: " without one), EOS closes the last segment, and the rationale alone is cut
from its right end when the sequence exceeds ``max_length``: the answer is never cut.
"""

from __future__ import annotations

import inspect
import logging
from dataclasses import dataclass
from typing import Iterable

from pst_distill.losses import ANSWER, IGNORE, NO_LOSS, RATIONALE

log = logging.getLogger(__name__)
PART_OF_KIND = {"prompt": NO_LOSS, "sem": NO_LOSS, "answer": ANSWER, "rationale": RATIONALE}


def render_prompt(tokenizer, text: str) -> str:
    """The user turn as the student sees it, identical at training and inference."""
    if getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template([{"role": "user", "content": text}],
                                             add_generation_prompt=True, tokenize=False)
    return f"Q: {text}\nA: "


def add_sem_token(tokenizer, sem_token: str) -> int:
    """Register [SEM] as a special token (idempotent); return its id."""
    if sem_token not in tokenizer.get_vocab():
        # keep the tokenizer's other extra special tokens (kwarg renamed in transformers 5)
        names = inspect.signature(tokenizer.add_special_tokens).parameters
        keep = {k: False for k in ("replace_extra_special_tokens",
                                   "replace_additional_special_tokens") if k in names}
        tokenizer.add_special_tokens({"additional_special_tokens": [sem_token]}, **keep)
    ids = tokenizer(sem_token, add_special_tokens=False)["input_ids"]
    if len(ids) != 1:
        raise ValueError(f"sem token {sem_token!r} does not tokenise to one id: {ids}")
    return ids[0]


@dataclass
class Example:
    """One tokenised training sequence; ``parts`` per token, ``sem_pos`` −1 if no [SEM]."""

    input_ids: list[int]
    labels: list[int]
    parts: list[int]
    sem_pos: int = -1
    emb_row: int = -1
    truncated: bool = False

    def __len__(self) -> int:
        return len(self.input_ids)


def _segment_ids(tokenizer, kind: str, text: str) -> list[int]:
    if kind == "prompt":
        text = render_prompt(tokenizer, text)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate(pieces: list[tuple[str, list[int]]], max_length: int) -> tuple[list, bool]:
    excess = sum(len(ids) for _, ids in pieces) - max_length
    if excess <= 0:
        return pieces, False
    out = []
    for kind, ids in pieces:
        if kind == "rationale" and excess > 0:
            cut = min(excess, len(ids))
            ids, excess = ids[: len(ids) - cut], excess - cut
        out.append((kind, ids))
    return out, True


def encode_segments(segments: Iterable[dict], tokenizer, max_length: int,
                    label_sem: bool = False) -> Example | None:
    """Token ids, labels and part ids of one sequence; None if prompt + answer > max_length."""
    pieces = [(s["kind"], _segment_ids(tokenizer, s["kind"], s["text"])) for s in segments]
    if not pieces or pieces[0][0] != "prompt":
        raise ValueError("a training sequence starts with its prompt segment")
    kind, last = pieces[-1]
    pieces[-1] = (kind, last + [tokenizer.eos_token_id])
    pieces, truncated = _truncate(pieces, max_length)
    if sum(len(ids) for _, ids in pieces) > max_length:
        return None
    ex = Example([], [], [], truncated=truncated)
    for kind, ids in pieces:
        if kind == "sem":
            ex.sem_pos = len(ex.input_ids)
        supervised = kind in ("answer", "rationale") or (kind == "sem" and label_sem)
        part = PART_OF_KIND[kind] if kind != "sem" or not label_sem else ANSWER
        ex.input_ids += ids
        ex.labels += ids if supervised else [IGNORE] * len(ids)
        ex.parts += [part] * len(ids)
    return ex


def encode_rows(rows: list[dict], tokenizer, max_length: int,
                label_sem: bool = False) -> tuple[list[Example], dict]:
    """Encode assembled rows; stats count dropped (prompt + answer too long) and truncated."""
    examples, dropped = [], 0
    for row in rows:
        ex = encode_segments(row["segments"], tokenizer, max_length, label_sem)
        if ex is None:
            dropped += 1
            continue
        emb = row.get("emb_row")
        ex.emb_row = -1 if emb is None else int(emb)
        examples.append(ex)
    stats = {"sequences": len(examples), "dropped_too_long": dropped,
             "truncated_rationale": sum(e.truncated for e in examples)}
    if dropped:
        log.warning("dropped %d sequences whose prompt + answer exceed max_length %d",
                    dropped, max_length)
    return examples, stats


def collate(examples: list[Example], pad_id: int) -> dict:
    """Right-padded tensors: input_ids, attention_mask, labels, parts [B, T]; sem_pos,
    emb_row [B]."""
    import torch

    width = max(len(e) for e in examples)

    def pad(seqs, value):
        return torch.tensor([s + [value] * (width - len(s)) for s in seqs], dtype=torch.long)

    return {
        "input_ids": pad([e.input_ids for e in examples], pad_id),
        "attention_mask": pad([[1] * len(e) for e in examples], 0),
        "labels": pad([e.labels for e in examples], IGNORE),
        "parts": pad([e.parts for e in examples], NO_LOSS),
        "sem_pos": torch.tensor([e.sem_pos for e in examples], dtype=torch.long),
        "emb_row": torch.tensor([e.emb_row for e in examples], dtype=torch.long),
    }
