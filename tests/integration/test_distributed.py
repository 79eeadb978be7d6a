"""Data parallel training through accelerate on 2 CPU processes (gloo), DDP and FSDP2:
after a few steps the weights, the loss curve and the gradient norms equal those of one
process that runs the same effective batches (its grad_accum doubled). A 2-process run
killed after a saved state resumes to the weights of an uninterrupted one; FSDP refuses
resumable state.

A launch costs a torch import per process, not the training: so one 2-process launch runs
every uninterrupted 2-process run below in turn, and one 1-process launch every reference
(several runs in one process start from a fresh Accelerator; the resume test compares the
last run of a launch with runs that are alone in theirs, so state leaking from one run
into the next fails it)."""

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
real = loop.train_step
for job in json.loads(sys.argv[1]):  # {{out, over, state?, crash_at?}}, in turn
    s = settings({model!r}, "pst", **job["over"])
    out = Path(job["out"])
    if job.get("crash_at"):  # die at that train_step call, as a kill would
        calls = []
        def crashing(*args, **kwargs):
            calls.append(1)
            if len(calls) == job["crash_at"]:
                raise SystemExit(3)
            return real(*args, **kwargs)
        loop.train_step = crashing
    res = loop.train(assembled_rows("pst", items(8)), s, "pst", FMT, 0, out / "m", out / "c.tsv",
                     embeddings(8), "cpu", state_dir=job.get("state"))
    if res.is_main:
        (out / "metrics.json").write_text(json.dumps(res.metrics))
"""

PARALLEL = {  # the 2-process runs; the 1-process reference doubles grad_accum
    "full": {"finetune": "full"},
    "lora-packed": {"finetune": "lora", "lora": {"r": 4}, "packing": True, "pack_length": 256},
    "fsdp": {"finetune": "full", "distributed": {"fsdp": True}, "grad_accum": 2},
}
# DDP with LoRA dropout, saving every 2 steps: the run the resume test kills
DROPOUT = {"steps": 4, "save_every": 2, "batch_size": 1, "finetune": "lora",
           "lora": {"r": 4, "dropout": 0.1}, "warmup_steps": 1, "schedule": "linear"}


def launch(driver, processes: int, jobs: list[dict], code: int = 0) -> str:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    for key in ("WORLD_SIZE", "LOCAL_RANK", "RANK", "MASTER_ADDR", "MASTER_PORT"):
        env.pop(key, None)
    prefix = [sys.executable] if processes == 1 else [
        sys.executable, "-m", "torch.distributed.run", "--standalone", f"--nproc-per-node={processes}"]
    proc = subprocess.run([*prefix, str(driver), json.dumps(jobs, default=str)],  # paths
                          env=env, capture_output=True, text=True, timeout=600)
    assert (proc.returncode == 0) == (code == 0), proc.stderr[-3000:]
    return proc.stderr


def base(over: dict) -> tuple[dict, int]:
    """The run's params without grad_accum, and its micro-batches per process."""
    over = dict(over)
    accum = over.pop("grad_accum", 1)
    fsdp = over.get("distributed", {}).get("fsdp", False)
    return {"steps": 3, "batch_size": 2, "save_every": 1 if fsdp else 10, "lr": 1e-2, **over}, accum


@pytest.fixture(scope="module")
def runs(tmp_path_factory):
    """Every uninterrupted run, in two launches: ``root`` holds a run's folder under its
    name (``<name>-one``: its 1-process reference), ``log`` the 2-process launch's log,
    ``driver`` the script that launches more."""
    root = tmp_path_factory.mktemp("dist")
    driver = root / "driver.py"
    driver.write_text(DRIVER.format(here=str(HERE), model=tiny_model_dir(root / "tiny")))
    two, one = [], []
    for name, over in PARALLEL.items():
        params, accum = base(over)
        two.append({"out": root / name, "over": {**params, "grad_accum": accum},
                    "state": root / f"{name}-state"})
        one.append({"out": root / f"{name}-one",
                    "over": {**params, "grad_accum": 2 * accum, "distributed": {"fsdp": False}}})
    two.append({"out": root / "dropout", "over": DROPOUT})
    log = launch(driver, 2, two)
    launch(driver, 1, one)
    return {"root": root, "driver": driver, "log": log}


def curve(out):
    rows = [line.split("\t") for line in (out / "c.tsv").read_text().splitlines()]
    return [{k: float(v) for k, v in zip(rows[0], r)} for r in rows[1:]]


@pytest.mark.parametrize("name", list(PARALLEL))
def test_two_processes_equal_one_process_on_the_same_effective_batches(runs, name):
    root = runs["root"]
    accum = base(PARALLEL[name])[1]
    if name == "fsdp":  # no pickle: FSDP's sharded optimizer state is not written, and it says so
        assert "not written or read under FSDP" in runs["log"]
        assert not (root / "fsdp-state").exists()
    two, one = (json.loads((root / d / "metrics.json").read_text()) for d in (name, f"{name}-one"))
    assert (two["processes"], one["processes"]) == (2, 1)
    assert two["tokens"] == one["tokens"] and two["sequences_seen"] == one["sequences_seen"] == 12 * accum
    for a, b in zip(curve(root / name), curve(root / f"{name}-one"), strict=True):
        for key in ("loss", "ce_answer", "ce_rationale", "ce_sem_token", "sem", "grad_norm", "lr"):
            assert a[key] == pytest.approx(b[key], rel=1e-4), key
    assert_same_weights(root / name / "m", root / f"{name}-one" / "m", atol=2e-5)


def test_two_process_run_killed_after_a_saved_state_resumes_to_the_same_weights(tmp_path, runs):
    """DDP with LoRA dropout: the main process writes model and optimizer state, each rank
    its own RNG state; the resumed run ends with the uninterrupted run's weights."""
    state, run = tmp_path / "state", {"out": tmp_path / "run", "over": DROPOUT}
    launch(runs["driver"], 2, [{**run, "state": state, "crash_at": 3}], code=3)  # dies in step 3
    latest = next(state.glob("pst-*/latest"))
    assert json.loads((latest / "progress.json").read_text())["step"] == 2
    assert {"rng-0.safetensors", "rng-1.safetensors", "rng-0.json", "rng-1.json"} <= {
        p.name for p in latest.iterdir()}
    assert "resuming from step 2" in launch(runs["driver"], 2, [{**run, "state": state}])
    ref = runs["root"] / "dropout"
    assert_same_weights(ref / "m", tmp_path / "run" / "m")
    assert curve(ref) == curve(tmp_path / "run")


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
