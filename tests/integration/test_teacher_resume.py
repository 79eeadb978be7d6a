"""The generate_rationales stage with the transformers teacher as a subprocess: SIGKILL
mid-run, resume, unchanged rerun and added questions on the packaged SmolLM2; per-request
sampling on a tiny random teacher."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from student_fixtures import tiny_model_dir

from pst_distill.io import read_json, read_jsonl, write_jsonl
from pst_distill.teacher.cache import GenerationCache

pytestmark = pytest.mark.model
REPO = Path(__file__).resolve().parents[2]
STAGE = REPO / "stages" / "generate_rationales.py"


def stage_cmd(tmp: Path) -> list[str]:
    return [sys.executable, str(STAGE), "--params", str(tmp / "params.yaml"),
            "--train", str(tmp / "train.jsonl"), "--out", str(tmp / "out" / "train.jsonl"),
            "--generations", str(tmp / "out" / "generations.jsonl"),
            "--stats", str(tmp / "out" / "teacher.json"), "--cache-dir", str(tmp / "cache")]


def run_stage(tmp: Path) -> dict:
    env = {**os.environ, "OMP_NUM_THREADS": "1"}  # 2 spin-wait badly on a busy 2-core box
    done = subprocess.run(stage_cmd(tmp), env=env, capture_output=True, text=True, timeout=300)
    assert done.returncode == 0, done.stderr[-3000:]
    return read_json(tmp / "out" / "teacher.json")


def cached(folder: Path) -> dict:
    """Every generation in a cache folder: ``{key: Completion}``."""
    cache = GenerationCache(None, read=[folder])
    return {k: cache.get(k) for k in cache.keys()}


def kill_when_cached(tmp: Path, n_done: int) -> dict:
    """Start the stage, SIGKILL it once n_done generations are cached; return the cache."""
    log = open(tmp / "killed.log", "w")
    proc = subprocess.Popen(stage_cmd(tmp), stdout=log, stderr=log,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    deadline = time.monotonic() + 240
    while len(cached(tmp / "cache")) < n_done and proc.poll() is None \
            and time.monotonic() < deadline:
        time.sleep(0.05)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    log.close()
    assert proc.returncode == -signal.SIGKILL, (tmp / "killed.log").read_text()[-3000:]
    return cached(tmp / "cache")


def test_kill_resume_rerun_and_added_questions(tmp_path, teacher_items):
    items = teacher_items(7)
    write_jsonl(tmp_path / "train.jsonl", items[:6])
    params = {"common": {"seed": 1},
              "teacher": {"backend": "transformers", "max_new_tokens": 12, "batch_size": 2,
                          "device": "cpu", "only_correct": False,
                          "cache": {"flush_s": 0}}}  # each generation on disk at once
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))

    at_kill = kill_when_cached(tmp_path, 2)
    assert 2 <= len(at_kill) < 6, "the kill did not land mid-run"
    assert not (tmp_path / "out" / "generations.jsonl").exists()

    stats = run_stage(tmp_path)  # resume
    assert stats["cache"]["hits"] == len(at_kill)  # nothing finished was lost …
    assert stats["cache"]["misses"] == stats["cache"]["written"] == 6 - len(at_kill)
    after = cached(tmp_path / "cache")
    assert all(after[k] == comp for k, comp in at_kill.items())
    gens = read_jsonl(tmp_path / "out" / "generations.jsonl")
    assert len({g["key"] for g in gens}) == len(gens) == 6  # … and nothing is duplicated
    assert len(after) == 6
    first = (tmp_path / "out" / "generations.jsonl").read_bytes()

    stats = run_stage(tmp_path)  # unchanged: zero generations, identical output
    assert stats["cache"] == {"hits": 6, "misses": 0, "corrupt": 0, "written": 0}
    assert (tmp_path / "out" / "generations.jsonl").read_bytes() == first

    write_jsonl(tmp_path / "train.jsonl", items)  # one question more
    stats = run_stage(tmp_path)
    assert stats["cache"]["hits"] == 6 and stats["cache"]["written"] == 1
    assert len(read_jsonl(tmp_path / "out" / "generations.jsonl")) == 7


@pytest.fixture(scope="module")
def tiny_teacher(tmp_path_factory) -> str:
    """A 2-layer random Llama on SmolLM2's tokenizer: the sampling checks need a model that
    samples, not one that answers, and it generates in a fraction of the 135M model's time."""
    return tiny_model_dir(tmp_path_factory.mktemp("tiny-teacher"))


def sampled_texts(tmp: Path) -> dict[str, tuple[str, str, int]]:
    return {k: (c.text, c.finish_reason, c.completion_tokens)
            for k, c in cached(tmp / "cache").items()}


def sampling_run(tmp: Path, model: str, items: list[dict], batch_size: int, seed: int = 1,
                 kept: dict | None = None) -> dict[str, tuple[str, str, int]]:
    """The stage at temperature 0.8 on ``items``, starting from the ``kept`` generations."""
    tmp.mkdir()
    write_jsonl(tmp / "train.jsonl", items)
    params = {"common": {"seed": seed},
              "teacher": {"backend": "transformers", "model": model, "max_new_tokens": 16,
                          "temperature": 0.8,
                          "top_p": 0.95, "batch_size": batch_size, "device": "cpu",
                          "only_correct": False}}
    (tmp / "params.yaml").write_text(yaml.safe_dump(params))
    cache = GenerationCache(tmp / "cache")
    for comp in (kept or {}).values():
        cache.put(comp, comp.meta)
    cache.close()
    stats = run_stage(tmp)
    assert stats["cache"]["hits"] == len(kept or {})
    return sampled_texts(tmp)


def test_sampling_is_per_request_resume_and_batch_size_independent(tmp_path, teacher_items,
                                                                   tiny_teacher):
    """At temperature > 0 each request draws from its own seed: a run resumed from a partial
    cache (as a kill leaves it, see above) and a run with another batch size sample exactly
    the texts of an uninterrupted run."""
    items = teacher_items(5)
    whole = sampling_run(tmp_path / "whole", tiny_teacher, items, batch_size=2)
    assert len(whole) == 5
    # batches go longest prompt first: [0 1] [2 3] [4]. Kept: 0 and 2, as a kill between
    # requests would leave them, so the resumed run batches the rest as [1 3] [4]
    gens = read_jsonl(tmp_path / "whole" / "out" / "generations.jsonl")
    by_length = [g["key"] for g in sorted(gens, key=lambda g: -len(g["prompt"]))]
    whole_cache = cached(tmp_path / "whole" / "cache")
    kept = {k: whole_cache[k] for k in (by_length[0], by_length[2])}
    resumed = sampling_run(tmp_path / "resumed", tiny_teacher, items, batch_size=2, kept=kept)
    assert resumed == whole
    assert sampling_run(tmp_path / "bs3", tiny_teacher, items, batch_size=3) == whole
    # and it does sample: another seed draws other texts
    other = sampling_run(tmp_path / "seed2", tiny_teacher, items, batch_size=2, seed=2)
    assert sorted(t for t, *_ in other.values()) != sorted(t for t, *_ in whole.values())
