"""Data parallel training through accelerate on 2 CPU processes (gloo), DDP and FSDP2:
after a few steps the weights, the loss curve and the gradient norms equal those of one
process that runs the same effective batches (its grad_accum doubled). A 2-process run
killed after a saved state resumes to the weights of an uninterrupted one; FSDP refuses
resumable state."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from student_fixtures import tiny_model_dir
from test_resume import STAGE, assert_same_weights, dvc, finish, project_copy

from pst_distill.train.metrics import COMPARED, LOGGED

pytestmark = pytest.mark.model
HERE = Path(__file__).resolve().parent

DRIVER = """
import json, logging, sys
logging.basicConfig(level=logging.INFO)
sys.path.insert(0, {here!r})
from pathlib import Path
from student_fixtures import FMT, assembled_rows, embeddings, items, settings
from pst_distill.train import loop
over = json.loads(sys.argv[2])
state = sys.argv[3] if len(sys.argv) > 3 else None
crash_at = int(sys.argv[4]) if len(sys.argv) > 4 else 0
s = settings({model!r}, "pst", **over)
out = Path(sys.argv[1])
if crash_at:  # die at that train_step call, as a kill would
    real, calls = loop.train_step, []
    def crashing(*args, **kwargs):
        calls.append(1)
        if len(calls) == crash_at:
            raise SystemExit(3)
        return real(*args, **kwargs)
    loop.train_step = crashing
res = loop.train(assembled_rows("pst", items(8)), s, "pst", FMT, 0, out / "m", out / "c.tsv",
                    embeddings(8), "cpu", state_dir=state)
if res.is_main:
    (out / "metrics.json").write_text(json.dumps(res.metrics))
"""


@pytest.fixture(scope="module")
def driver(tmp_path_factory):
    root = tmp_path_factory.mktemp("dist")
    path = root / "driver.py"
    path.write_text(DRIVER.format(here=str(HERE), model=tiny_model_dir(root / "tiny")))
    return path


def launch(driver, out, processes: int, over: dict, *extra, code: int = 0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    prefix = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    proc = subprocess.run([*prefix, str(driver), str(out), json.dumps(over), *map(str, extra)],
                          env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == (code == 0), proc.stderr[-3000:]
    return proc.stderr


def curve(out):
    rows = [line.split("\t") for line in (out / "c.tsv").read_text().splitlines()]
    return [{k: float(v) for k, v in zip(rows[0], r)} for r in rows[1:]]


@pytest.mark.parametrize("over", [
    {"finetune": "full"},
    {"finetune": "lora", "lora": {"r": 4}, "packing": True, "pack_length": 256},
    {"finetune": "full", "distributed": {"fsdp": True}, "grad_accum": 2},
], ids=["full", "lora-packed", "fsdp"])
def test_two_processes_equal_one_process_on_the_same_effective_batches(tmp_path, driver, over):
    accum = over.pop("grad_accum", 1)  # micro-batches per process
    fsdp = over.get("distributed", {}).get("fsdp", False)
    base = {"steps": 3, "batch_size": 2, "save_every": 1 if fsdp else 10, "lr": 1e-2, **over}
    log = launch(driver, tmp_path / "two", 2, {**base, "grad_accum": accum}, tmp_path / "state")
    if fsdp:  # no pickle: FSDP's sharded optimizer state is not written, and it says so
        assert "not written or read under FSDP" in log and not (tmp_path / "state").exists()
    launch(driver, tmp_path / "one", 1, {**base, "grad_accum": 2 * accum,
                                         "distributed": {"fsdp": False}})
    two, one = (json.loads((tmp_path / d / "metrics.json").read_text()) for d in ("two", "one"))
    assert (two["processes"], one["processes"]) == (2, 1)
    assert two["tokens"] == one["tokens"] and two["sequences_seen"] == one["sequences_seen"] == 12 * accum
    for a, b in zip(curve(tmp_path / "two"), curve(tmp_path / "one"), strict=True):
        for key in ("loss", "ce_answer", "ce_rationale", "ce_sem_token", "sem", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert_same_weights(tmp_path / "two" / "m", tmp_path / "one" / "m", atol=2e-5)


def test_two_process_run_killed_after_a_saved_state_resumes_to_the_same_weights(tmp_path, driver):
    """DDP with LoRA dropout: the main process writes model and optimizer state, each rank
    its own RNG state; the resumed run ends with the uninterrupted run's weights."""
    over = {"steps": 4, "save_every": 2, "batch_size": 1, "finetune": "lora",
            "lora": {"r": 4, "dropout": 0.1}, "warmup_steps": 1, "schedule": "linear"}
    launch(driver, tmp_path / "ref", 2, over)
    state = tmp_path / "state"
    launch(driver, tmp_path / "run", 2, over, state, 3, code=3)  # dies in step 3
    latest = next(state.glob("pst-*/latest"))
    assert json.loads((latest / "progress.json").read_text())["step"] == 2
    assert {"rng-0.safetensors", "rng-1.safetensors", "rng-0.json", "rng-1.json"} <= {
        p.name for p in latest.iterdir()}
    assert "resuming from step 2" in launch(driver, tmp_path / "run", 2, over, state)
    assert_same_weights(tmp_path / "ref" / "m", tmp_path / "run" / "m")
    assert curve(tmp_path / "ref") == curve(tmp_path / "run")


@pytest.mark.dvc
def test_dvc_repro_launches_the_stage_on_the_processes_the_params_ask_for(tmp_path, dvc_cache):
    """`dvc repro` of a stage with distributed.processes: 2 launches two processes that
    share the batches (the weights equal a 1-process run's: the tests above, through the
    same launcher); the tiny random student (the launch is what is tested, not the model)."""
    repo = project_copy(tmp_path / "repo", dvc_cache, steps=2, batch_size=1,
                        distributed={"processes": 2, "fsdp": False},
                        model=tiny_model_dir(tmp_path / "tiny"))
    out = finish(dvc(["repro", STAGE], repo))
    two = json.loads((repo / "metrics/train/pst-1.json").read_text())
    details = json.loads((repo / "logs/train/pst-1.json").read_text())
    # the declared metrics are the compared figures only; the rest is in the details
    assert set(two) == set(COMPARED) and set(two["final"]) == set(LOGGED), sorted(two)
    assert details["processes"] == 2 and two["sequences_seen"] == 4, out[-2000:]
    assert {"provenance", "loss_weights", "wall_seconds", "data"} <= set(details)
