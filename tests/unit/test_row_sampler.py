"""The transformers teacher's per-row sampler: each row's draw depends on its own seed and
logits only, follows the tempered, top-p-cut distribution, and leaves one token to pick."""

from __future__ import annotations

import pytest

torch = pytest.importorskip("torch")

from pst_distill.teacher.transformers_backend import make_row_sampler  # noqa: E402

LOGITS = torch.tensor([[2.0, 1.0, 0.5, 0.0, -1.0], [0.0, 0.0, 3.0, 0.0, 0.0],
                       [1.0, 1.0, 1.0, 1.0, 1.0]])


def picks(seeds, logits, steps=200, temperature=1.0, top_p=1.0) -> torch.Tensor:
    sampler = make_row_sampler(seeds, temperature, top_p)
    out = []
    for _ in range(steps):
        scores = sampler(None, logits.clone())
        assert torch.isfinite(scores).sum(dim=1).tolist() == [1] * len(seeds)
        out.append(scores.argmax(dim=1))
    return torch.stack(out, dim=1)  # [rows, steps]


def test_a_row_draws_the_same_whatever_shares_its_batch():
    together = picks([11, 22, 33], LOGITS)
    assert torch.equal(picks([22], LOGITS[1:2])[0], together[1])
    assert torch.equal(picks([33, 11], LOGITS[[2, 0]])[1], together[0])
    assert not torch.equal(picks([12], LOGITS[0:1])[0], together[0])  # the seed matters


def test_frequencies_follow_the_tempered_distribution():
    for temperature in (1.0, 0.5):
        got = picks([5], LOGITS[0:1], steps=4000, temperature=temperature)[0]
        freq = torch.bincount(got, minlength=5).double() / got.numel()
        want = torch.softmax(LOGITS[0].double() / temperature, dim=0)
        assert torch.allclose(freq, want, atol=0.03), (temperature, freq, want)


def test_top_p_keeps_only_the_nucleus():
    # probs of row 0: .55 .20 .12 .08 .03 (rounded): top_p 0.7 keeps the first two tokens
    got = picks([1, 2], LOGITS[0:1].repeat(2, 1), steps=1000, top_p=0.7)
    assert set(got.unique().tolist()) == {0, 1}
    assert set(picks([3], LOGITS[1:2], steps=200, top_p=0.5)[0].tolist()) == {2}
