"""Padding-free packing on the real SmolLM2-135M (fp32, CPU): a packed micro-batch gives
every loss part and every gradient of the same examples unpacked, and a packed batch whose
attention crosses examples does not (the check that the equality is not vacuous)."""

import pytest
import torch
from student_fixtures import FMT, assembled_rows, embeddings, items, settings

from pst_distill.train import loop, losses
from pst_distill.train.data import Example, collate, collate_packed, encode_rows, pack
from pst_distill.train.model import build_pst_model

N = 4


def synthetic(lengths, sem_at=2):
    """Examples of the given lengths: prompt of 2, then answer; [SEM] at ``sem_at``."""
    out = []
    for k, n in enumerate(lengths):
        ids = [100 * (k + 1) + i for i in range(n)]
        parts = [losses.NO_LOSS] * 2 + [losses.ANSWER] * (n - 2)
        labels = [losses.IGNORE] * 2 + ids[2:]
        out.append(Example(ids, labels, parts, sem_pos=sem_at if n > sem_at else -1, emb_row=k))
    return out


def test_pack_fills_few_rows_of_near_equal_length_and_keeps_every_example():
    examples = synthetic([9, 3, 7, 5, 5, 2, 8])
    rows = pack(examples, 16)
    assert len(rows) == 3  # 39 tokens need at least 3 rows of 16
    assert sorted(id(e) for r in rows for e in r) == sorted(id(e) for e in examples)
    loads = [sum(len(e) for e in r) for r in rows]
    assert max(loads) <= 16 and max(loads) - min(loads) <= 9
    with pytest.raises(ValueError, match="does not fit pack_length 8"):
        pack(examples, 8)


def test_collate_packed_restarts_positions_and_indexes_examples():
    examples = synthetic([4, 3, 5])
    b = collate_packed([[examples[0], examples[1]], [examples[2]]], pad_id=0)
    assert b["input_ids"].shape == (2, 7) and "attention_mask" not in b
    assert b["position_ids"].tolist() == [[0, 1, 2, 3, 0, 1, 2], [0, 1, 2, 3, 4, 0, 1]]
    assert b["seq_index"].tolist() == [[0, 0, 0, 0, 1, 1, 1], [2, 2, 2, 2, 2, -1, -1]]
    assert b["sem_flat"].tolist() == [2, 6, 9] and b["seq_len"].tolist() == [4, 3, 5]
    assert b["labels"][0, 4] == losses.IGNORE  # the 2nd example's first token: no target
    padded = collate(examples, pad_id=0)
    assert padded["sem_flat"].tolist() == [2, 7, 12] and padded["attention_mask"].sum() == 12
    assert loop.denominators([b], _settings()) == loop.denominators([padded], _settings())


def _settings():
    return settings("unused", "answer_only")


@pytest.fixture(scope="module")
def setup():
    s = settings("smollm2-135m-instruct", "pst", max_length=160, packing=True, pack_length=192,
                 sem={"hidden": 32})
    torch.manual_seed(0)
    pst, tok, _ = build_pst_model(s, FMT.sem_token, "cpu", 16)
    examples, _ = encode_rows(assembled_rows("pst", items(N)), tok, s.max_length, s.label_sem_token)
    return s, pst, tok, examples, torch.from_numpy(embeddings(N))


def loss_and_grads(pst, batch, s):
    pst.zero_grad(set_to_none=True)
    den = loop.denominators([batch], s)
    out = pst(batch)
    loss, parts = losses.combine(out["ce"], out["sem"], den, loop.loss_weights(s))
    loss.backward()
    grads = {n: p.grad.detach().clone() for n, p in pst.named_parameters() if p.grad is not None}
    return out, loss.detach(), den, grads


@pytest.mark.model
def test_packed_rows_hold_several_examples_with_restarting_positions(setup):
    s, _, tok, examples, targets = setup
    rows = pack(examples, s.pack_length)
    assert len(rows) < len(examples) and max(len(r) for r in rows) >= 2
    b = collate_packed(rows, tok.pad_token_id, targets)
    assert "attention_mask" not in b and b["input_ids"].shape[0] == len(rows)
    packed = [e for r in rows for e in r]
    for k, ex in enumerate(packed):
        where = (b["seq_index"] == k).nonzero()
        r, start = int(where[0, 0]), int(where[0, 1])
        assert b["position_ids"][r, start:start + len(ex)].tolist() == list(range(len(ex)))
        assert b["input_ids"].view(-1)[b["sem_flat"][k]] == tok.convert_tokens_to_ids(FMT.sem_token)
        assert b["labels"][r, start] == losses.IGNORE  # never a target across examples


@pytest.mark.model
def test_packed_batch_equals_unpacked_in_every_loss_part_and_gradient(setup):
    s, pst, tok, examples, targets = setup
    rows = pack(examples, s.pack_length)
    order = [e for r in rows for e in r]  # same example order: same InfoNCE/semantic rows
    padded = collate(order, tok.pad_token_id, targets)
    packed = collate_packed(rows, tok.pad_token_id, targets)
    out_u, loss_u, den_u, grads_u = loss_and_grads(pst, padded, s)
    out_p, loss_p, den_p, grads_p = loss_and_grads(pst, packed, s)
    assert den_u == den_p and den_u.n_sem_token == N and den_u.n_sem == N
    assert (out_u["ce"][:3] > 0).all() and out_u["ce"][3] == 0 and out_u["sem"] > 0  # no think part in pst
    assert torch.allclose(out_p["ce"], out_u["ce"], rtol=1e-5)
    assert torch.allclose(out_p["sem"], out_u["sem"], rtol=1e-5)
    assert torch.allclose(loss_p, loss_u, rtol=1e-5)
    assert grads_u.keys() == grads_p.keys() and len(grads_u) > 10
    for name, g in grads_u.items():
        assert torch.allclose(grads_p[name], g, rtol=1e-3, atol=1e-6), name
    # attention allowed to cross examples in the same rows: the loss parts move
    crossing = {**packed, "attention_mask": torch.ones_like(packed["input_ids"])}
    with torch.no_grad():
        out_x = pst(crossing)
    assert not torch.allclose(out_x["ce"], out_u["ce"], rtol=1e-3)
    assert not torch.allclose(out_x["sem"], out_u["sem"], rtol=1e-3)


@pytest.mark.model
def test_rationale_mean_pooling_is_per_example_inside_a_row(setup):
    s, pst, tok, examples, targets = setup
    rows = pack(examples, s.pack_length)
    order = [e for r in rows for e in r]
    pst.pooling = "rationale_mean"
    try:
        with torch.no_grad():
            u = pst(collate(order, tok.pad_token_id, targets))["sem"]
            p = pst(collate_packed(rows, tok.pad_token_id, targets))["sem"]
    finally:
        pst.pooling = "sem_token"
    assert u > 0 and torch.allclose(p, u, rtol=1e-5)
