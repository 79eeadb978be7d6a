"""The training loss (docs/method.md) as pure functions on tensors.

    L = w_A · CE(answer tokens) + w_R · CE(rationale tokens) + w_S · CE([SEM] token) + λ · L_sem
        + w_T · CE(think-first tokens)     (adaptive only: its rationale-first half, plain CE)

Shapes: B rows, T tokens, V vocabulary, H hidden size, D embedding size, N rows that
carry a semantic target. ``parts`` [B, T] gives each *input* token's part:
``NO_LOSS`` (prompt, mode control, an unsupervised [SEM], padding), ``ANSWER``, ``RATIONALE``,
``SEM`` (a supervised [SEM] token: its own CE term, not part of the answer's) or ``THINK``
(rationale and answer of adaptive's think-first sequence); ``labels`` [B, T] are
the input ids with -100 where no loss is wanted. The shift (logits at t predict token
t + 1) happens here, once.

Reduction, and why it survives gradient accumulation: every mean is a mean over the
*effective* batch. Micro-batch functions return sums; the denominators
(:class:`Denominators`: answer tokens, rationale tokens, rows with a semantic target) are
counted once over the whole effective batch, before any forward pass, and every
micro-batch loss is its sums divided by those totals. Summing the micro-batch losses
gives the full-batch loss exactly, and their gradients the full-batch gradient. (A mean
of micro-batch means would weight a token of a short micro-batch more than one of a long
micro-batch.) The one exception is ``infonce``: its negatives are the other rows of the
same micro-batch, so it depends on how the effective batch is split.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Literal

import torch
import torch.nn.functional as F
from torch import Tensor

IGNORE = -100
NO_LOSS, ANSWER, RATIONALE, SEM, THINK = 0, 1, 2, 3, 4
CE_PARTS = (ANSWER, RATIONALE, SEM, THINK)  # the order of every CE-sums vector
SemLoss = Literal["cosine", "mse", "infonce"]
Pooling = Literal["sem_token", "rationale_mean"]


@dataclass(frozen=True)
class LossWeights:
    """w_A, w_R, λ, w_S, w_T; ``per_part`` averages each part on its own, ``joint`` all
    tokens together (plain LM loss over the completion when all CE weights are 1)."""

    w_answer: float = 1.0
    w_rationale: float = 1.0
    w_sem: float = 0.0
    reduction: Literal["per_part", "joint"] = "per_part"
    w_sem_token: float = 1.0
    w_think: float = 1.0


@dataclass(frozen=True)
class Denominators:
    """Token counts per part and rows with a semantic target, over the effective batch."""

    n_answer: float
    n_rationale: float
    n_sem: float = 0.0
    n_sem_token: float = 0.0
    n_think: float = 0.0

    def __add__(self, other: "Denominators") -> "Denominators":
        return Denominators(*(a + b for a, b in zip(self.as_list(), other.as_list())))

    def as_list(self) -> list[float]:
        return [self.n_answer, self.n_rationale, self.n_sem, self.n_sem_token, self.n_think]


def token_cross_entropy(logits: Tensor, labels: Tensor) -> Tensor:
    """Per-token CE [B, T-1] (float32) of ``logits`` [B, T, V] against ``labels`` [B, T];
    0 where the shifted label is IGNORE."""
    shift_logits = logits[:, :-1].float()
    shift_labels = labels[:, 1:]
    ce = F.cross_entropy(shift_logits.reshape(-1, shift_logits.size(-1)),
                         shift_labels.reshape(-1), ignore_index=IGNORE, reduction="none")
    return ce.view_as(shift_labels)


def _part_masks(labels: Tensor, parts: Tensor) -> tuple[Tensor, ...]:
    """Bool [B, T-1] per part of :data:`CE_PARTS`: the next token is supervised and of it."""
    supervised = labels[:, 1:] != IGNORE
    shifted = parts[:, 1:]
    return tuple(supervised & (shifted == p) for p in CE_PARTS)


def part_ce_sums(logits: Tensor, labels: Tensor, parts: Tensor) -> Tensor:
    """Sum of token CE per part: [4] = (answer, rationale, [SEM] token, think-first)."""
    ce = token_cross_entropy(logits, labels)
    return torch.stack([(ce * m).sum() for m in _part_masks(labels, parts)])


def supervised_positions(labels: Tensor) -> Tensor:
    """Bool [B, T]: positions whose logits predict a supervised next token."""
    mask = torch.zeros_like(labels, dtype=torch.bool)
    mask[:, :-1] = labels[:, 1:] != IGNORE
    return mask


def part_ce_sums_flat(logits: Tensor, targets: Tensor, parts: Tensor) -> Tensor:
    """:func:`part_ce_sums` on supervised positions only (the trainer skips the LM head
    elsewhere): ``logits`` [M, V], ``targets`` [M] next-token ids, ``parts`` [M] the
    target tokens' parts, all selected by :func:`supervised_positions`."""
    ce = F.cross_entropy(logits.float(), targets, reduction="none")
    return ce_sums_by_part(ce, parts)


def ce_sums_by_part(ce: Tensor, parts: Tensor) -> Tensor:
    """[4] sums of per-token CE ``ce`` [M] grouped by the target parts ``parts`` [M]."""
    return torch.stack([(ce * (parts == p)).sum() for p in CE_PARTS])


def select_supervised(labels: Tensor, parts: Tensor) -> tuple[Tensor, Tensor, Tensor]:
    """(position mask [B, T], targets [M], target parts [M]) for :func:`part_ce_sums_flat`."""
    mask = supervised_positions(labels)
    return mask, labels[:, 1:][mask[:, :-1]], parts[:, 1:][mask[:, :-1]]


def count_parts(labels: Tensor, parts: Tensor, sem_valid: Tensor | None = None) -> Denominators:
    """The :class:`Denominators` of one (micro-)batch; add them up over the effective batch."""
    answer, rationale, sem_token, think = _part_masks(labels, parts)
    n_sem = float(sem_valid.sum()) if sem_valid is not None else 0.0
    return Denominators(float(answer.sum()), float(rationale.sum()), n_sem, float(sem_token.sum()),
                        float(think.sum()))


def semantic_loss(pred: Tensor, target: Tensor, kind: SemLoss = "cosine",
                  temperature: float = 0.05) -> Tensor:
    """Per-row loss [N] between student vectors ``pred`` [N, D] and targets [N, D].

    cosine: 1 − cos(s, t); mse: ‖ŝ − t̂‖² on L2-normalised vectors (= 2 − 2 cos, summed over
    D, so its scale is comparable to cosine's); infonce: cross-entropy of row i against
    all targets of the batch, logits cos(s_i, t_j) / τ, the right answer j = i.
    """
    pred, target = pred.float(), target.float()
    if kind == "cosine":
        return 1.0 - F.cosine_similarity(pred, target, dim=-1)
    s, t = F.normalize(pred, dim=-1), F.normalize(target, dim=-1)
    if kind == "mse":
        return ((s - t) ** 2).sum(-1)
    if kind == "infonce":
        logits = s @ t.T / temperature
        return F.cross_entropy(logits, torch.arange(len(s), device=s.device), reduction="none")
    raise ValueError(f"unknown semantic loss {kind!r}; allowed: cosine, mse, infonce")


def pool_hidden(hidden: Tensor, pooling: Pooling, sem_pos: Tensor, parts: Tensor) -> Tensor:
    """[B, H] from final hidden states [B, T, H]: the state at the [SEM] position
    (``sem_pos`` [B], −1 where absent, giving zeros) or the mean over rationale positions."""
    if pooling == "sem_token":
        idx = sem_pos.clamp(min=0).to(hidden.device)
        picked = hidden[torch.arange(hidden.size(0), device=hidden.device), idx]
        return picked * (sem_pos >= 0).to(hidden.device, hidden.dtype).unsqueeze(-1)
    if pooling == "rationale_mean":
        mask = (parts == RATIONALE).to(hidden.device, hidden.dtype).unsqueeze(-1)
        return (hidden * mask).sum(1) / mask.sum(1).clamp(min=1.0)
    raise ValueError(f"unknown pooling {pooling!r}; allowed: sem_token, rationale_mean")


def sem_rows(pooling: Pooling, sem_pos: Tensor, parts: Tensor, emb_row: Tensor) -> Tensor:
    """Bool [B]: rows that have a target and something to pool."""
    has_target = emb_row >= 0
    if pooling == "sem_token":
        return has_target & (sem_pos >= 0)
    return has_target & (parts == RATIONALE).any(1)


def combine(ce_sums: Tensor, sem_sum: Tensor | float, den: Denominators,
            w: LossWeights) -> tuple[Tensor, dict[str, float]]:
    """Scalar loss of one micro-batch, normalised by effective-batch ``den``, and its parts.

    ``ce_sums`` [4] from :func:`part_ce_sums` (shorter vectors, without the [SEM] or think
    parts, are accepted), ``sem_sum`` the summed :func:`semantic_loss`. The parts are detached 0-d
    tensors (no device sync here; ``float()`` them to log).
    """
    s_a, s_r = ce_sums[0], ce_sums[1]
    s_s = ce_sums[2] if len(ce_sums) > 2 else torch.zeros_like(s_a)
    s_t = ce_sums[3] if len(ce_sums) > 3 else torch.zeros_like(s_a)
    ce_a = s_a / max(den.n_answer, 1.0)
    ce_r = s_r / max(den.n_rationale, 1.0)
    ce_s = s_s / max(den.n_sem_token, 1.0)
    ce_t = s_t / max(den.n_think, 1.0)
    if w.reduction == "joint":
        ce = (w.w_answer * s_a + w.w_rationale * s_r + w.w_sem_token * s_s + w.w_think * s_t) / max(
            den.n_answer + den.n_rationale + den.n_sem_token + den.n_think, 1.0)
    else:
        ce = w.w_answer * ce_a + w.w_rationale * ce_r + w.w_sem_token * ce_s
        if den.n_think:  # only adaptive has think-first tokens; others keep their exact sum
            ce = ce + w.w_think * ce_t
    sem = sem_sum / max(den.n_sem, 1.0)
    loss = ce + w.w_sem * sem if w.w_sem else ce
    sem = sem if isinstance(sem, Tensor) else torch.tensor(float(sem), device=ce_a.device)
    parts = {"ce_answer": ce_a.detach(), "ce_rationale": ce_r.detach(),
             "ce_sem_token": ce_s.detach(), "ce_think": ce_t.detach(), "sem": sem.detach()}
    return loss, parts


def pool_flat(hidden: Tensor, pooling: Pooling, sem_flat: Tensor, parts: Tensor,
              seq_index: Tensor, n_seq: int) -> Tensor:
    """[K, H] per example from flat final hidden states [N, H] of any layout (padded rows
    or packed rows, flattened): the state at each example's flat [SEM] index ``sem_flat``
    [K] (−1 where absent: zeros) or the mean over its rationale positions, grouped by
    ``seq_index`` [N] (the example of each token, −1 on padding)."""
    if pooling == "sem_token":
        picked = hidden[sem_flat.clamp(min=0)]
        return picked * (sem_flat >= 0).to(hidden.dtype).unsqueeze(-1)
    if pooling == "rationale_mean":
        keep = (parts == RATIONALE) & (seq_index >= 0)  # summed in float32 (bf16 runs too)
        sums = hidden.new_zeros(n_seq, hidden.size(-1), dtype=torch.float32).index_add(
            0, seq_index[keep], hidden[keep].float())
        counts = torch.bincount(seq_index[keep], minlength=n_seq).to(torch.float32)
        return sums / counts.clamp(min=1.0).unsqueeze(-1)
    raise ValueError(f"unknown pooling {pooling!r}; allowed: sem_token, rationale_mean")


def sem_rows_flat(pooling: Pooling, sem_flat: Tensor, parts: Tensor, seq_index: Tensor,
                  emb_row: Tensor) -> Tensor:
    """Bool [K]: examples that have a target and something to pool (:func:`pool_flat`)."""
    has_target = emb_row >= 0
    if pooling == "sem_token":
        return has_target & (sem_flat >= 0)
    has_rationale = torch.zeros_like(has_target)
    rows = seq_index[(parts == RATIONALE) & (seq_index >= 0)]
    has_rationale[rows] = True
    return has_target & has_rationale
