"""The trainer on a tiny random Llama: full and LoRA runs, checkpoints that reload to the
same logits, the semantic target reaching the loss, accumulation, and the NaN stop."""

import importlib.util
from dataclasses import replace
from itertools import islice

import numpy as np
import pytest
import torch
from student_fixtures import FMT, assembled_rows, embeddings, items, settings, tiny_model_dir

from pst_distill.train import loop, losses
from pst_distill.train.data import effective_batches
from pst_distill.train.bench import throughput
from pst_distill.train.model import build_head
from pst_distill.train.data import collate, encode_rows
from pst_distill.io import read_json
from pst_distill.train.model import wrap_student
from pst_distill.train.checkpoint import load_head
from pst_distill.train.model import load_student

pytestmark = pytest.mark.model


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
    res = loop.train(assembled_rows(method, its), s, method, FMT, 0, out, curve, emb, "cpu")
    return res, out, curve


def reload(out):
    from pst_distill.models import load_causal_lm

    return load_causal_lm(str(out), device="cpu", dtype="float32")


@pytest.mark.parametrize("finetune", ["full", "lora"])
def test_train_writes_checkpoint_that_reloads_to_identical_logits(tmp_path, model_dir, data,
                                                                   finetune):
    res, out, curve = run(tmp_path, model_dir, data, finetune=finetune, lora={"r": 4})
    assert res.metrics["steps"] == 3 and res.metrics["tokens"] > 0
    assert res.metrics["loss_weights"]["w_rationale"] == 0.1
    weights = {"full": ("config.json", "model.safetensors"),
               "lora": ("adapter_config.json", "adapter_model.safetensors", "base_model.json")}
    for name in (*weights[finetune], "tokenizer.json", "semantic_head.safetensors",
                 "semantic_head.json", "train_state.json"):
        assert (out / name).exists(), name
    # a LoRA checkpoint is the adapter alone, not a copy of the base weights
    other = weights["full" if finetune == "lora" else "lora"]
    assert not any((out / name).exists() for name in other[1:]), sorted(p.name for p in out.iterdir())
    assert read_json(out / "train_state.json")["step"] == 3
    lines = curve.read_text().splitlines()
    assert lines[0].split("\t")[:2] == ["step", "loss"] and len(lines) == 4
    model, tok = reload(out)
    assert tok.convert_tokens_to_ids(FMT.sem_token) == res.tokenizer.convert_tokens_to_ids(FMT.sem_token)
    want = logits_of(res.model, res.tokenizer)
    assert torch.allclose(logits_of(model, tok), want, atol=1e-5)
    # the semantic head reloads to the trained one: same weights, same vector for [SEM]
    head = load_head(out)
    trained = {k: v.detach().cpu() for k, v in res.head.state_dict().items()}
    assert head is not None and not head.training and head.dims == res.head.dims
    assert head.state_dict().keys() == trained.keys()
    assert all(torch.equal(head.state_dict()[k], trained[k]) for k in trained)
    assert torch.allclose(sem_vector(model, tok, head), sem_vector(res.model, res.tokenizer, res.head),
                          atol=1e-5)


def sem_vector(model, tok, head, text="Answer: ab\n[SEM] Reasoning: x"):
    """The head's vector for the final hidden state at [SEM] (what the semantic loss scores)."""
    ids = tok(text, return_tensors="pt", add_special_tokens=False)["input_ids"]
    pos = ids[0].tolist().index(tok.convert_tokens_to_ids(FMT.sem_token))
    base = model.get_base_model() if hasattr(model, "get_base_model") else model
    model.eval()
    with torch.no_grad():
        return head.eval()(base.get_decoder()(input_ids=ids).last_hidden_state[0, pos])


def test_a_lora_student_whose_base_runs_remote_code_needs_the_callers_consent(tmp_path):
    """base_model.json comes with the artifact (a DVC remote): it cannot grant
    trust_remote_code; the load stops before anything is fetched or run."""
    from pst_distill.models import BASE_REF, load_causal_lm

    (tmp_path / BASE_REF).write_text('{"model": "org/custom", "revision": null, "trust_remote_code": true}')
    with pytest.raises(ValueError, match="org/custom.*trust_remote_code=True"):
        load_causal_lm(str(tmp_path), device="cpu", dtype="float32")


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


def _micro(model_dir, data, method="pst", n=4, **over):
    its, emb = data
    s = settings(model_dir, method, **over)
    torch.manual_seed(0)
    model, tok, _ = load_student(s, FMT.sem_token, "cpu")
    examples, _ = encode_rows(assembled_rows(method, its)[:n], tok, s.max_length, s.label_sem_token)
    head = build_head(model, s, torch.from_numpy(emb))
    return s, wrap_student(model, s, "cpu", head), tok, examples, torch.from_numpy(emb)


def loss_of(pst, batches, s):
    den = loop.denominators(batches, s)
    total = 0.0
    for b in batches:
        out = pst(b)
        total = total + losses.combine(out["ce"], out["sem"], den, loop.loss_weights(s))[0]
    return total


def test_semantic_target_reaches_the_loss(model_dir, data):
    s, pst, tok, examples, targets = _micro(model_dir, data)
    batch = collate(examples, tok.pad_token_id, targets)
    assert loop.denominators([batch], s).n_sem == len(examples)
    loss_a = loss_of(pst, [batch], s)
    loss_b = loss_of(pst, [collate(examples, tok.pad_token_id, -targets)], s)
    assert not torch.allclose(loss_a, loss_b)
    s0 = s.model_copy(update={"loss": s.loss.model_copy(update={"w_sem": 0.0})})
    l0a = loss_of(pst, [batch], s0)
    l0b = loss_of(pst, [collate(examples, tok.pad_token_id, -targets)], s0)
    assert torch.equal(l0a, l0b)


def test_accumulated_micro_batches_give_the_full_batch_loss(model_dir, data):
    s, pst, tok, examples, targets = _micro(model_dir, data, n=4)
    pst.eval()  # no dropout anyway; be explicit
    full = collate(examples, tok.pad_token_id, targets)
    want = loss_of(pst, [full], s)
    micro = [collate(examples[:1], tok.pad_token_id, targets),
             collate(examples[1:], tok.pad_token_id, targets)]
    assert loop.denominators(micro, s) == loop.denominators([full], s)
    assert torch.allclose(loss_of(pst, micro, s), want, atol=1e-5)


def test_supervised_sem_token_is_its_own_loss_part(model_dir, data):
    s, pst, tok, examples, targets = _micro(model_dir, data, n=2)
    batch = collate(examples, tok.pad_token_id, targets)
    den = loop.denominators([batch], s)
    assert den.n_sem_token == 2  # one labelled [SEM] per pst row, not counted as answer
    assert (batch["parts"] == losses.SEM).sum() == 2
    out = pst(batch)
    w = loop.loss_weights(s)
    loss, parts = losses.combine(out["ce"], out["sem"], den, w)
    assert float(parts["ce_sem_token"]) > 0
    off = losses.combine(out["ce"], out["sem"], den, replace(w, w_sem_token=0.0))[0]
    assert torch.allclose(loss - off, parts["ce_sem_token"], atol=1e-5)


def test_metrics_count_sequences_questions_epochs_and_log_the_used_lr(tmp_path, model_dir, data):
    res, _, curve = run(tmp_path, model_dir, data, "step_by_step", steps=3, batch_size=4,
                        warmup_steps=1, schedule="linear")
    m = res.metrics
    # 8 questions, 2 rows each; a step takes 4 questions with both their rows
    assert (m["questions_seen"], m["sequences_seen"], m["epochs"]) == (12, 24, 1.5)
    assert m["final"]["loss"] == pytest.approx(sum(r["loss"] for r in curve_rows(curve)) / 3)
    assert m["final_loss"] == pytest.approx(curve_rows(curve)[-1]["loss"], rel=1e-5)
    assert (m["compute_dtype"], m["autocast"], m["bf16_autocast"]) == ("float32", "none", False)
    lrs = [r["lr"] for r in curve_rows(curve)]
    # warmup 1 of 3 steps, linear: step 1 uses lr/2, step 2 the full lr, step 3 half of it
    assert lrs == pytest.approx([0.005, 0.01, 0.005])


def curve_rows(path) -> list[dict]:
    head, *rows = [line.split("\t") for line in path.read_text().splitlines()]
    return [dict(zip(head, map(float, row))) for row in rows]


def test_every_method_sees_the_same_questions_under_the_same_budget(tmp_path, model_dir, data):
    """step_by_step (two sequences per question) and post_thinking (one) under the same
    epochs budget: the same questions in every step, twice the sequences for step_by_step."""
    its, emb = data
    seen = {}
    for method in ("step_by_step", "post_thinking"):
        s = settings(model_dir, method, steps=None, epochs=1.5, batch_size=2, grad_accum=2)
        res = loop.train(assembled_rows(method, its), s, method, FMT, 0, tmp_path / method / "m",
                            tmp_path / method / "c.tsv", emb, "cpu")
        examples, _ = encode_rows(assembled_rows(method, its), res.tokenizer, s.max_length)
        stream = islice(effective_batches(examples, s, 0), res.metrics["steps"])
        seen[method] = res.metrics, [sorted(e.row_id for micro in eff for e in micro)
                                     for eff in stream]
    (sbs, sbs_ids), (post, post_ids) = seen["step_by_step"], seen["post_thinking"]
    assert sbs["steps"] == post["steps"] == 3  # ceil(1.5 epochs * 8 questions / 4 per step)
    assert sbs["questions_seen"] == post["questions_seen"] == 12
    assert sbs["epochs"] == post["epochs"] == 1.5
    assert sbs["sequences_seen"] == 2 * post["sequences_seen"] == 24
    assert sbs_ids == [sorted(ids * 2) for ids in post_ids]  # both rows of the same questions


def test_one_row_methods_keep_the_shuffled_sequence_stream(model_dir, data):
    """With one sequence per question, the question stream is the old stream of shuffled
    sequences: steps-budget runs of these methods are unchanged."""
    s = settings(model_dir, "pst", batch_size=3, grad_accum=2)
    _, tok, _ = load_student(s, FMT.sem_token, "cpu")
    examples, _ = encode_rows(assembled_rows("pst", data[0]), tok, s.max_length, True)
    rng, order, want = np.random.default_rng(0), [], []
    for _ in range(4):  # the former implementation, sequence by sequence
        while len(order) < 6:
            order += rng.permutation(len(examples)).tolist()
        chosen, order = sorted(order[:6], key=lambda i: len(examples[i])), order[6:]
        want.append([[examples[i] for i in chosen[j:j + 3]] for j in (0, 3)])
    got = list(islice(effective_batches(examples, s, 0), 4))
    assert [[[id(e) for e in m] for m in eff] for eff in got] == \
        [[[id(e) for e in m] for m in eff] for eff in want]


def test_nan_loss_stops_and_keeps_last_good_checkpoint(tmp_path, model_dir, data, monkeypatch):
    real, calls = losses.combine, {"n": 0}

    def poisoned(*args, **kwargs):
        calls["n"] += 1
        loss, parts = real(*args, **kwargs)
        return (loss * float("nan") if calls["n"] == 5 else loss), parts

    monkeypatch.setattr(losses, "combine", poisoned)
    with pytest.raises(loop.TrainingDiverged, match=r"step 5: loss is nan.*step 4"):
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
    res = loop.train(assembled_rows("pst", its), s, "pst", FMT, 0, tmp_path / "m",
                        tmp_path / "c.tsv", emb, "cuda")
    assert res.metrics["bf16_autocast"] and res.metrics["final_loss"] == res.metrics["final_loss"]
    model, tok = reload(tmp_path / "m")
    assert torch.allclose(logits_of(model, tok), logits_of(res.model.cpu(), res.tokenizer), atol=1e-4)


@pytest.mark.parametrize("option", ["gradient_checkpointing", "compile"])
def test_speed_options_keep_the_loss_and_gradients(model_dir, data, option):
    """Gradient checkpointing and torch.compile of the decoder layers change speed and
    memory only (compile runs on CPU here through inductor's C++ backend)."""
    results = []
    for on in (False, True):
        s, pst, tok, examples, targets = _micro(model_dir, data, n=3, **{option: on})
        layers = pst.student.get_decoder().layers
        active = (layers[0].gradient_checkpointing if option == "gradient_checkpointing"
                  else layers[0]._compiled_call_impl is not None)
        assert active == on
        batch = collate(examples, tok.pad_token_id, targets)
        loss = loss_of(pst, [batch], s)
        loss.backward()
        grads = {n: p.grad.clone() for n, p in pst.named_parameters() if p.grad is not None}
        results.append((loss.detach(), grads, set(pst.state_dict())))
    (l0, g0, k0), (l1, g1, k1) = results
    assert k0 == k1  # checkpoints load the same either way
    assert torch.allclose(l0, l1, rtol=1e-5) and g0.keys() == g1.keys()
    for name in g0:
        assert torch.allclose(g0[name], g1[name], rtol=1e-3, atol=1e-6), name


@pytest.mark.skipif(importlib.util.find_spec("liger_kernel") is not None,
                    reason="liger_kernel is installed")
def test_liger_without_the_package_is_a_clear_error(model_dir):
    s = settings(model_dir, "answer_only", liger=True)
    model, _, _ = load_student(s, FMT.sem_token, "cpu")
    with pytest.raises(ValueError, match=r"train.liger: true needs .*pst-distill\[liger\]"):
        wrap_student(model, s, "cpu")


def test_throughput_counts_real_tokens_and_packing_drops_the_padding(model_dir, data):
    from transformers import AutoModelForCausalLM

    results = {}
    for packing in (False, True):
        s = settings(model_dir, "post_thinking", batch_size=4, packing=packing, pack_length=256)
        _, tok, _ = load_student(s, FMT.sem_token, "cpu")
        examples, _ = encode_rows(assembled_rows("post_thinking", data[0]), tok, s.max_length, True)
        torch.manual_seed(0)
        student = AutoModelForCausalLM.from_pretrained(model_dir, dtype=torch.float32)
        student.resize_token_embeddings(len(tok))
        results[packing] = throughput(wrap_student(student, s, "cpu"), examples, s, 2,
                                              pad_id=tok.pad_token_id, warmup=1)
    plain, packed = results[False], results[True]
    assert plain["tokens"] == packed["tokens"] == sum(
        len(e) for eff in islice(effective_batches(examples, s, 0), 1, 3) for m in eff for e in m)
    assert packed["padded_tokens"] < plain["padded_tokens"] and plain["tokens_per_s"] > 0
    assert packed["final_loss"] == pytest.approx(plain["final_loss"], rel=1e-5)


def test_full_finetune_checkpoint_in_the_training_dtype(tmp_path, model_dir):
    """On CUDA under bf16 autocast a full finetune is saved in bf16 (half the bytes); the
    rule, and a bf16 checkpoint that reloads to the model up to bf16 rounding."""
    from safetensors import safe_open
    from transformers import AutoModelForCausalLM

    from pst_distill.models import load_tokenizer
    from pst_distill.train.checkpoint import checkpoint_dtype, save_checkpoint

    assert checkpoint_dtype("cuda:0", "bf16", "full") == torch.bfloat16
    assert checkpoint_dtype("cuda:0", "bf16", "lora") is None
    assert checkpoint_dtype("cuda:0", "no", "full") is None
    assert checkpoint_dtype("cpu", "bf16", "full") is None
    model = AutoModelForCausalLM.from_pretrained(model_dir)
    tok = load_tokenizer(model_dir)
    save_checkpoint(model, tok, None, tmp_path / "bf16", {"step": 1}, dtype=torch.bfloat16)
    with safe_open(tmp_path / "bf16" / "model.safetensors", "pt") as f:
        assert {f.get_tensor(k).dtype for k in f.keys()} == {torch.bfloat16}
    save_checkpoint(model, tok, None, tmp_path / "fp32", {"step": 1})
    sizes = [(tmp_path / d / "model.safetensors").stat().st_size for d in ("bf16", "fp32")]
    assert sizes[0] < 0.55 * sizes[1]
    reloaded, _ = reload(tmp_path / "bf16")
    assert torch.allclose(logits_of(reloaded, tok), logits_of(model, tok), atol=5e-2)
