"""A loopback stand-in for the Hugging Face hub (the real one is unreachable from the test
machines), answering the model-info requests the params checks make as the hub does.

``LoopbackHub().url["answers"]`` knows one repo, ``org/real``, at its default revision only:
200 for it, 404 with the hub's ``X-Error-Code`` header (``RevisionNotFound``,
``RepoNotFound``) for anything else. ``url["hang"]`` accepts connections and never answers.
"""

from __future__ import annotations

import http.server
import socket
import threading


class _Handler(http.server.BaseHTTPRequestHandler):
    def do_GET(self):
        known = self.path == "/api/models/org/real"
        revision = self.path.startswith("/api/models/org/real/revision/")
        self.send_response(200 if known else 404)
        if not known:
            self.send_header("X-Error-Code", "RevisionNotFound" if revision else "RepoNotFound")
        self.send_header("Content-Type", "application/json")
        self.end_headers()
        self.wfile.write(b'{"id": "org/real"}' if known else b'{"error": "not found"}')

    def log_message(self, *args):
        pass


class LoopbackHub:
    def __init__(self):
        self.http = http.server.ThreadingHTTPServer(("127.0.0.1", 0), _Handler)
        threading.Thread(target=self.http.serve_forever, args=(0.05,), daemon=True).start()
        self.silent = socket.socket()
        self.silent.bind(("127.0.0.1", 0))
        self.silent.listen(8)  # connections queue in the backlog; nothing ever answers
        self.url = {"answers": f"http://127.0.0.1:{self.http.server_address[1]}",
                    "hang": f"http://127.0.0.1:{self.silent.getsockname()[1]}"}

    def close(self) -> None:
        self.http.shutdown()
        self.http.server_close()
        self.silent.close()


def go_online(monkeypatch, url: str) -> None:
    """This process asks ``url`` for hub ids (offline mode off, in the environment and in
    huggingface_hub's constants, which it reads from the environment once at import)."""
    from huggingface_hub import constants

    monkeypatch.delenv("HF_HUB_OFFLINE", raising=False)
    monkeypatch.delenv("TRANSFORMERS_OFFLINE", raising=False)
    monkeypatch.setattr(constants, "HF_HUB_OFFLINE", False)
    monkeypatch.setenv("HF_ENDPOINT", url)
