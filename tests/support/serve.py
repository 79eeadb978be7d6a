"""Test support: the smallest real OpenAI-compatible chat server, over transformers.

``python tests/support/serve.py --model smollm2-135m-instruct --port 8000`` serves a model
(packaged alias, local folder or hub id, loaded with :func:`pst_distill.models.load_causal_lm`)
on ``/v1/chat/completions`` (``n``, ``temperature``, ``top_p``, ``max_tokens``, ``stop``,
``seed``; ``usage`` and ``finish_reason`` in the answer), ``/v1/models`` and ``/health``.
It is not part of the library: it lets tests script server behaviour (429s, an API
key, a kill mid-run) on loopback. Real teachers use ``vllm serve`` or llama.cpp's server.

One request generates at a time (a lock around the model); ``--max-queue`` bounds how many
may wait, and the rest get ``429`` with ``Retry-After``, as overloaded servers do.
``--api-key-env NAME`` makes it require ``Authorization: Bearer $NAME``.
"""

from __future__ import annotations

import argparse
import json
import logging
import os
import sys
import threading
import time
import uuid
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

log = logging.getLogger(__name__)


class BadRequest(ValueError):
    pass


def _stops(body: dict) -> list[str]:
    stop = body.get("stop") or []
    stop = [stop] if isinstance(stop, str) else stop
    if not isinstance(stop, list) or not all(isinstance(s, str) and s for s in stop):
        raise BadRequest("stop must be a string or a list of non-empty strings")
    return stop


def parse_request(body: dict) -> dict:
    """Sampling settings of a chat request, validated (OpenAI defaults where absent)."""
    msgs = body.get("messages")
    if not isinstance(msgs, list) or not msgs or not all(
            isinstance(m, dict) and isinstance(m.get("content"), str) for m in msgs):
        raise BadRequest("messages must be a non-empty list of {role, content} objects")
    def get(name, default, cast):
        value = body.get(name)
        return default if value is None else cast(value)

    try:
        opts = {"n": get("n", 1, int), "temperature": get("temperature", 1.0, float),
                "top_p": get("top_p", 1.0, float), "seed": get("seed", None, int),
                "max_tokens": get("max_tokens", get("max_completion_tokens", 256, int), int)}
    except (TypeError, ValueError) as exc:
        raise BadRequest(f"bad sampling parameter: {exc}") from None
    if not 1 <= opts["n"] <= 16 or opts["max_tokens"] < 1 or not 0 < opts["top_p"] <= 1 \
            or opts["temperature"] < 0:
        raise BadRequest("out of range: n in [1, 16], max_tokens >= 1, top_p in (0, 1], "
                         "temperature >= 0")
    return {**opts, "messages": msgs, "stop": _stops(body)}


class ChatModel:
    def __init__(self, model_id: str, device: str = "cpu", dtype: str = "auto"):
        from pst_distill.models import load_causal_lm

        self.model_id = model_id
        self.model, self.tok = load_causal_lm(model_id, device=device, dtype=dtype)
        self.lock = threading.Lock()

    def complete(self, req: dict) -> tuple[list[tuple[str, str, int]], int]:
        """([(text, finish_reason, completion tokens)] * n, prompt tokens)."""
        import torch

        tok = self.tok
        prompt = tok.apply_chat_template(req["messages"], tokenize=False,
                                         add_generation_prompt=True)
        enc = tok(prompt, return_tensors="pt", add_special_tokens=False).to(self.model.device)
        sample = req["temperature"] > 0
        n_gen = req["n"] if sample else 1  # greedy: n identical choices
        kwargs = {"do_sample": sample, "max_new_tokens": req["max_tokens"], "top_k": None,
                  "temperature": req["temperature"] if sample else None,
                  "top_p": req["top_p"] if sample else None, "num_return_sequences": n_gen,
                  "pad_token_id": tok.pad_token_id}
        if req["stop"]:
            kwargs.update(stop_strings=req["stop"], tokenizer=tok)
        with self.lock, torch.inference_mode():
            if req["seed"] is not None:
                torch.manual_seed(req["seed"])
            out = self.model.generate(**enc, **kwargs)
        plen = enc["input_ids"].shape[1]
        choices = [self._decode(row[plen:].tolist(), req) for row in out]
        return (choices * req["n"])[: req["n"]] if not sample else choices, plen

    def _decode(self, ids: list[int], req: dict) -> tuple[str, str, int]:
        from pst_distill.models import decode_completion

        # like OpenAI: the stop string is not part of the answer, and EOS is a "stop"
        text, n, end = decode_completion(ids, self.tok, req["stop"])
        return text, "length" if end == "length" else "stop", n


def chat_response(model_id: str, choices: list, prompt_tokens: int) -> dict:
    done = sum(c[2] for c in choices)
    return {
        "id": f"chatcmpl-{uuid.uuid4().hex}", "object": "chat.completion",
        "created": int(time.time()), "model": model_id,
        "choices": [{"index": i, "message": {"role": "assistant", "content": text},
                     "finish_reason": finish, "logprobs": None}
                    for i, (text, finish, _) in enumerate(choices)],
        "usage": {"prompt_tokens": prompt_tokens, "completion_tokens": done,
                  "total_tokens": prompt_tokens + done},
    }


class Handler(BaseHTTPRequestHandler):
    server_version = "pst-distill-serve/0.1"
    protocol_version = "HTTP/1.1"

    def log_message(self, fmt, *args):  # through logging, not bare stderr
        log.info("%s %s", self.address_string(), fmt % args)

    def _send(self, code: int, obj: dict, headers: dict | None = None) -> None:
        data = json.dumps(obj).encode()
        self.send_response(code)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(data)))
        for k, v in (headers or {}).items():
            self.send_header(k, v)
        self.end_headers()
        self.wfile.write(data)

    def _error(self, code: int, msg: str, kind: str = "invalid_request_error", **headers):
        self._send(code, {"error": {"message": msg, "type": kind, "code": code}}, headers)

    def _authorised(self) -> bool:
        key = self.server.api_key
        if key and self.headers.get("Authorization") != f"Bearer {key}":
            self._error(401, "invalid or missing API key", "authentication_error")
            return False
        return True

    def do_GET(self):
        st = self.server.state
        if self.path == "/health":
            return self._send(200, {"status": "ok", **st.counts()})
        if not self._authorised():
            return None
        if self.path == "/v1/models":
            return self._send(200, {"object": "list", "data": [
                {"id": self.server.chat.model_id, "object": "model", "owned_by": "pst-distill"}]})
        return self._error(404, f"no route {self.path}")

    def do_POST(self):
        length = int(self.headers.get("Content-Length") or 0)
        raw = self.rfile.read(length)
        if self.path != "/v1/chat/completions":
            return self._error(404, f"no route {self.path}")
        if not self._authorised():
            return None
        try:
            body = json.loads(raw or b"{}")
            req = parse_request(body)
            if body.get("model") != self.server.chat.model_id:
                return self._error(404, f"model {body.get('model')!r} is not served")
        except (ValueError, BadRequest) as exc:
            return self._error(400, str(exc))
        return self._generate(req)

    def _generate(self, req: dict):
        st = self.server.state
        if not st.enter():
            return self._error(429, "server busy", "rate_limit_error", **{"Retry-After": "1"})
        try:
            choices, plen = self.server.chat.complete(req)
        except Exception as exc:  # noqa: BLE001 - the client gets a 500 and may retry
            log.exception("generation failed")
            return self._error(500, f"generation failed: {type(exc).__name__}", "server_error")
        finally:
            st.leave()
        return self._send(200, chat_response(self.server.chat.model_id, choices, plen))


class State:
    """Requests waiting or running, bounded; counters for /health."""

    def __init__(self, max_queue: int):
        self.max_queue = max_queue
        self.lock = threading.Lock()
        self.active = self.served = self.rejected = 0

    def enter(self) -> bool:
        with self.lock:
            if self.max_queue and self.active >= self.max_queue:
                self.rejected += 1
                return False
            self.active += 1
            return True

    def leave(self) -> None:
        with self.lock:
            self.active -= 1
            self.served += 1

    def counts(self) -> dict:
        with self.lock:
            return {"active": self.active, "served": self.served, "rejected": self.rejected}


def make_server(chat: ChatModel, host: str, port: int, api_key: str | None = None,
                max_queue: int = 0) -> ThreadingHTTPServer:
    httpd = ThreadingHTTPServer((host, port), Handler)
    httpd.daemon_threads = True
    httpd.chat, httpd.api_key, httpd.state = chat, api_key, State(max_queue)
    return httpd


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="smollm2-135m-instruct")
    ap.add_argument("--host", default="127.0.0.1")
    ap.add_argument("--port", type=int, default=8000, help="0 picks a free port")
    ap.add_argument("--device", default="cpu", choices=["auto", "cpu", "cuda"])
    ap.add_argument("--api-key-env", default=None, help="env var holding the required key")
    ap.add_argument("--max-queue", type=int, default=0, help="429 beyond this many (0: no cap)")
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, stream=sys.stderr,
                        format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    key = os.environ.get(args.api_key_env) if args.api_key_env else None
    if args.api_key_env and not key:
        raise SystemExit(f"error: env var {args.api_key_env} is empty")
    httpd = make_server(ChatModel(args.model, args.device), args.host, args.port, key,
                        args.max_queue)
    host, port = httpd.server_address[:2]
    print(f"serving {args.model} on http://{host}:{port}/v1", flush=True)
    try:
        httpd.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        httpd.server_close()


if __name__ == "__main__":
    main()
