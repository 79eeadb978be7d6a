"""The vLLM teacher with the real engine (vLLM's CPU build, in its own interpreter: the one
``make test`` builds in .venv-vllm and names in PST_VLLM_PYTHON) on the packaged SmolLM2,
through ``dvc repro generate_rationales`` in a copy of the project:

* greedy: every generation made and recorded with the engine's metadata;
* sampled, two samples per question, seeded from each request's key, on two data-parallel
  engines: a forced rerun comes from the cache byte for byte and starts no engine; one
  engine, in a run killed with SIGKILL part-way and resumed in other batches, writes the
  same generations, regenerating nothing it kept. Seeded sampling is the harder case of
  "two engines give the outputs of one": it holds only if neither the shard, the batch nor
  the position changes a request's logits or its random stream; greedy needs the first.
* bad input stops with one ``error:`` line naming the key before any engine starts: a prompt
  longer than ``teacher.vllm.max_model_len``, a teacher model that does not exist, an
  interpreter without vLLM.
"""

from __future__ import annotations

import json
import os
import signal
import time
from pathlib import Path

import pytest
from project import copy_project, dvc, profile, run_dvc, write_params

pytestmark = [pytest.mark.model, pytest.mark.dvc, pytest.mark.vllm]
STAGE = "generate_rationales"
ITEMS = 8  # training questions (10 generated, a fifth held out as test)
ENGINE_STARTED = "Initializing a V1 LLM engine"


@pytest.fixture(scope="module")
def vllm_python() -> str:
    exe = os.environ.get("PST_VLLM_PYTHON")
    if not exe:
        pytest.skip("PST_VLLM_PYTHON is not set: `make test` builds .venv-vllm and sets it")
    return exe


def teacher_params(vllm_python: str, **over) -> dict:
    params = profile("tiny")
    params["prepare"] = {"test_frac": 0.2, "tasks": [
        {"name": "multistep_arithmetic", "n": 10, "options": {"steps": 2, "max_value": 20}}]}
    vllm = {"python": vllm_python, "chunk_size": 8, "max_model_len": 512,
            **over.pop("vllm", {})}
    params["teacher"] = {"backend": "vllm", "model": "smollm2-135m-instruct",
                         "max_new_tokens": 16, "vllm": vllm, "cache": {"flush_s": 0}, **over}
    return params


@pytest.fixture(scope="module")
def repo(tmp_path_factory, vllm_python) -> Path:
    return copy_project(tmp_path_factory.mktemp("vllm") / "repo", teacher_params(vllm_python))


def outputs(repo: Path) -> dict[str, bytes]:
    return {p: (repo / p).read_bytes() for p in ("data/rationales/generations.jsonl",
                                                 "data/rationales/train.jsonl")}


def generations(repo: Path) -> list[dict]:
    lines = (repo / "data/rationales/generations.jsonl").read_text().splitlines()
    return [json.loads(ln) for ln in lines]


def without_teacher(gens: list[dict]) -> list[dict]:
    """Generations without their engine metadata (which names the data-parallel rank)."""
    return [{k: v for k, v in g.items() if k != "teacher"} for g in gens]


def teacher_log(repo: Path) -> dict:
    return json.loads((repo / "logs/teacher.json").read_text())


def cached(repo: Path) -> int:
    from pst_distill.teacher.cache import GenerationCache

    return len(GenerationCache(None, read=[repo / ".cache/teacher"]).keys())


def test_greedy(repo):
    run_dvc(["repro", STAGE], repo)
    gens, stats = generations(repo), teacher_log(repo)
    assert len(gens) == ITEMS and stats["cache"]["written"] == ITEMS
    meta = gens[0]["teacher"]
    assert meta["backend"] == "vllm" and meta["vllm"] == "0.32.0" and meta["device"] == "cpu"
    assert meta["dtype"] == "float32"  # auto on a CPU without native bf16
    assert meta["data_parallel_size"] == 1 and meta["dp_rank"] == 0
    assert all(g["completion_tokens"] > 0 and g["finish_reason"] in ("stop", "length")
               and g["prompt_tokens"] > 20 for g in gens)
    assert len({g["key"] for g in gens}) == ITEMS


def test_sampled_two_engines_rerun_and_sigkill_resume(repo, vllm_python):
    """Two samples a question, seeded from each request's key: two data-parallel engines
    write what one engine writes, from a killed run resumed in other batches."""
    sampled = {"n": 2, "temperature": 0.8, "top_p": 0.95}

    def params(**vllm):
        return teacher_params(vllm_python, **sampled, vllm=vllm)

    write_params(repo, params(data_parallel_size=2))
    _, out = run_dvc(["repro", STAGE], repo)
    assert out.count(ENGINE_STARTED) == 2
    gens, reference = generations(repo), outputs(repo)
    assert len(gens) == 2 * ITEMS and {g["sample"] for g in gens} == {0, 1}
    assert {g["teacher"]["dp_rank"] for g in gens} == {0, 1}
    pairs = {}
    for g in gens:
        pairs.setdefault(g["id"], []).append(g["rationale"])
    assert sum(a != b for a, b in pairs.values()) >= ITEMS // 2  # samples, not copies

    _, out = run_dvc(["repro", "-f", STAGE], repo)
    assert outputs(repo) == reference
    assert teacher_log(repo)["cache"] == {"hits": 2 * ITEMS, "misses": 0, "corrupt": 0,
                                          "written": 0}
    assert ENGINE_STARTED not in out  # everything came from the cache: no engine

    # one engine, chunks of 4: the kill lands between two of them
    write_params(repo, params(chunk_size=4))
    (repo / ".cache/teacher").rename(repo / ".cache/teacher-two-engines")
    proc = dvc(["repro", "-f", STAGE], repo, start_new_session=True)
    deadline = time.monotonic() + 300
    while cached(repo) < 4:
        assert proc.poll() is None, "the run ended before the kill"
        assert time.monotonic() < deadline
        time.sleep(0.1)
    os.killpg(proc.pid, signal.SIGKILL)
    proc.communicate(timeout=60)
    kept = cached(repo)
    assert 4 <= kept < 2 * ITEMS, kept

    # resumed on one engine in one chunk: only the rest is generated
    write_params(repo, params(chunk_size=2 * ITEMS))
    run_dvc(["repro", "-f", STAGE], repo)  # forced: not restored from the run-cache
    stats = teacher_log(repo)["cache"]
    assert stats["hits"] == kept and stats["written"] == 2 * ITEMS - kept
    one = generations(repo)
    assert {g["teacher"]["dp_rank"] for g in one} == {0}
    assert without_teacher(one) == without_teacher(gens)


@pytest.mark.parametrize("over, key", [
    ({"vllm": {"max_model_len": 40}}, "teacher.vllm.max_model_len"),
    ({"model": "./no/such/teacher"}, "teacher.model"),
    ({"vllm": {"python": "/no/such/python"}}, "teacher.vllm.python"),
])
def test_bad_input_names_the_key_before_any_engine(tmp_path, vllm_python, over, key):
    params = teacher_params(vllm_python, **{k: v for k, v in over.items() if k != "vllm"},
                            vllm=over.get("vllm", {}))
    repo = copy_project(tmp_path / "repo", params)
    code, out = run_dvc(["repro", STAGE], repo, ok=False)
    assert code != 0
    lines = out.splitlines()
    starts = [i for i, ln in enumerate(lines) if ln.startswith("error: ")]
    assert len(starts) == 1, out[-3000:]
    message = [lines[starts[0]]]  # the error line and its indented continuation lines
    message += [ln for ln in lines[starts[0] + 1:] if ln.startswith("  ")][:5]
    assert key in "\n".join(message), out[-3000:]
    assert "Traceback" not in out and ENGINE_STARTED not in out
    assert "exited with 2" in out  # bad input, not a crash
    assert not (repo / "data/rationales/generations.jsonl").exists()


def test_a_failing_engine_stops_the_run_naming_its_rank(teacher_items):
    """An engine process that exits non-zero (here: an interpreter without vLLM, past the
    stage's own check) ends the run with its rank and exit code, not a hang."""
    import sys

    from pst_distill.config.teacher import TeacherConfig
    from pst_distill.teacher.generate import generate_rationales

    cfg = TeacherConfig(backend="vllm", max_new_tokens=8,
                        vllm={"python": sys.executable, "data_parallel_size": 2})
    with pytest.raises(RuntimeError, match=r"vLLM engine [01] \(.*\) exited with code 1"):
        generate_rationales(teacher_items(4), cfg, "Answer:", 0)
