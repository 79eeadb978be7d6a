"""The semantic loss through the real trainer (``loop.train``), on a tiny random Llama.

Trained with the semantic loss alone (w_answer = w_rationale = 0, [SEM] unsupervised, no
weight decay), every example must end up nearest to its *own* rationale embedding: rows
meet their targets through ``emb_row``, which here is a permutation of the row order, so
an off-by-one or positional join fails. Nothing but the semantic loss can move the
student's weights in that run, so their change shows its gradient reaches the student
(not only the head).
"""

import pytest
import torch
from student_fixtures import FMT, assembled_rows, embeddings, items, settings, tiny_model_dir

from pst_distill.train import loop
from pst_distill.train.data import encode_rows
from pst_distill.train.checkpoint import load_head

pytestmark = pytest.mark.model
N = 6
PERM = [(5 * i + 2) % N for i in range(N)]  # emb_row of row i: a permutation, no fixed point


@pytest.fixture(scope="module")
def sem_only(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("sem")
    model_dir = tiny_model_dir(tmp / "base")
    rows = assembled_rows("pst", items(N))
    for row, j in zip(rows, PERM):
        row["emb_row"] = j
    s = settings(model_dir, "pst", steps=30, batch_size=N, lr=1e-2, weight_decay=0.0,
                 label_sem_token=False,
                 method_over={"loss": {"w_answer": 0.0, "w_rationale": 0.0, "w_sem": 1.0}})
    targets = embeddings(N, seed=3)
    res = loop.train(rows, s, "pst", FMT, 0, tmp / "model", tmp / "loss.tsv", targets, "cpu")
    return model_dir, rows, s, torch.from_numpy(targets), res, tmp


def sem_vectors(res, rows, s) -> tuple[torch.Tensor, list[int]]:
    """Head vectors of each example's final hidden state at [SEM], and its emb_row."""
    examples, _ = encode_rows(rows, res.tokenizer, s.max_length, False)
    res.model.eval()
    with torch.no_grad():
        vecs = [res.head.eval()(res.model.get_decoder()(
            input_ids=torch.tensor([ex.input_ids])).last_hidden_state[0, ex.sem_pos])
            for ex in examples]
    return torch.stack(vecs), [ex.emb_row for ex in examples]


def test_each_example_meets_its_own_embedding(sem_only):
    _, rows, s, targets, res, _ = sem_only
    assert PERM != list(range(N)) and sorted(PERM) == list(range(N))
    vecs, emb_rows = sem_vectors(res, rows, s)
    assert emb_rows == PERM
    cos = torch.nn.functional.cosine_similarity(vecs[:, None], targets[None], dim=-1)  # [N, N]
    assert cos.argmax(dim=1).tolist() == PERM, cos
    curve = [ln.split("\t") for ln in (sem_only[5] / "loss.tsv").read_text().splitlines()]
    sem = [float(r[curve[0].index("sem")]) for r in curve[1:]]
    assert sem[-1] < 0.5 * sem[0]  # and it is the semantic loss that went down


def test_semantic_gradient_reaches_the_student_weights(sem_only):
    from transformers import AutoModelForCausalLM

    model_dir, _, _, _, res, _ = sem_only
    before = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32).state_dict()
    after = res.model.state_dict()
    layers = [k for k in before if ".layers." in k or k.startswith("model.norm")]
    assert layers and all(k in after for k in layers)
    unchanged = [k for k in layers if torch.equal(before[k], after[k].cpu())]
    assert not unchanged, f"not reached by the semantic loss: {unchanged}"


def test_a_run_without_semantic_loss_saves_no_head(tmp_path):
    s = settings(tiny_model_dir(tmp_path / "base"), "post_thinking", steps=1, save_every=1)
    res = loop.train(assembled_rows("post_thinking", items(2)), s, "post_thinking", FMT, 0,
                        tmp_path / "model", tmp_path / "loss.tsv", embeddings(2), "cpu")
    assert res.head is None and load_head(tmp_path / "model") is None
