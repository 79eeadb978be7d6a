"""Loss properties: zero on identical vectors, masking, accumulation, InfoNCE, gradients."""

import math

import pytest
import torch
import torch.nn.functional as F

from pst_distill.train import losses
from pst_distill.train.model import SemanticHead
from pst_distill.train.losses import ANSWER, Denominators, IGNORE, LossWeights, NO_LOSS, RATIONALE

B, T, V = 4, 9, 11


def batch(seed=0):
    g = torch.Generator().manual_seed(seed)
    logits = torch.randn(B, T, V, generator=g)
    ids = torch.randint(0, V, (B, T), generator=g)
    parts = torch.full((B, T), NO_LOSS)
    parts[:, 3:6], parts[:, 6:] = ANSWER, RATIONALE  # prompt 0..2
    parts[1, 7:] = NO_LOSS  # a shorter row: padding
    labels = torch.where(parts == NO_LOSS, torch.full_like(ids, IGNORE), ids)
    return logits, labels, parts


def full_loss(logits, labels, parts, w, sem_sum=0.0, n_sem=0.0):
    den = losses.count_parts(labels, parts)
    den = Denominators(den.n_answer, den.n_rationale, n_sem)
    return losses.combine(losses.part_ce_sums(logits, labels, parts), sem_sum, den, w)[0]


@pytest.mark.parametrize("kind", ["cosine", "mse"])
def test_semantic_loss_zero_for_identical_vectors(kind):
    v = torch.randn(5, 16)
    assert torch.allclose(losses.semantic_loss(v, v, kind), torch.zeros(5), atol=1e-6)
    # and positive for different ones
    assert (losses.semantic_loss(v, torch.randn(5, 16), kind) > 0).all()


def test_mse_on_normalised_vectors_is_two_minus_two_cos():
    s, t = torch.randn(3, 8), torch.randn(3, 8)
    cos = F.cosine_similarity(s, t, dim=-1)
    assert torch.allclose(losses.semantic_loss(s, t, "mse"), 2 - 2 * cos, atol=1e-5)
    assert torch.allclose(losses.semantic_loss(3 * s, t, "mse"), 2 - 2 * cos, atol=1e-5)


def test_per_part_ce_is_the_mean_over_that_part():
    logits, labels, parts = batch()
    ce = F.cross_entropy(logits[:, :-1].reshape(-1, V), labels[:, 1:].reshape(-1),
                         ignore_index=IGNORE, reduction="none").view(B, T - 1)
    ans = (parts[:, 1:] == ANSWER) & (labels[:, 1:] != IGNORE)
    rat = (parts[:, 1:] == RATIONALE) & (labels[:, 1:] != IGNORE)
    want = 1.0 * ce[ans].mean() + 0.1 * ce[rat].mean()
    got = full_loss(logits, labels, parts, LossWeights(1.0, 0.1))
    assert torch.allclose(got, want, atol=1e-5)
    joint = full_loss(logits, labels, parts, LossWeights(1.0, 1.0, reduction="joint"))
    assert torch.allclose(joint, ce[ans | rat].mean(), atol=1e-5)


def test_question_tokens_are_masked():
    logits, labels, parts = batch()
    w = LossWeights(1.0, 0.5)
    base = full_loss(logits, labels, parts, w)
    changed = logits.clone()
    changed[:, :2] = torch.randn(B, 2, V) * 50  # logits at prompt positions 0, 1 predict prompt tokens
    assert torch.equal(full_loss(changed, labels, parts, w), base)
    changed[:, 2] += 50 * torch.randn(B, V)  # position 2 predicts the first answer token
    assert not torch.allclose(full_loss(changed, labels, parts, w), base)


def test_flat_selection_equals_full_ce():
    logits, labels, parts = batch(3)
    mask, targets, tparts = losses.select_supervised(labels, parts)
    flat = losses.part_ce_sums_flat(logits[mask], targets, tparts)
    assert torch.allclose(flat, losses.part_ce_sums(logits, labels, parts), atol=1e-5)


@pytest.mark.parametrize("reduction", ["per_part", "joint"])
def test_accumulation_over_two_micro_batches_equals_full_batch(reduction):
    logits, labels, parts = batch(1)
    sem = losses.semantic_loss(torch.randn(B, 6), torch.randn(B, 6), "cosine")
    w = LossWeights(1.0, 0.1, 0.7, reduction)
    full = full_loss(logits, labels, parts, w, sem.sum(), float(B))
    halves = [slice(0, 1), slice(1, B)]  # unequal sizes: mean of means would differ
    den = sum((losses.count_parts(labels[h], parts[h], torch.ones(h.stop - h.start)) for h in halves),
              Denominators(0, 0, 0))
    acc = sum(losses.combine(losses.part_ce_sums(logits[h], labels[h], parts[h]), sem[h].sum(),
                             den, w)[0] for h in halves)
    assert torch.allclose(acc, full, atol=1e-5)
    mean_of_means = sum(full_loss(logits[h], labels[h], parts[h], w, sem[h].sum(), h.stop - h.start)
                        for h in halves) / 2
    assert not torch.allclose(mean_of_means, full, atol=1e-4)


def test_infonce_matches_hand_computed_value():
    s = torch.tensor([[1.0, 0.0], [0.0, 2.0]])
    t = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    tau = 0.5
    # normalised: s = [1,0], [0,1]; t = [1,0], [.7071,.7071]
    c = 1 / math.sqrt(2)
    row0 = -math.log(math.exp(1 / tau) / (math.exp(1 / tau) + math.exp(c / tau)))
    row1 = -math.log(math.exp(c / tau) / (math.exp(0 / tau) + math.exp(c / tau)))
    got = losses.semantic_loss(s, t, "infonce", temperature=tau)
    assert torch.allclose(got, torch.tensor([row0, row1]), atol=1e-5)


def test_pooling_picks_sem_state_and_rationale_mean():
    hidden = torch.arange(2 * 4 * 3, dtype=torch.float32).view(2, 4, 3)
    parts = torch.tensor([[0, 1, 2, 2], [0, 1, 1, 2]])
    sem_pos = torch.tensor([2, -1])
    sem = losses.pool_hidden(hidden, "sem_token", sem_pos, parts)
    assert torch.equal(sem[0], hidden[0, 2]) and torch.equal(sem[1], torch.zeros(3))
    mean = losses.pool_hidden(hidden, "rationale_mean", sem_pos, parts)
    assert torch.allclose(mean[0], hidden[0, 2:].mean(0)) and torch.equal(mean[1], hidden[1, 3])
    assert losses.sem_rows("sem_token", sem_pos, parts, torch.tensor([0, 1])).tolist() == [True, False]


@pytest.mark.parametrize("kind", ["cosine", "mse", "infonce"])
def test_gradient_flows_to_the_head_and_hidden_state(kind):
    torch.manual_seed(0)
    head = SemanticHead(8, 16, 5)
    hidden = torch.randn(3, 4, 8, requires_grad=True)
    parts = torch.tensor([[0, 1, 2, 2]] * 3)
    pooled = losses.pool_hidden(hidden, "sem_token", torch.tensor([1, 2, 3]), parts)
    loss = losses.semantic_loss(head(pooled), torch.randn(3, 5), kind).sum()
    loss.backward()
    assert all(p.grad is not None and p.grad.abs().sum() > 0 for p in head.parameters())
    assert hidden.grad[:, 1:].abs().sum() > 0 and hidden.grad[0, 0].abs().sum() == 0


def test_zero_semantic_weight_ignores_semantic_term():
    logits, labels, parts = batch()
    w = LossWeights(1.0, 1.0, 0.0)
    assert torch.equal(full_loss(logits, labels, parts, w, torch.tensor(float("nan")), 1.0),
                       full_loss(logits, labels, parts, w))


# --- the supervised [SEM] token as its own part; pooling on flat (packed) layouts ---------
def test_supervised_sem_token_has_its_own_ce_sum_and_weight():
    logits, labels, parts = batch(4)
    parts[0, 6] = losses.SEM  # a labelled [SEM] between answer and rationale
    sums = losses.part_ce_sums(logits, labels, parts)
    assert sums.shape == (4,) and sums[2] > 0 and sums[3] == 0
    den = losses.count_parts(labels, parts)
    assert den.n_sem_token == 1
    ce = F.cross_entropy(logits[0, 5], labels[0, 6])  # position 5 predicts the [SEM] token
    assert torch.allclose(sums[2], ce, atol=1e-5)
    w = LossWeights(1.0, 0.1, 0.0, w_sem_token=0.5)
    loss, parts_out = losses.combine(sums, 0.0, den, w)
    want = sums[0] / den.n_answer + 0.1 * sums[1] / den.n_rationale + 0.5 * sums[2]
    assert torch.allclose(loss, want, atol=1e-5) and torch.allclose(parts_out["ce_sem_token"], ce)
    joint = losses.combine(sums, 0.0, den, LossWeights(reduction="joint"))[0]
    assert torch.allclose(joint, sums.sum() / (den.n_answer + den.n_rationale + 1), atol=1e-5)


@pytest.mark.parametrize("pooling", ["sem_token", "rationale_mean"])
def test_flat_pooling_equals_row_pooling(pooling):
    hidden = torch.randn(2, 5, 3)
    parts = torch.tensor([[0, 1, 2, 2, 0], [0, 1, 1, 2, 0]])
    sem_pos = torch.tensor([2, -1])
    seq_index = torch.tensor([[0, 0, 0, 0, -1], [1, 1, 1, 1, 1]])  # row 0 padded at the end
    sem_flat = torch.where(sem_pos >= 0, sem_pos + torch.arange(2) * 5, sem_pos)
    emb_row = torch.tensor([0, 1])
    flat = losses.pool_flat(hidden.reshape(-1, 3), pooling, sem_flat, parts.reshape(-1),
                            seq_index.reshape(-1), 2)
    parts_rows = parts.masked_fill(seq_index < 0, 0)
    assert torch.allclose(flat, losses.pool_hidden(hidden, pooling, sem_pos, parts_rows), atol=1e-6)
    assert torch.equal(losses.sem_rows_flat(pooling, sem_flat, parts.reshape(-1), seq_index.reshape(-1), emb_row),
                       losses.sem_rows(pooling, sem_pos, parts_rows, emb_row))


def test_flat_pooling_separates_examples_packed_in_one_row():
    hidden = torch.arange(7 * 2, dtype=torch.float32).view(7, 2)  # one packed row, flattened
    parts = torch.tensor([0, 1, 2, 2, 0, 2, 2])
    seq_index = torch.tensor([0, 0, 0, 0, 1, 1, 1])
    mean = losses.pool_flat(hidden, "rationale_mean", torch.tensor([-1, -1]), parts, seq_index, 2)
    assert torch.allclose(mean, torch.stack([hidden[2:4].mean(0), hidden[5:7].mean(0)]))
    sem = losses.pool_flat(hidden, "sem_token", torch.tensor([1, 4]), parts, seq_index, 2)
    assert torch.equal(sem, hidden[[1, 4]])


def test_think_part_is_its_own_plain_ce_and_absent_elsewhere():
    logits, labels, parts = batch(4)
    base_sums, base_den = losses.part_ce_sums(logits, labels, parts), losses.count_parts(labels, parts)
    w = LossWeights(1.0, 0.1, 0.0, w_think=0.7)
    base_loss, base_parts = losses.combine(base_sums, 0.0, base_den, w)
    assert base_den.n_think == 0 and base_parts["ce_think"] == 0
    # without think tokens the loss is exactly the one without the term
    assert torch.equal(base_loss, losses.combine(base_sums, 0.0, base_den, LossWeights(1.0, 0.1, 0.0))[0])
    think = parts.clone()
    think[1][parts[1] != losses.NO_LOSS] = losses.THINK  # row 1 becomes a think-first sequence
    sums, den = losses.part_ce_sums(logits, labels, think), losses.count_parts(labels, think)
    ce = losses.token_cross_entropy(logits, labels)
    mask = (labels[:, 1:] != losses.IGNORE) & (think[:, 1:] == losses.THINK)
    assert den.n_think == float(mask.sum()) > 0
    assert torch.allclose(sums[3], (ce * mask).sum())
    loss, out = losses.combine(sums, 0.0, den, w)
    want = sums[0] / den.n_answer + 0.1 * sums[1] / den.n_rationale + 0.7 * sums[3] / den.n_think
    assert torch.allclose(loss, want) and torch.allclose(out["ce_think"], sums[3] / den.n_think)
