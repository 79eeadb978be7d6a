"""Tokenisation of assembled sequences (formats.py segments) and batching for the trainer.

Each segment is tokenised on its own and the ids are concatenated, so the span of every
part is exact. The prompt segment is wrapped in the student's chat template (or
"Q: …\\nA: " without one), EOS closes the last segment, and the rationale alone is cut
from its right end when the sequence exceeds ``max_length``: the answer is never cut.

Two batch layouts with the same keys (:func:`collate`: one example per right-padded row;
:func:`collate_packed`: several examples per row, padding-free, ``position_ids``
restarting per example). Per-example fields ([SEM] position, embedding row) are indexed
by example ``k``; token fields carry ``seq_index`` (the example of each token, −1 on
padding), so pooling and the semantic target work the same way in both.
"""

from __future__ import annotations

import json
import logging
import math
from pathlib import Path
from dataclasses import dataclass
from typing import Iterable

import numpy as np

from pst_distill.formats import render_prompt
from pst_distill.io import atomic_path, content_hash
from pst_distill.train.losses import ANSWER, IGNORE, NO_LOSS, RATIONALE, SEM, THINK

log = logging.getLogger(__name__)
PART_OF_KIND = {"prompt": NO_LOSS, "control": NO_LOSS, "sem": NO_LOSS, "answer": ANSWER,
                "rationale": RATIONALE, "think_rationale": THINK, "think_answer": THINK}
SUPERVISED = ("answer", "rationale", "think_rationale", "think_answer")
CUTTABLE = ("rationale", "think_rationale")  # cut from the right when a sequence is too long


@dataclass
class Example:
    """One tokenised training sequence; ``parts`` per token, ``sem_pos`` −1 if no [SEM]."""

    input_ids: list[int]
    labels: list[int]
    parts: list[int]
    sem_pos: int = -1
    emb_row: int = -1
    truncated: bool = False
    row_id: str | None = None  # the question's id (step_by_step has two rows per question)

    def __len__(self) -> int:
        return len(self.input_ids)


def _segment_ids(tokenizer, kind: str, text: str, system: str | None = None) -> list[int]:
    if kind == "prompt":
        text = render_prompt(tokenizer, text, system)
    return list(tokenizer(text, add_special_tokens=False)["input_ids"])


def _truncate(pieces: list[tuple[str, list[int]]], max_length: int) -> tuple[list, bool]:
    excess = sum(len(ids) for _, ids in pieces) - max_length
    if excess <= 0:
        return pieces, False
    out = []
    for kind, ids in pieces:
        if kind in CUTTABLE and excess > 0:
            cut = min(excess, len(ids))
            ids, excess = ids[: len(ids) - cut], excess - cut
        out.append((kind, ids))
    return out, True


def encode_segments(segments: Iterable[dict], tokenizer, max_length: int,
                    label_sem: bool = False, system: str | None = None) -> Example | None:
    """Token ids, labels and part ids of one sequence; None if prompt + answer > max_length."""
    pieces = [(s["kind"], _segment_ids(tokenizer, s["kind"], s["text"], system)) for s in segments]
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
        supervised = kind in SUPERVISED or (kind == "sem" and label_sem)
        part = PART_OF_KIND[kind] if kind != "sem" or not label_sem else SEM
        ex.input_ids += ids
        ex.labels += ids if supervised else [IGNORE] * len(ids)
        ex.parts += [part] * len(ids)
    return ex


def encode_rows(rows: list[dict], tokenizer, max_length: int, label_sem: bool = False,
                system: str | None = None) -> tuple[list[Example], dict]:
    """Encode assembled rows; stats count dropped (prompt + answer too long) and truncated."""
    examples, dropped = [], 0
    for row in rows:
        ex = encode_segments(row["segments"], tokenizer, max_length, label_sem, system)
        if ex is None:
            dropped += 1
            continue
        emb = row.get("emb_row")
        ex.emb_row = -1 if emb is None else int(emb)
        ex.row_id = None if row.get("id") is None else str(row["id"])
        examples.append(ex)
    stats = {"sequences": len(examples), "dropped_too_long": dropped,
             "truncated_rationale": sum(e.truncated for e in examples)}
    if dropped:
        log.warning("dropped %d sequences whose prompt + answer exceed max_length %d",
                    dropped, max_length)
    return examples, stats


TOKENS_FORMAT = 1


def tokenizer_fingerprint(tokenizer) -> str:
    """What makes a tokenizer tokenise as it does: its vocabulary and rules (the fast
    tokenizer's JSON, added tokens included) and its chat template."""
    backend = getattr(tokenizer, "backend_tokenizer", None)
    spec = backend.to_str() if backend is not None else repr(sorted(tokenizer.get_vocab().items()))
    return content_hash(spec, getattr(tokenizer, "chat_template", None), length=32)


def encode_rows_cached(rows: list[dict], tokenizer, max_length: int, label_sem: bool,
                       system: str | None, cache_dir) -> tuple[list[Example], dict]:
    """:func:`encode_rows`, kept in ``cache_dir`` under a hash of everything that decides the
    result (the rows, the tokenizer, max_length, label_sem, the system turn), so the seeds of
    a method, a rerun and the benchmark tokenise its data once. ``cache_dir`` None: no cache.
    Stored as npz (no pickle) and JSON, written atomically."""
    if cache_dir is None:
        return encode_rows(rows, tokenizer, max_length, label_sem, system)
    key = content_hash(TOKENS_FORMAT, tokenizer_fingerprint(tokenizer), max_length, label_sem,
                       system, rows, length=32)
    path = Path(cache_dir) / f"{key}.npz"
    if path.exists():
        try:
            return _load_examples(path)
        except (OSError, ValueError, KeyError) as exc:
            log.warning("token cache %s unreadable (%s): tokenising again", path, exc)
    examples, stats = encode_rows(rows, tokenizer, max_length, label_sem, system)
    _save_examples(path, examples, stats)
    return examples, stats


def _save_examples(path: Path, examples: list[Example], stats: dict) -> None:
    arrays = {
        "lengths": np.array([len(e) for e in examples], dtype=np.int64),
        "input_ids": np.array([t for e in examples for t in e.input_ids], dtype=np.int64),
        "labels": np.array([t for e in examples for t in e.labels], dtype=np.int64),
        "parts": np.array([t for e in examples for t in e.parts], dtype=np.int64),
        "sem_pos": np.array([e.sem_pos for e in examples], dtype=np.int64),
        "emb_row": np.array([e.emb_row for e in examples], dtype=np.int64),
        "truncated": np.array([e.truncated for e in examples], dtype=bool),
        "meta": np.frombuffer(json.dumps({"row_ids": [e.row_id for e in examples],
                                          "stats": stats}).encode(), dtype=np.uint8)}
    with atomic_path(path) as tmp:
        with open(tmp, "wb") as fh:
            np.savez(fh, **arrays)


def _load_examples(path: Path) -> tuple[list[Example], dict]:
    with np.load(path, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    meta = json.loads(arrays.pop("meta").tobytes())
    ends = np.cumsum(arrays["lengths"])
    starts = ends - arrays["lengths"]
    examples = [Example(arrays["input_ids"][a:b].tolist(), arrays["labels"][a:b].tolist(),
                        arrays["parts"][a:b].tolist(), int(arrays["sem_pos"][i]),
                        int(arrays["emb_row"][i]), bool(arrays["truncated"][i]),
                        meta["row_ids"][i])
                for i, (a, b) in enumerate(zip(starts, ends))]
    return examples, meta["stats"]


def collate(examples: list[Example], pad_id: int, targets=None) -> dict:
    """Right-padded, one example per row: input_ids, attention_mask, labels, parts,
    position_ids, seq_index [B, T]; sem_pos, sem_flat, emb_row, seq_len [B]; and
    sem_target [B, D] when ``targets`` (the embedding matrix) is given."""
    return _layout([[e] for e in examples], pad_id, targets, padded=True)


def pack(examples: list[Example], pack_length: int) -> list[list[Example]]:
    """Rows of at most ``pack_length`` tokens, as few as fit and of near-equal length (so
    padding the shorter rows to the longest costs little): longest example first, each
    into the row with the fewest tokens; one more row while a row would overflow."""
    longest = max(len(e) for e in examples)
    if longest > pack_length:
        raise ValueError(f"a sequence of {longest} tokens does not fit pack_length {pack_length}")
    order = sorted(examples, key=len, reverse=True)
    n_rows = max(1, -(-sum(len(e) for e in examples) // pack_length))
    while True:
        rows, loads = [[] for _ in range(n_rows)], [0] * n_rows
        for ex in order:
            j = loads.index(min(loads))
            rows[j].append(ex)
            loads[j] += len(ex)
        if max(loads) <= pack_length:
            return rows
        n_rows += 1


def collate_packed(rows: list[list[Example]], pad_id: int, targets=None) -> dict:
    """Padding-free rows (only the shorter rows are right-padded): the keys of
    :func:`collate` without attention_mask. Attention must not cross examples: without an
    attention mask, transformers derives a block-diagonal mask from the restarting
    ``position_ids`` (sdpa/eager/flex) or varlen boundaries (flash_attention_2)."""
    return _layout(rows, pad_id, targets, padded=False)


def make_batch(examples: list[Example], pad_id: int, packing: bool = False,
               pack_length: int = 512, targets=None) -> dict:
    """One micro-batch in the layout ``packing`` asks for."""
    if packing:
        return collate_packed(pack(examples, pack_length), pad_id, targets)
    return collate(examples, pad_id, targets)


def batch_tokens(batch: dict) -> int:
    """Real (non-padding) tokens of a batch."""
    return int(batch["seq_len"].sum())


def _layout(rows: list[list[Example]], pad_id: int, targets, padded: bool) -> dict:
    import torch

    width = max(sum(len(e) for e in row) for row in rows)
    cols = {k: [] for k in ("input_ids", "labels", "parts", "position_ids", "seq_index")}
    sem_flat, k = [], 0
    for r, row in enumerate(rows):
        line = {key: [] for key in cols}
        for ex in row:
            start = r * width + len(line["input_ids"])
            sem_flat.append(-1 if ex.sem_pos < 0 else start + ex.sem_pos)
            line["input_ids"] += ex.input_ids
            # a row's first token is never a target: keep it so when examples share a row
            line["labels"] += [IGNORE] + ex.labels[1:]
            line["parts"] += ex.parts
            line["position_ids"] += list(range(len(ex)))
            line["seq_index"] += [k] * len(ex)
            k += 1
        pad = width - len(line["input_ids"])
        for key, value in (("input_ids", pad_id), ("labels", IGNORE), ("parts", NO_LOSS),
                           ("seq_index", -1)):
            cols[key].append(line[key] + [value] * pad)
        cols["position_ids"].append(line["position_ids"] + list(range(pad)))  # own segment
    examples = [e for row in rows for e in row]
    out = {key: torch.tensor(v, dtype=torch.long) for key, v in cols.items()}
    out["sem_flat"] = torch.tensor(sem_flat, dtype=torch.long)
    out["sem_pos"] = torch.tensor([e.sem_pos for e in examples], dtype=torch.long)
    out["emb_row"] = torch.tensor([e.emb_row for e in examples], dtype=torch.long)
    out["seq_len"] = torch.tensor([len(e) for e in examples], dtype=torch.long)
    if padded:
        out["attention_mask"] = (out["seq_index"] >= 0).long()
    if targets is not None:
        out["sem_target"] = gather_targets(targets, out["emb_row"])
    return out


def gather_targets(targets, emb_row):
    """[K, D] float32 rows of the embedding matrix ``targets`` (zeros where emb_row is −1)."""
    import torch

    table = torch.as_tensor(targets, dtype=torch.float32)
    rows = table[emb_row.clamp(min=0)]
    return rows * (emb_row >= 0).unsqueeze(-1).to(rows.dtype)


# ------------------------------------------------------------------ steps
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
