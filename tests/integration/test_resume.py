"""Exact resume: a training stopped after a checkpoint and started again ends with the
weights of an uninterrupted run. In process (a crash injected after step 3 of 6, LoRA
dropout on so the restored RNG matters) and end to end (SIGKILL to `dvc repro
train_student@pst-1` in a copy of the repo, then `dvc repro` again; an uninterrupted run
under another hash seed then writes a folder with the same DVC hash)."""

import json
import os
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch
from project import copy_project, profile
from safetensors.torch import load_file
from student_fixtures import FMT, assembled_rows, embeddings, items, settings, tiny_model_dir

from pst_distill.train import loop

pytestmark = pytest.mark.model
STAGE = "train_student@pst-1"


def weights(folder: Path) -> dict:
    """The student's weights (a LoRA run's merged into its base: the model is what must
    agree; the factors A and B of a 2-process run differ from a 1-process run's by more
    than their product does) and the semantic head's."""
    from pst_distill.models import load_causal_lm

    if (folder / "model.safetensors").exists():
        out = {f"model:{k}": v for k, v in load_file(folder / "model.safetensors").items()}
    else:
        model, _ = load_causal_lm(str(folder), device="cpu", dtype="float32")
        out = {f"model:{k}": v for k, v in model.state_dict().items()}
    if (folder / "semantic_head.safetensors").exists():
        out.update({f"head:{k}": v for k, v in load_file(folder / "semantic_head.safetensors").items()})
    return out


def assert_same_weights(a: Path, b: Path, atol=0.0):
    wa, wb = weights(a), weights(b)
    assert wa.keys() == wb.keys()
    for key in wa:
        assert torch.allclose(wa[key], wb[key], atol=atol, rtol=0), key


class Crash(RuntimeError):
    pass


@pytest.mark.parametrize("finetune", ["lora", "full"])
def test_crash_and_rerun_in_process_equals_uninterrupted(tmp_path, monkeypatch, finetune):
    model_dir = tiny_model_dir(tmp_path / "tiny")
    s = settings(model_dir, "pst", steps=6, save_every=2, finetune=finetune,
                 lora={"r": 4, "dropout": 0.1}, warmup_steps=1, schedule="linear")
    rows, emb = assembled_rows("pst", items(8)), embeddings(8)

    def fit(out: Path, state):
        return loop.train(rows, s, "pst", FMT, 0, out / "m", out / "c.tsv", emb, "cpu",
                             state_dir=state)

    fit(tmp_path / "ref", None)
    state = tmp_path / "state"
    real, calls = loop.train_step, {"n": 0}

    def crashing(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == 4:  # after the step-2 state, before step 4 is saved
            raise Crash("killed")
        return real(*args, **kwargs)

    monkeypatch.setattr(loop, "train_step", crashing)
    with pytest.raises(Crash):
        fit(tmp_path / "run", state)
    saved = list(state.glob("pst-*/latest/progress.json"))
    assert len(saved) == 1 and json.loads(saved[0].read_text())["step"] == 2
    assert_no_pickle(saved[0].parent)
    monkeypatch.setattr(loop, "train_step", real)
    res = fit(tmp_path / "run", state)
    assert res.metrics["steps"] == 6 and res.metrics["sequences_seen"] == 6 * 2
    assert_same_weights(tmp_path / "ref" / "m", tmp_path / "run" / "m")
    ref_curve = (tmp_path / "ref" / "c.tsv").read_text().splitlines()
    assert (tmp_path / "run" / "c.tsv").read_text().splitlines() == ref_curve
    assert not any(state.iterdir())  # finished: the state is gone


def assert_no_pickle(folder: Path) -> None:
    """The state is safetensors and JSON only: every file reads as one of them."""
    files = sorted(folder.iterdir())
    assert {p.suffix for p in files} == {".safetensors", ".json"}, files
    for p in files:
        load_file(p) if p.suffix == ".safetensors" else json.loads(p.read_text())


def project_copy(dst: Path, dvc_cache: Path, **defaults) -> Path:
    """A project copy (sharing the session's DVC cache, so the upstream stages another test
    ran come from the run-cache) with profiles/tiny.yaml as params, trained methods cut to
    pst on one seed, ``train.defaults`` updated with ``defaults`` (which pst's own block then
    does not override)."""
    params = profile("tiny")
    params["train"]["defaults"].update(defaults)
    pst = params["train"]["methods"]["pst"]  # the profile's pst overrides yield to the test's
    params["train"]["methods"] = {"pst": {k: v for k, v in pst.items() if k not in defaults}}
    params["train"]["seeds"] = [1]  # one stage: train_student@pst-1
    return copy_project(dst, params, dvc_cache=dvc_cache)


def dvc(args, cwd, env_extra: dict | None = None, **kwargs):
    env = {**os.environ, "PATH": f"{Path(sys.executable).parent}:{os.environ['PATH']}",
           "OMP_NUM_THREADS": "1", "PYTHONPATH": str(Path(cwd) / "src"),  # the copy's code
           **(env_extra or {})}
    return subprocess.Popen(["dvc", *args], cwd=cwd, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True, **kwargs)


def model_hash(repo: Path) -> str:
    """The DVC hash of the trained student's folder, as dvc.lock records it."""
    import yaml

    outs = yaml.safe_load((repo / "dvc.lock").read_text())["stages"][STAGE]["outs"]
    return next(o["md5"] for o in outs if o["path"] == "models/pst-1")


def finish(proc, timeout=1200) -> str:
    out, _ = proc.communicate(timeout=timeout)
    assert proc.returncode == 0, out[-5000:]
    return out


@pytest.mark.dvc
def test_sigkill_during_dvc_repro_then_repro_resumes_to_the_same_weights(tmp_path, dvc_cache):
    """The tiny random student (the 135M one adds only time here): 60 steps, a state every
    10, killed as soon as the first state is on disk."""
    steps = 60
    repo = project_copy(tmp_path / "repo", dvc_cache, steps=steps, save_every=10,
                        model=tiny_model_dir(tmp_path / "tiny"))
    finish(dvc(["repro", "assemble_dataset"], repo))
    proc = dvc(["repro", STAGE], repo, start_new_session=True)
    deadline = time.monotonic() + 600
    while not list((repo / ".cache/train").glob("pst-*/latest/progress.json")):
        assert proc.poll() is None, "training ended before a resumable state was written"
        assert time.monotonic() < deadline
        time.sleep(0.01)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    saved = json.loads(next((repo / ".cache/train").glob("pst-*/latest/progress.json")).read_text())
    assert 10 <= saved["step"] < steps

    # the resumed run and the uninterrupted one below under different hash seeds: the
    # student's folder (peft writes its target modules from a set) must not depend on it
    out = finish(dvc(["repro", STAGE], repo, env_extra={"PYTHONHASHSEED": "1"}))
    assert f"resuming from step {saved['step']}" in out, out[-3000:]
    assert not list((repo / ".cache/train").glob("pst-*"))  # cleaned after the finish
    resumed = tmp_path / "resumed"
    shutil.copytree(repo / "models/pst-1", resumed)
    metrics = json.loads((repo / "metrics/train/pst-1.json").read_text())
    assert metrics["steps"] == steps

    folder_hash = model_hash(repo)
    # uninterrupted, from scratch
    finish(dvc(["repro", "-f", "-s", STAGE], repo, env_extra={"PYTHONHASHSEED": "2"}))
    assert_same_weights(resumed, repo / "models/pst-1")
    assert model_hash(repo) == folder_hash  # so DVC would not evaluate it again
    assert "up to date" in finish(dvc(["status", STAGE], repo))
