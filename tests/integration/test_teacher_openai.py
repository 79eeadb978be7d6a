"""The openai backend against vLLM's own OpenAI-compatible server (what teams deploy as
``vllm serve``; here its module entry point, in the vLLM environment of PST_VLLM_PYTHON)
serving the packaged SmolLM2 on loopback, with an API key:

* a refused key and a model the server does not serve fail at start-up, naming the setting;
* a first run, then a rerun that comes wholly from the cache (the server serves nothing);
* the server killed (SIGKILL) with two runs in flight: the stage run, whose 3 s
  ``outage_budget_s`` is shorter than the outage, ends with one ``error:`` line (exit 1), its
  finished generations stay in the cache, and a rerun once the server is back generates only
  the rest; the run with the default budget waits out the restart and equals an
  uninterrupted run;
* the key is never written to a file or a log.
"""

from __future__ import annotations

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

from pst_distill.config.teacher import TeacherConfig
from pst_distill.io import write_jsonl
from pst_distill.models import resolve_model
from pst_distill.teacher.generate import generate_rationales
from pst_distill.teacher.base import TeacherUnavailable
from pst_distill.teacher.cache import GenerationCache
from pst_distill.teacher.openai_backend import OpenAIBackend

pytestmark = [pytest.mark.model, pytest.mark.vllm]
ROOT = Path(__file__).resolve().parents[2]
MODEL = "smollm2-135m-instruct"
SECRET = "s3cr3t-test-key-do-not-log"
KEY_ENV = "PST_TEST_TEACHER_KEY"
SEED, N_ITEMS, MAX_NEW_TOKENS = 3, 6, 24


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class VllmServer:
    """``python -m vllm.entrypoints.openai.api_server`` on one loopback port, restartable.
    The key reaches it through its environment (VLLM_API_KEY), not its command line. The
    server runs its engine in a child process, so it gets a process group of its own and
    every kill goes to the whole group (a SIGKILL to the server alone orphans the engine)."""

    def __init__(self, python: str, log_path: Path):
        self.python, self.log_path = python, log_path
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.proc = None

    def start(self, timeout_s: float = 180.0) -> None:
        cmd = [self.python, "-m", "vllm.entrypoints.openai.api_server",
               "--model", resolve_model(MODEL), "--served-model-name", MODEL,
               "--host", "127.0.0.1", "--port", str(self.port), "--enforce-eager",
               "--max-model-len", "1024", "--dtype", "float32"]
        # one process fewer: vLLM is imported twice, not three times (a start 21-23 s against
        # 31 s on 2 cores); a deployment keeps vLLM's default
        env = {**os.environ, "VLLM_API_KEY": SECRET, "VLLM_CPU_KVCACHE_SPACE": "1",
               "VLLM_ENABLE_V1_MULTIPROCESSING": "0"}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        deadline = time.monotonic() + timeout_s
        while time.monotonic() < deadline:
            assert self.proc.poll() is None, f"the vLLM server exited: {self.log_tail()}"
            try:
                if requests.get(f"{self.url}/models", timeout=2,
                                headers={"Authorization": f"Bearer {SECRET}"}).ok:
                    return
            except requests.RequestException:
                pass
            time.sleep(0.3)
        raise AssertionError(f"the vLLM server did not answer in {timeout_s} s: {self.log_tail()}")

    def served(self) -> float:
        """Requests the server has finished (its Prometheus counter)."""
        text = requests.get(f"http://127.0.0.1:{self.port}/metrics", timeout=5).text
        return sum(float(ln.rsplit(" ", 1)[1]) for ln in text.splitlines()
                   if ln.startswith("vllm:request_success_total{"))

    def kill(self) -> None:
        self._signal(signal.SIGKILL)
        if self.proc:
            self.proc.wait()

    def stop(self) -> None:
        self._signal(signal.SIGTERM)
        try:
            self.proc.wait(timeout=30)
        except subprocess.TimeoutExpired:
            pass
        self.kill()  # whatever is left of the group (the engine process)

    def _signal(self, sig) -> None:
        if self.proc is not None:
            try:
                os.killpg(self.proc.pid, sig)
            except ProcessLookupError:
                pass

    def log_tail(self) -> str:
        return self.log_path.read_text()[-3000:]


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    python = os.environ.get("PST_VLLM_PYTHON")
    if not python:
        pytest.skip("PST_VLLM_PYTHON is not set: `make test` builds .venv-vllm and sets it")
    srv = VllmServer(python, tmp_path_factory.mktemp("vllm-server") / "server.log")
    srv.start()
    yield srv
    srv.stop()
    assert SECRET not in srv.log_path.read_text()


@pytest.fixture
def running(server, monkeypatch):
    """The server, up (a test before may have left it down), and the key in the env."""
    monkeypatch.setenv(KEY_ENV, SECRET)
    if server.proc.poll() is not None:
        server.start()
    return server


def teacher_cfg(server, **openai) -> TeacherConfig:
    opts = {"base_url": server.url, "api_key_env": KEY_ENV, "max_concurrency": 2, **openai}
    return TeacherConfig(backend="openai", model=MODEL, max_new_tokens=MAX_NEW_TOKENS,
                         openai=opts, cache={"flush_s": 0})  # each one on disk at once


def cached(folder: Path) -> dict:
    cache = GenerationCache(None, read=[folder])
    return {k: cache.get(k) for k in cache.keys()}


@pytest.fixture(scope="module")
def reference(server, tmp_path_factory):
    """An uninterrupted first run and its cache: what every interrupted run must end with."""
    from pst_distill.config.prepare import TaskSpec
    from pst_distill.tasks import build_task

    items = build_task(TaskSpec(name="multistep_arithmetic", n=N_ITEMS,
                                options={"steps": 2, "max_value": 20}), 0)
    os.environ[KEY_ENV] = SECRET
    try:
        cache = tmp_path_factory.mktemp("reference-cache")
        _, gens, stats = generate_rationales(items, teacher_cfg(server), "Answer:", SEED,
                                             cache_dir=str(cache))
    finally:
        del os.environ[KEY_ENV]
    assert stats["cache"]["written"] == N_ITEMS
    return items, gens, cache


def comparable(gens: list[dict]) -> str:
    return json.dumps(gens, sort_keys=True)


def test_unreachable_server_fails_fast_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = TeacherConfig(backend="openai", openai={"base_url": url, "connect_timeout_s": 2})
    start = time.perf_counter()
    with pytest.raises(TeacherUnavailable,
                       match=f"no OpenAI-compatible server answers at {url}/models"):
        generate_rationales([{"id": "x"}], cfg, "Answer:", 0)
    assert time.perf_counter() - start < 10


def test_refused_key_and_unserved_model_are_clear(running, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(TeacherUnavailable, match=f"set the API key in env var {KEY_ENV}"):
        OpenAIBackend(teacher_cfg(running), "Answer:").check()
    monkeypatch.setenv(KEY_ENV, SECRET)
    cfg = teacher_cfg(running).model_copy(update={"model": "other-model"})
    with pytest.raises(TeacherUnavailable, match="does not serve teacher.model 'other-model'"):
        OpenAIBackend(cfg, "Answer:").check()


def test_first_run_then_rerun_from_the_cache(running, reference):
    items, expected, cache = reference
    assert all(g["completion_tokens"] > 0 and g["teacher"]["backend"] == "openai"
               for g in expected)
    served = running.served()
    _, again, stats = generate_rationales(items, teacher_cfg(running), "Answer:", SEED,
                                          cache_dir=str(cache))
    assert stats["cache"] == {"hits": N_ITEMS, "misses": 0, "corrupt": 0, "written": 0}
    assert running.served() == served  # nothing reached the server
    assert comparable(again) == comparable(expected)


def stage_command(tmp_path: Path, url: str, items: list[dict]) -> tuple[list[str], dict]:
    """The generate_rationales stage on ``items`` against ``url`` with a 3 s outage budget:
    its command line and its outputs."""
    params = yaml.safe_load((ROOT / "params.yaml").read_text())
    params["common"]["seed"] = SEED
    params["teacher"].update(backend="openai", model=MODEL, max_new_tokens=MAX_NEW_TOKENS,
                             openai={"base_url": url, "api_key_env": KEY_ENV,
                                     "max_concurrency": 1, "outage_budget_s": 3,
                                     "backoff_s": 0.2, "max_backoff_s": 1},
                             cache={"flush_s": 0})
    (tmp_path / "params.yaml").write_text(yaml.safe_dump(params))
    write_jsonl(tmp_path / "train.jsonl", items)
    outs = {n: tmp_path / n for n in ("kept.jsonl", "gens.jsonl", "stats.json")}
    cmd = [sys.executable, str(ROOT / "stages" / "generate_rationales.py"),
           "--params", str(tmp_path / "params.yaml"), "--train", str(tmp_path / "train.jsonl"),
           "--out", str(outs["kept.jsonl"]), "--generations", str(outs["gens.jsonl"]),
           "--stats", str(outs["stats.json"]), "--cache-dir", str(tmp_path / "stage-cache")]
    return cmd, outs


def wait_for(pred, what: str, timeout_s: float = 300) -> None:
    deadline = time.monotonic() + timeout_s
    while not pred():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


def test_one_outage_two_budgets(running, reference, tmp_path, caplog):
    """One SIGKILL of the server, two runs in flight, two budgets. The stage run with a 3 s
    outage budget ends with one ``error:`` line (exit 1), keeps what it finished, and a rerun
    once the server is back generates only the rest. The in-process run with the default
    budget (120 s) waits out the outage (the server's restart) and completes like an
    uninterrupted run. The stage sends one request at a time and starts first, the run two at
    a time once the stage has one: each is mid-run at the kill."""
    items, expected, _ = reference
    cmd, outs = stage_command(tmp_path, running.url, items)
    stage_cache, run_cache = tmp_path / "stage-cache", tmp_path / "run-cache"
    env = {**os.environ, KEY_ENV: SECRET, "OMP_NUM_THREADS": "1"}
    log = tmp_path / "stage.log"  # a file, not a pipe nobody reads until the end
    with open(log, "w") as fh:
        stage = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=fh, cwd=tmp_path, env=env)
    wait_for(lambda: len(cached(stage_cache)) >= 1 or stage.poll() is not None,
             "the stage's first generation")
    record = {}

    def outage() -> None:
        wait_for(lambda: len(cached(run_cache)) >= 2, "the run's second generation")
        running.kill()
        record["stage"], record["run"] = cached(stage_cache), cached(run_cache)
        running.start()  # 20 s or more: the stage's 3 s budget runs out long before
        record["restarted"] = True

    killer = threading.Thread(target=outage, daemon=True)
    killer.start()
    cfg = teacher_cfg(running, max_backoff_s=1)  # retries the restarted server at once
    with caplog.at_level("INFO", logger="pst_distill"):
        _, gens, stats = generate_rationales(items, cfg, "Answer:", SEED,
                                             cache_dir=str(run_cache))  # default budget
    killer.join(timeout=300)
    stage.wait(timeout=60)
    stderr = log.read_text()
    assert record.get("restarted"), "the server was not restarted"

    # the default budget waited out the outage
    assert 2 <= len(record["run"]) < N_ITEMS, "the kill did not land mid-run"
    assert "ConnectionError" in caplog.text  # the dead server was retried
    assert stats["cache"]["written"] == N_ITEMS
    after = cached(run_cache)
    assert all(after[k] == comp for k, comp in record["run"].items())
    assert comparable(gens) == comparable(expected)
    assert SECRET not in caplog.text

    # the 3 s budget gave up: one error line, finished work kept, no partial outputs
    last = stderr.strip().splitlines()[-1]
    assert stage.returncode == 1, stderr[-3000:]  # stopped, not a bad param (2)
    assert "Traceback" not in stderr, stderr[-3000:]
    assert last.startswith("error: ") and running.url in last and "outage_budget_s" in last
    kept = sorted(cached(stage_cache))
    assert f"{len(kept)} of {N_ITEMS} generations finished and are kept" in last, last
    assert 1 <= len(kept) < N_ITEMS and set(record["stage"]) <= set(kept)
    assert not any(p.exists() for p in outs.values())
    assert SECRET not in stderr

    # the server is back: a rerun generates only the missing ones
    proc = subprocess.run(cmd, capture_output=True, text=True, timeout=600, cwd=tmp_path, env=env)
    assert proc.returncode == 0, proc.stderr[-3000:]
    stats = json.loads(outs["stats.json"].read_text())
    assert stats["cache"]["hits"] == len(kept)
    assert stats["cache"]["written"] == N_ITEMS - len(kept)
    gens = [json.loads(ln) for ln in outs["gens.jsonl"].read_text().splitlines()]
    assert comparable(gens) == comparable(expected)
    written = [p.read_bytes() for p in tmp_path.rglob("*") if p.is_file()]
    assert not any(SECRET.encode() in b for b in written)
    assert SECRET not in proc.stderr
