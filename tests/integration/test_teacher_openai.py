"""The OpenAI-compatible backend against a real server (tests/support/serve.py + SmolLM2)
on loopback: HTTP contract, API key handling, 429s, and a server killed mid-run. The
third-party server (llama.cpp's) is tested in test_teacher_llamacpp.py."""

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

from pst_distill.config import TeacherConfig
from pst_distill.teacher import generate_rationales
from pst_distill.teacher.cache import GenerationCache
from pst_distill.teacher.base import TeacherUnavailable
from pst_distill.teacher.openai_backend import OpenAIBackend

pytestmark = pytest.mark.slow
MODEL = "smollm2-135m-instruct"
SECRET = "s3cr3t-test-key-do-not-log"
KEY_ENV = "PST_TEST_TEACHER_KEY"
SERVE = Path(__file__).resolve().parents[1] / "support" / "serve.py"


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class Server:
    """``tests/support/serve.py`` as a subprocess on a fixed loopback port."""

    def __init__(self, log_path):
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/v1"
        self.log_path = log_path
        self.proc = None

    def start(self) -> None:
        cmd = [sys.executable, str(SERVE), "--model", MODEL, "--port",
               str(self.port), "--api-key-env", KEY_ENV, "--max-queue", "2"]
        env = {**os.environ, KEY_ENV: SECRET, "OMP_NUM_THREADS": "1"}
        with open(self.log_path, "a") as log:
            self.proc = subprocess.Popen(cmd, env=env, stdout=subprocess.PIPE, stderr=log,
                                         text=True)
        line = self.proc.stdout.readline()  # printed once the model is loaded
        assert line.startswith("serving"), f"server did not start: {self.log_path.read_text()}"

    def kill(self) -> None:
        self.proc.send_signal(signal.SIGKILL)
        self.proc.wait()

    def health(self) -> dict:
        return requests.get(f"http://127.0.0.1:{self.port}/health", timeout=5).json()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    srv = Server(tmp_path_factory.mktemp("serve") / "server.log")
    srv.start()
    yield srv
    srv.proc.terminate()
    srv.proc.wait(timeout=30)


def chat(server, key=SECRET, **body):
    body = {"model": MODEL, "messages": [{"role": "user", "content": "Count: 1, 2, 3,"}], **body}
    headers = {"Authorization": f"Bearer {key}"} if key else {}
    return requests.post(f"{server.url}/chat/completions", json=body, headers=headers,
                         timeout=120)


def teacher_cfg(server, **openai) -> TeacherConfig:
    opts = {"base_url": server.url, "api_key_env": KEY_ENV, "max_concurrency": 4,
            "outage_budget_s": 90.0, "backoff_s": 0.3, "max_backoff_s": 3.0, "timeout_s": 120.0}
    return TeacherConfig(backend="openai", model=MODEL, max_new_tokens=12,
                         openai={**opts, **openai})


def test_http_contract(server):
    assert chat(server, key=None, max_tokens=2).status_code == 401
    assert chat(server, model="nope", max_tokens=2).status_code == 404
    assert chat(server, n=0).status_code == 400

    sampled = [chat(server, n=2, temperature=0.9, top_p=0.95, seed=5, max_tokens=6).json()
               for _ in range(2)]
    assert sampled[0]["choices"] == sampled[1]["choices"]  # same seed, same samples
    data = sampled[0]
    assert [c["index"] for c in data["choices"]] == [0, 1]
    usage = data["usage"]
    assert usage["total_tokens"] == usage["prompt_tokens"] + usage["completion_tokens"]
    assert 0 < usage["completion_tokens"] <= 12 and usage["prompt_tokens"] > 5

    short = chat(server, temperature=0, max_tokens=3).json()
    assert short["choices"][0]["finish_reason"] == "length"
    assert short["usage"]["completion_tokens"] == 3

    text = chat(server, temperature=0, max_tokens=8).json()["choices"][0]["message"]["content"]
    stop = text.strip()[3:6]
    assert stop.strip(), text
    cut = chat(server, temperature=0, max_tokens=8, stop=[stop]).json()["choices"][0]
    assert cut["finish_reason"] == "stop"
    assert cut["message"]["content"] == text[: text.index(stop)]


def test_unreachable_server_fails_fast_naming_the_url():
    url = f"http://127.0.0.1:{free_port()}/v1"
    cfg = TeacherConfig(backend="openai", openai={"base_url": url, "connect_timeout_s": 2})
    start = time.perf_counter()
    with pytest.raises(TeacherUnavailable,
                       match=f"no OpenAI-compatible server answers at {url}/models"):
        generate_rationales([{"id": "x"}], cfg, "Answer:", 0)
    assert time.perf_counter() - start < 10


def test_wrong_key_and_unknown_model_are_clear(server, monkeypatch):
    monkeypatch.setenv(KEY_ENV, "wrong")
    with pytest.raises(TeacherUnavailable, match=f"set the API key in env var {KEY_ENV}"):
        OpenAIBackend(teacher_cfg(server), "Answer:").check()
    monkeypatch.setenv(KEY_ENV, SECRET)
    cfg = teacher_cfg(server).model_copy(update={"model": "other-model"})
    with pytest.raises(TeacherUnavailable, match="does not serve teacher.model 'other-model'"):
        OpenAIBackend(cfg, "Answer:").check()


def kill_and_restart_when(server, cache_dir, n_done, record):
    """Once n_done generations are cached: SIGKILL the server, snapshot, restart it."""
    cache = GenerationCache(cache_dir)
    deadline = time.monotonic() + 300
    while len(cache.keys()) < n_done and time.monotonic() < deadline:
        time.sleep(0.05)
    server.kill()
    record["at_kill"] = {k: cache.path(k).read_bytes() for k in cache.keys()}
    server.start()


def test_server_killed_mid_run_completes_with_retries(server, tmp_path, teacher_items,
                                                      monkeypatch, caplog):
    monkeypatch.setenv(KEY_ENV, SECRET)
    items, cache_dir, record = teacher_items(8), tmp_path / "cache", {}
    killer = threading.Thread(target=kill_and_restart_when,
                              args=(server, cache_dir, 2, record), daemon=True)
    killer.start()
    with caplog.at_level("WARNING", logger="pst_distill.teacher"):
        kept, gens, stats = generate_rationales(items, teacher_cfg(server), "Answer:", 3,
                                                cache_dir=str(cache_dir))
    killer.join(timeout=300)
    assert 2 <= len(record["at_kill"]) < 8, "the kill did not land mid-run"
    assert len({g["key"] for g in gens}) == len(gens) == 8
    assert stats["cache"] == {"hits": 0, "misses": 8, "corrupt": 0, "written": 8}
    cache = GenerationCache(cache_dir)
    assert all(cache.path(k).read_bytes() == raw for k, raw in record["at_kill"].items())
    assert "ConnectionError" in caplog.text  # the dead server was retried …
    assert "HTTP 429" in caplog.text         # … and so was the server's back-pressure
    assert all(g["finish_reason"] in ("stop", "length") and g["completion_tokens"] > 0
               for g in gens)

    served = server.health()["served"]
    _, again, stats2 = generate_rationales(items, teacher_cfg(server), "Answer:", 3,
                                           cache_dir=str(cache_dir))
    assert stats2["cache"]["hits"] == 8 and server.health()["served"] == served
    assert json.dumps(again, sort_keys=True) == json.dumps(gens, sort_keys=True)

    written = json.dumps([gens, stats]) + caplog.text + server.log_path.read_text()
    assert SECRET not in written
