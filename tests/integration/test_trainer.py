"""The trainer on a tiny random Llama: full and LoRA runs, checkpoints that reload to the
same logits, the semantic target reaching the loss, accumulation, and the NaN stop."""

import pytest
import torch
from student_fixtures import FMT, assembled_rows, embeddings, items, settings, tiny_model_dir

from pst_distill import losses, trainer
from pst_distill.data import collate, encode_rows
from pst_distill.io import read_json
from pst_distill.student import load_student

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def model_dir(tmp_path_factory):
    return tiny_model_dir(tmp_path_factory.mktemp("tiny"))


@pytest.fixture(scope="module")
def data():
    its = items(8)
    return its, embeddings(len(its))


def logits_of(model, tok, text="Answer: ab\n[SEM] Reasoning: x"):
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    model.eval()
    with torch.no_grad():
        return model(input_ids=ids).logits


def run(tmp_path, model_dir, data, method="pst", **over):
    its, emb = data
    s = settings(model_dir, method, **over)
    out, curve = tmp_path / "model", tmp_path / "loss.tsv"
    res = trainer.train(assembled_rows(method, its), s, method, FMT, 0, out, curve, emb, "cpu")
    return res, out, curve


def reload(out):
    from transformers import AutoModelForCausalLM, AutoTokenizer

    return (AutoModelForCausalLM.from_pretrained(out, dtype=torch.float32),
            AutoTokenizer.from_pretrained(out))


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_train_writes_checkpoint_that_reloads_to_identical_logits(tmp_path, model_dir, data,
                                                                   finetune):
    res, out, curve = run(tmp_path, model_dir, data, finetune=finetune, lora={"r": 4})
    assert res.metrics["steps"] == 3 and res.metrics["tokens"] > 0
    assert res.metrics["loss_weights"]["w_rationale"] == 0.1
    for name in ("config.json", "model.safetensors", "tokenizer.json", "semantic_head.safetensors",
                 "semantic_head.json", "train_state.json"):
        assert (out / name).exists(), name
    assert read_json(out / "train_state.json")["step"] == 3
    lines = curve.read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["step", "loss"] and len(lines) == 4
    model, tok = reload(out)
    assert tok.convert_tokens_to_ids(FMT.sem_token) == res.tokenizer.convert_tokens_to_ids(FMT.sem_token)
    want = logits_of(res.model, res.tokenizer)
    assert torch.allclose(logits_of(model, tok), want, atol=1e-5)


def test_lora_trains_the_sem_embedding_row(tmp_path, model_dir, data):
    s = settings(model_dir, "pst", finetune="lora", lora={"r": 4})
    torch.manual_seed(0)  # as train() does before loading: same resize init of the new row
    base, tok, sem_id = load_student(s.model_copy(update={"finetune": "full"}), FMT.sem_token, "cpu")
    before = base.get_input_embeddings().weight[sem_id].detach().clone()
    _, out, _ = run(tmp_path, model_dir, data, finetune="lora", lora={"r": 4})
    after = reload(out)[0].get_input_embeddings().weight[sem_id]
    assert not torch.allclose(before, after)
    untouched = base.get_input_embeddings().weight[5]
    assert torch.allclose(untouched, reload(out)[0].get_input_embeddings().weight[5])


def _micro(model_dir, data, method="pst", n=4):
    its, emb = data
    s = settings(model_dir, method)
    torch.manual_seed(0)
    model, tok, _ = load_student(s, FMT.sem_token, "cpu")
    examples, _ = encode_rows(assembled_rows(method, its)[:n], tok, s.max_length)
    head = trainer.build_head(model, s, torch.from_numpy(emb))
    return s, model, tok, head, examples, torch.from_numpy(emb)


def test_semantic_target_reaches_the_loss(model_dir, data):
    s, model, tok, head, examples, targets = _micro(model_dir, data)
    batch = collate(examples, tok.pad_token_id)
    den = trainer.denominators([batch], s)
    assert den.n_sem == len(examples)
    loss_a, _ = trainer.compute_loss(model, head, batch, targets, s, den, trainer.nullcontext())
    loss_b, _ = trainer.compute_loss(model, head, batch, -targets, s, den, trainer.nullcontext())
    assert not torch.allclose(loss_a, loss_b)
    s0 = s.model_copy(update={"loss": s.loss.model_copy(update={"w_sem": 0.0})})
    l0a, _ = trainer.compute_loss(model, head, batch, targets, s0, den, trainer.nullcontext())
    l0b, _ = trainer.compute_loss(model, head, batch, -targets, s0, den, trainer.nullcontext())
    assert torch.equal(l0a, l0b)


def test_accumulated_micro_batches_give_the_full_batch_loss(model_dir, data):
    s, model, tok, head, examples, targets = _micro(model_dir, data, n=4)
    model.eval()  # no dropout anyway; be explicit
    full = collate(examples, tok.pad_token_id)
    den = trainer.denominators([full], s)
    want, _ = trainer.compute_loss(model, head, full, targets, s, den, trainer.nullcontext())
    micro = [collate(examples[:1], tok.pad_token_id), collate(examples[1:], tok.pad_token_id)]
    den2 = trainer.denominators(micro, s)
    got = sum(trainer.compute_loss(model, head, b, targets, s, den2, trainer.nullcontext())[0]
              for b in micro)
    assert den2 == den and torch.allclose(got, want, atol=1e-5)


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, model_dir, data, monkeypatch):
    real, calls = losses.combine, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(losses, "combine", poisoned)
    with pytest.raises(trainer.TrainingDiverged, match=r"step 5: loss is nan.*step 4"):
        run(tmp_path, model_dir, data, steps=8, save_every=2)
    state = read_json(tmp_path / "model" / "train_state.json")
    assert state["step"] == 4
    assert len((tmp_path / "loss.tsv").read_text().splitlines()) == 1 + 4
    assert not list(tmp_path.glob(".model.*"))  # no half-written folders left behind


@pytest.mark.gpu
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_bf16_run_checkpoints_and_reloads(tmp_path, model_dir, data):
    its, emb = data
    s = settings(model_dir, "pst", finetune="lora", lora={"r": 4}, device="cuda")
    res = trainer.train(assembled_rows("pst", its), s, "pst", FMT, 0, tmp_path / "m",
                        tmp_path / "c.tsv", emb, "cuda")
    assert res.metrics["bf16_autocast"] and res.metrics["final_loss"] == res.metrics["final_loss"]
    model, tok = reload(tmp_path / "m")
    assert torch.allclose(logits_of(model, tok), logits_of(res.model.cpu(), res.tokenizer), atol=1e-4)
