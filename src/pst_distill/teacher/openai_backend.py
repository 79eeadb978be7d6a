"""Teacher through any OpenAI-compatible chat server (``vllm serve``, ``pst_distill.serve``, …).

* ``teacher.openai.base_url`` names the server; the API key is read only from the
  environment variable named by ``teacher.openai.api_key_env`` and only ever sent in the
  ``Authorization`` header: it is never logged, stored in metadata or written anywhere.
* At most ``max_concurrency`` requests are in flight; completions are yielded as each one
  finishes, so the driver caches it at once.
* 429, 5xx, timeouts and dropped connections are retried with exponential backoff (and
  ``Retry-After`` when the server sends it), up to ``max_retries`` times per request.
* Each sample of a question is its own request (``n=1``) with a seed derived from its key:
  a sample is reproducible on its own, also after a partial resume, and servers with
  prefix caching (vLLM) share the prompt's work between a question's samples anyway.
* :meth:`OpenAIBackend.check` asks ``/models`` before any work, so a wrong URL, a refused
  key or a model the server does not serve fails in seconds, naming the URL.
"""

from __future__ import annotations

import json
import logging
import os
import random
import threading
import time
from concurrent.futures import FIRST_COMPLETED, ThreadPoolExecutor, wait
from typing import Iterator

import requests

from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend, request_seed
from pst_distill.teacher.transformers_backend import trim_completion

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class ServerError(RuntimeError):
    """The server refused a request for good (4xx) or kept failing after every retry."""


class OpenAIBackend(TeacherBackend):
    name = "openai"

    def __init__(self, cfg, answer_prefix: str):
        super().__init__(cfg, answer_prefix)
        self.opts = cfg.openai
        self.base_url = self.opts.base_url.rstrip("/")
        env = self.opts.api_key_env
        self._api_key = os.environ.get(env) if env else None
        if env and not self._api_key:
            log.info("env var %s is not set: requests carry no API key", env)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []

    def render(self, messages) -> str:
        """The chat messages as sent (the server applies its own chat template)."""
        return json.dumps(list(messages), ensure_ascii=False, sort_keys=True)

    def metadata(self) -> dict:
        return {**super().metadata(), "base_url": self.base_url,
                "api_key_env": self.opts.api_key_env}

    def _session(self) -> requests.Session:
        sess = getattr(self._local, "session", None)
        if sess is None:
            sess = self._local.session = requests.Session()
            self._sessions.append(sess)
            if self._api_key:
                sess.headers["Authorization"] = f"Bearer {self._api_key}"
        return sess

    def check(self) -> None:
        url = f"{self.base_url}/models"
        try:
            resp = self._session().get(url, timeout=self.opts.connect_timeout_s)
        except requests.RequestException as exc:
            raise ServerError(
                f"teacher.openai.base_url: no OpenAI-compatible server answers at {url} "
                f"({type(exc).__name__}); start one (`vllm serve MODEL`, "
                f"`python -m pst_distill.serve`) or fix the URL") from None
        if resp.status_code in (401, 403):
            raise ServerError(f"{url} refused the request (HTTP {resp.status_code}): set the "
                              f"API key in env var {self.opts.api_key_env}")
        if resp.status_code != 200:
            raise ServerError(f"{url} answered HTTP {resp.status_code}: {resp.text[:200]}")
        served = [m.get("id") for m in resp.json().get("data", [])]
        if self.cfg.model not in served:
            raise ServerError(f"the server at {self.base_url} does not serve teacher.model "
                              f"{self.cfg.model!r}; it serves: {served}")

    def generate(self, requests_: list[Request], sampling: Sampling) -> Iterator[Completion]:
        todo = iter(requests_)
        pool = ThreadPoolExecutor(max_workers=self.opts.max_concurrency,
                                  thread_name_prefix="teacher-http")
        running = set()
        try:
            while True:
                # keep at most max_concurrency requests submitted: memory stays flat
                while len(running) < self.opts.max_concurrency:
                    req = next(todo, None)
                    if req is None:
                        break
                    running.add(pool.submit(self._complete, req, sampling))
                if not running:
                    return
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    yield fut.result()
        finally:
            for fut in running:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)

    def _complete(self, req: Request, sampling: Sampling) -> Completion:
        body = {"model": self.cfg.model, "messages": list(req.messages), "n": 1,
                "temperature": sampling.temperature, "top_p": sampling.top_p,
                "max_tokens": sampling.max_new_tokens,
                "seed": request_seed(sampling.seed, req.key)}
        if sampling.stop:
            body["stop"] = list(sampling.stop)
        data = self._post(body)
        try:
            choice = data["choices"][0]
            text = choice["message"].get("content") or ""
        except (KeyError, IndexError, TypeError, AttributeError):
            raise ServerError(f"malformed chat completion from {self.base_url}: "
                              f"{str(data)[:200]}") from None
        text, stopped = trim_completion(text, self.answer_prefix, sampling.stop)
        finish = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
        usage = data.get("usage") or {}
        return Completion(key=req.key, text=text, finish_reason=finish,
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0))

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/chat/completions"
        tries = self.opts.max_retries + 1
        for attempt in range(tries):
            retry_after, why = None, None
            try:
                resp = self._session().post(
                    url, json=body, timeout=(self.opts.connect_timeout_s, self.opts.timeout_s))
                if resp.status_code == 200:
                    return resp.json()
                if resp.status_code not in RETRY_STATUS:
                    raise ServerError(f"{url} answered HTTP {resp.status_code}: {resp.text[:300]}")
                why, retry_after = f"HTTP {resp.status_code}", resp.headers.get("Retry-After")
            except TRANSIENT as exc:
                why = type(exc).__name__
            except ValueError:  # a body cut short by a dying server
                why = "truncated response"
            if attempt + 1 == tries:
                raise ServerError(f"{url}: gave up after {tries} tries (last: {why})")
            delay = self._backoff(attempt, retry_after)
            log.warning("teacher request failed (%s); retry %d/%d in %.1fs",
                        why, attempt + 1, tries - 1, delay)
            time.sleep(delay)
        raise AssertionError("unreachable")

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.opts.max_backoff_s, self.opts.backoff_s * 2 ** attempt)
        delay *= 0.5 + random.random() / 2  # jitter: retries from many threads spread out
        try:
            return min(self.opts.max_backoff_s, max(delay, float(retry_after)))
        except (TypeError, ValueError):
            return delay

    def close(self) -> None:
        for sess in self._sessions:
            sess.close()
        self._sessions.clear()
