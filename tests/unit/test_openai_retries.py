"""The openai backend's retries against a scripted HTTP server on loopback: a failure
injector, not a model server (the real one, vLLM's, is in
tests/integration/test_teacher_openai.py; it cannot be made to answer 429 or 503 on cue).
"""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from pst_distill.config.teacher import TeacherConfig
from pst_distill.teacher.base import Request, Sampling, TeacherUnavailable
from pst_distill.teacher.openai_backend import OpenAIBackend

ANSWER = {"choices": [{"message": {"content": "2 + 2 = 4\nAnswer: 4\nmore"},
                       "finish_reason": "stop"}],
          "usage": {"prompt_tokens": 7, "completion_tokens": 9}}


@pytest.fixture
def scripted():
    """A server whose chat answers follow ``script`` (status codes; 200 = ANSWER)."""
    state = {"script": [], "seen": []}

    class Handler(BaseHTTPRequestHandler):
        def log_message(self, *args):
            pass

        def do_POST(self):
            body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
            state["seen"].append(body)
            status = state["script"].pop(0) if state["script"] else 200
            payload = json.dumps(ANSWER if status == 200 else {"error": "busy"}).encode()
            self.send_response(status)
            if status == 429:
                self.send_header("Retry-After", "0.3")
            self.send_header("Content-Length", str(len(payload)))
            self.end_headers()
            self.wfile.write(payload)

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    state["url"] = f"http://127.0.0.1:{server.server_address[1]}/v1"
    yield state
    server.shutdown()


def backend(url: str, **opts) -> OpenAIBackend:
    cfg = TeacherConfig(backend="openai", model="m", openai={
        "base_url": url, "api_key_env": None, "backoff_s": 0.05, "max_backoff_s": 0.5, **opts})
    return OpenAIBackend(cfg, "Answer:")


REQ = Request(key="ab" * 16, item={}, sample=0, messages=({"role": "user", "content": "2+2?"},))
SAMPLING = Sampling(temperature=0.0, top_p=1.0, max_new_tokens=16, seed=1)


def test_429_and_503_are_retried_honouring_retry_after(scripted, caplog):
    scripted["script"] = [429, 503]
    with caplog.at_level("WARNING"):
        [comp] = list(backend(scripted["url"]).generate([REQ], SAMPLING))
    assert len(scripted["seen"]) == 3
    assert "HTTP 429" in caplog.text and "HTTP 503" in caplog.text
    assert comp.text == "2 + 2 = 4\nAnswer: 4" and comp.finish_reason == "stop"
    assert (comp.prompt_tokens, comp.completion_tokens) == (7, 9)
    sent = scripted["seen"][0]
    assert sent["n"] == 1 and sent["max_tokens"] == 16 and "seed" in sent


def test_a_client_error_is_not_retried(scripted):
    scripted["script"] = [400]
    with pytest.raises(TeacherUnavailable, match="HTTP 400"):
        list(backend(scripted["url"]).generate([REQ], SAMPLING))
    assert len(scripted["seen"]) == 1


def test_retries_stop_at_the_outage_budget(scripted):
    scripted["script"] = [503] * 1000
    with pytest.raises(TeacherUnavailable, match=r"outage_budget_s = 0.5 s"):
        list(backend(scripted["url"], outage_budget_s=0.5).generate([REQ], SAMPLING))
    assert 2 <= len(scripted["seen"]) < 50
