"""The training path on a GPU, with the pretrained student (the packaged SmolLM2-135M):

* a bf16 (accelerate mixed precision) packed step gives the loss parts and gradients of
  an fp32 unpacked step, within bf16 tolerance;
* torch.compile'd decoder layers give the eager loss and gradients, over two batches of
  different shapes (dynamic shapes, no wrong reuse of a compiled graph);
* the trainer end to end: a few bf16 packed steps, a lower loss, a checkpoint that
  reloads to the trained weights.

Marked ``gpu``: skipped without CUDA. ``PST_GPU_TESTS_ON_CPU=1`` runs them on CPU with
smaller sizes (float32 there: the CPU has no native bf16), so the GPU kit (tools/gpu)
--dry-run checks this code before GPU time is spent on it.
"""

from __future__ import annotations

import copy
import os

import numpy as np
import pytest
import torch

from pst_distill.train import losses
from pst_distill.config.sections import parse
from pst_distill.config.common import FormatConfig
from pst_distill.train.data import encode_rows, make_batch

pytestmark = [pytest.mark.gpu, pytest.mark.model]
FMT = FormatConfig()
D_EMBED = 16


@pytest.fixture(scope="module")
def device() -> str:
    if torch.cuda.is_available():
        return "cuda"
    if os.environ.get("PST_GPU_TESTS_ON_CPU") == "1":
        return "cpu"
    pytest.skip("needs a CUDA device (PST_GPU_TESTS_ON_CPU=1 runs these on CPU as a dry run)")


def sizes(device: str) -> dict:
    """Examples per batch and steps: GPU sizes, or small ones for a CPU dry run."""
    if device == "cuda":
        return {"batch": 16, "steps": 6}
    return {"batch": 4, "steps": 2}


def settings(**over):
    defaults = {"model": "smollm2-135m-instruct", "finetune": "full", "steps": 4, "batch_size": 4,
                "lr": 1e-4, "warmup_steps": 0, "schedule": "constant", "max_length": 192,
                "save_every": 1000, "pack_length": 1024, **over}
    raw = {"defaults": defaults, "sem": {"weight": 1.0, "hidden": 64},
           "methods": {"pst": {"loss": {"w_answer": 1.0, "w_rationale": 0.1}}}}
    return parse("train", raw).methods["pst"]


def pst_rows(n: int) -> list[dict]:
    from pst_distill.config.prepare import TaskSpec
    from pst_distill.formats import training_sequences
    from pst_distill.tasks import build_task

    its = build_task(TaskSpec(name="multistep_arithmetic", n=n, options={"steps": 2}), 0)
    return [{"id": it["id"], "emb_row": i, "segments": [s.as_dict() for s in seq]}
            for i, it in enumerate(its)
            for seq in training_sequences("pst", it["question"], it["answer"],
                                          it["reference_rationale"], FMT)]


def unit_rows(n: int, seed: int = 0) -> np.ndarray:
    e = np.random.default_rng(seed).normal(size=(n, D_EMBED)).astype(np.float32)
    return e / np.linalg.norm(e, axis=1, keepdims=True)


@pytest.fixture(scope="module")
def student(device):
    """(plain student on ``device``, tokenizer, examples, semantic targets)."""
    from pst_distill.train.model import load_student

    model, tok, _ = load_student(settings(), FMT.sem_token, device)
    n = 2 * sizes(device)["batch"]
    examples, _ = encode_rows(pst_rows(n), tok, 192, label_sem=True)
    return model, tok, examples, unit_rows(n)


def wrapped(student_model, device: str, **over):
    """A PSTModel around a copy of the student (the fixture's weights stay untouched)."""
    from pst_distill.train.model import wrap_student
    from pst_distill.train.model import build_head

    s = settings(**over)
    model = copy.deepcopy(student_model)
    torch.manual_seed(0)  # the same head in every copy
    return wrap_student(model, s, device, build_head(model, s, D_EMBED)), s


def loss_and_grads(model, batch: dict, s, backward) -> tuple[float, dict, torch.Tensor]:
    """Loss, its float parts, and all gradients flattened (float32)."""
    from pst_distill.train.loop import denominators, loss_weights

    model.zero_grad(set_to_none=True)
    out = model(batch)
    loss, parts = losses.combine(out["ce"], out["sem"], denominators([batch], s), loss_weights(s))
    backward(loss)
    grads = torch.cat([p.grad.detach().float().reshape(-1) for p in model.parameters()
                       if p.grad is not None])
    return float(loss.detach()), {k: float(v) for k, v in parts.items()}, grads


def on(batch: dict, device: str) -> dict:
    return {k: v.to(device) for k, v in batch.items()}


def assert_close_grads(a: torch.Tensor, b: torch.Tensor, cos_min: float, rel: float) -> None:
    assert a.shape == b.shape
    cos = float(torch.nn.functional.cosine_similarity(a, b, dim=0))
    assert cos >= cos_min, f"gradient cosine {cos:.5f} < {cos_min}"
    assert float(a.norm()) == pytest.approx(float(b.norm()), rel=rel)


def test_bf16_packed_step_matches_fp32_unpacked(student, device):
    from pst_distill.train.launch import make_accelerator

    model, tok, examples, targets = student
    chosen = examples[: sizes(device)["batch"]]
    ref, s_ref = wrapped(model, device, packing=False)
    ref_loss, ref_parts, ref_grads = loss_and_grads(
        ref, on(make_batch(chosen, tok.pad_token_id, False, targets=targets), device), s_ref,
        lambda loss: loss.backward())
    del ref
    packed, s = wrapped(model, device, packing=True)
    acc = make_accelerator(s, device)  # bf16 mixed precision on CUDA, as the trainer runs
    prepared = acc.prepare(packed)
    batch = make_batch(chosen, tok.pad_token_id, True, s.pack_length, targets)
    assert "attention_mask" not in batch and batch["input_ids"].shape[0] < len(chosen)
    loss, parts, grads = loss_and_grads(prepared, on(batch, acc.device), s, acc.backward)
    bf16 = acc.mixed_precision == "bf16"
    assert bf16 == (device == "cuda")
    tol = 2e-2 if bf16 else 1e-4
    assert loss == pytest.approx(ref_loss, rel=tol)
    for key in ("ce_answer", "ce_rationale", "ce_sem_token", "sem"):
        assert parts[key] == pytest.approx(ref_parts[key], rel=tol, abs=tol), key
    assert_close_grads(grads, ref_grads, 0.99 if bf16 else 0.99999, 0.05 if bf16 else 1e-3)


def test_compiled_matches_eager(student, device):
    model, tok, examples, targets = student
    half = sizes(device)["batch"]
    batches = [make_batch(examples[:half], tok.pad_token_id, True, 1024, targets),
               make_batch(examples[half: 2 * half - 1], tok.pad_token_id, True, 1024, targets)]
    assert batches[0]["input_ids"].shape != batches[1]["input_ids"].shape
    eager, s = wrapped(model, device, packing=True)
    compiled, _ = wrapped(model, device, packing=True, compile=True)
    autocast = torch.autocast("cuda", torch.bfloat16) if device == "cuda" else torch.autocast(
        "cpu", enabled=False)
    bf16 = device == "cuda"
    for batch in batches:
        with autocast:
            want = loss_and_grads(eager, on(batch, device), s, lambda loss: loss.backward())
            got = loss_and_grads(compiled, on(batch, device), s, lambda loss: loss.backward())
        assert got[0] == pytest.approx(want[0], rel=1e-2 if bf16 else 1e-4)
        assert_close_grads(got[2], want[2], 0.99 if bf16 else 0.9999, 0.05 if bf16 else 1e-3)


def test_trainer_end_to_end_on_the_pretrained_student(device, tmp_path):
    from safetensors.torch import load_file

    from pst_distill.train.loop import train

    n = sizes(device)
    rows = pst_rows(n["batch"])  # one batch of every example: the same batch each step
    s = settings(packing=True, batch_size=len(rows), steps=n["steps"])
    res = train(rows, s, "pst", FMT, 0, tmp_path / "model", tmp_path / "curve.tsv",
                unit_rows(len(rows)), device)
    m = res.metrics
    assert m["steps"] == n["steps"] and m["packing"] and m["tokens_per_s"] > 0
    assert m["bf16_autocast"] == (device == "cuda")
    curve = (tmp_path / "curve.tsv").read_text().splitlines()
    assert len(curve) == n["steps"] + 1
    losses_seen = [float(line.split("\t")[1]) for line in curve[1:]]
    assert all(np.isfinite(losses_seen)) and losses_seen[-1] < losses_seen[0]
    saved = load_file(str(next((tmp_path / "model").glob("*.safetensors"))))
    trained = res.model.state_dict()
    for name in ("model.embed_tokens.weight", "model.layers.29.mlp.down_proj.weight"):
        assert torch.equal(saved[name].float().cpu(), trained[name].float().cpu()), name
