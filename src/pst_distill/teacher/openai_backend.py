"""Teacher through any OpenAI-compatible chat server (``vllm serve``, llama.cpp's server, …).

* ``teacher.openai.base_url`` names the server; the API key is read only from the
  environment variable named by ``teacher.openai.api_key_env`` and only ever sent in the
  ``Authorization`` header: it is never logged, stored in metadata or written anywhere.
* At most ``max_concurrency`` requests are in flight; completions are yielded as each one
  finishes, so the driver caches it at once.
* 429, 5xx, timeouts and dropped connections are retried with capped exponential backoff
  (and ``Retry-After`` when the server sends it) until ``outage_budget_s`` seconds have
  passed since the request's first failure: a server restart within the budget costs
  nothing. Past it the run stops with one :class:`TeacherUnavailable` line naming the URL
  and the budget; every generation finished before is yielded (so cached) first, and the
  message says how many are kept and how to resume.
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

from pst_distill.teacher.base import (Completion, Request, Sampling, TeacherBackend,
                                      TeacherUnavailable, request_seed)
from pst_distill.teacher.transformers_backend import trim_completion

log = logging.getLogger(__name__)
RETRY_STATUS = frozenset({408, 409, 425, 429, 500, 502, 503, 504})
TRANSIENT = (requests.ConnectionError, requests.Timeout, requests.exceptions.ChunkedEncodingError)


class _Aborted(Exception):
    """Another request gave up for good: this one stops retrying (not the error to report)."""


def one_line(text: str, limit: int = 300) -> str:
    return " ".join(str(text).split())[:limit]


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
        self._abort = threading.Event()

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
            raise TeacherUnavailable(
                f"teacher.openai.base_url: no OpenAI-compatible server answers at {url} "
                f"({type(exc).__name__}); start one (`vllm serve MODEL`, "
                f"`python -m llama_cpp.server --model FILE.gguf`) or fix the URL") from None
        if resp.status_code in (401, 403):
            raise TeacherUnavailable(f"{url} refused the request (HTTP {resp.status_code}): set "
                                     f"the API key in env var {self.opts.api_key_env}")
        if resp.status_code != 200:
            raise TeacherUnavailable(
                f"{url} answered HTTP {resp.status_code}: {one_line(resp.text, 200)}")
        served = [m.get("id") for m in resp.json().get("data", [])]
        if self.cfg.model not in served:
            raise TeacherUnavailable(f"the server at {self.base_url} does not serve teacher.model "
                                     f"{self.cfg.model!r}; it serves: {served}")

    def generate(self, requests_: list[Request], sampling: Sampling) -> Iterator[Completion]:
        """Yield completions as they finish; on a fatal error, yield every other request that
        still finishes, then raise it (with what was kept and how to resume)."""
        todo = iter(requests_)
        self._abort.clear()
        pool = ThreadPoolExecutor(max_workers=self.opts.max_concurrency,
                                  thread_name_prefix="teacher-http")
        running, error, done = set(), None, 0
        try:
            while True:
                # keep at most max_concurrency requests submitted: memory stays flat
                while error is None and len(running) < self.opts.max_concurrency:
                    req = next(todo, None)
                    if req is None:
                        break
                    running.add(pool.submit(self._complete, req, sampling))
                if not running:
                    break
                finished, running = wait(running, return_when=FIRST_COMPLETED)
                for fut in finished:
                    exc = fut.exception()
                    if exc is None:
                        done += 1
                        yield fut.result()
                    elif error is None and not isinstance(exc, _Aborted):
                        error = exc
                        self._abort.set()  # the others stop retrying; no new submissions
        finally:
            self._abort.set()  # also when the caller stops early
            for fut in running:
                fut.cancel()
            pool.shutdown(wait=True, cancel_futures=True)
        if isinstance(error, TeacherUnavailable):
            raise TeacherUnavailable(f"{error}; {self._kept(done, len(requests_))}") from None
        if error is not None:
            raise error

    def _kept(self, done: int, total: int) -> str:
        root = getattr(self.cache, "root", None)
        if root is None:
            return (f"{done} of {total} generations finished, but no cache folder was given "
                    "(--cache-dir), so a rerun starts over")
        return (f"{done} of {total} generations finished and are kept in the teacher cache "
                f"{root}; rerun the same command once the server is up to generate only the "
                f"{total - done} missing")

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
            raise TeacherUnavailable(f"malformed chat completion from {self.base_url}: "
                                     f"{one_line(data, 200)}") from None
        text, stopped = trim_completion(text, self.answer_prefix, sampling.stop)
        finish = "length" if choice.get("finish_reason") == "length" and not stopped else "stop"
        usage = data.get("usage") or {}
        return Completion(key=req.key, text=text, finish_reason=finish,
                          prompt_tokens=int(usage.get("prompt_tokens") or 0),
                          completion_tokens=int(usage.get("completion_tokens") or 0))

    def _try_post(self, url: str, body: dict) -> tuple[dict | None, str, str | None]:
        """One attempt: (answer, "", None), or (None, why, Retry-After) for a retryable failure."""
        try:
            resp = self._session().post(
                url, json=body, timeout=(self.opts.connect_timeout_s, self.opts.timeout_s))
            if resp.status_code == 200:
                return resp.json(), "", None
            if resp.status_code not in RETRY_STATUS:
                raise TeacherUnavailable(
                    f"{url} answered HTTP {resp.status_code}: {one_line(resp.text)}")
            return None, f"HTTP {resp.status_code}", resp.headers.get("Retry-After")
        except TRANSIENT as exc:
            return None, type(exc).__name__, None
        except ValueError:  # a body cut short by a dying server
            return None, "truncated response", None

    def _post(self, body: dict) -> dict:
        url = f"{self.base_url}/chat/completions"
        budget = self.opts.outage_budget_s
        first_failure, attempt = None, 0
        while True:
            data, why, retry_after = self._try_post(url, body)
            if data is not None:
                if attempt:
                    log.info("teacher request succeeded after %d retries (%.0f s)", attempt,
                             time.monotonic() - first_failure)
                return data
            now = time.monotonic()
            first_failure = first_failure or now
            left = budget - (now - first_failure)
            if left <= 0:
                raise TeacherUnavailable(
                    f"the teacher server at {self.base_url} failed for {now - first_failure:.0f} s "
                    f"(last: {why}), past teacher.openai.outage_budget_s = {budget:g} s")
            delay = min(self._backoff(attempt, retry_after), left)
            attempt += 1
            log.warning("teacher request failed (%s); retry %d in %.1fs (%.0f of %g s outage "
                        "budget left)", why, attempt, delay, left, budget)
            if self._abort.wait(delay):
                raise _Aborted()

    def _backoff(self, attempt: int, retry_after: str | None) -> float:
        delay = min(self.opts.max_backoff_s, self.opts.backoff_s * 2 ** min(attempt, 30))
        delay *= 0.5 + random.random() / 2  # jitter: retries from many threads spread out
        try:
            return min(self.opts.max_backoff_s, max(delay, float(retry_after)))
        except (TypeError, ValueError):
            return delay

    def close(self) -> None:
        for sess in self._sessions:
            sess.close()
        self._sessions.clear()
