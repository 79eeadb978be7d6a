"""The one interface every teacher backend implements.

A backend turns :class:`Request` objects (one per question and sample index) into
:class:`Completion` objects, yielded as each one finishes so the caller can store it at
once. Sampling settings are one :class:`Sampling` for the whole run: never per worker.
"""

from __future__ import annotations

import abc
from dataclasses import asdict, dataclass, field
from typing import Iterator, Optional

from pst_distill.io import content_hash


class TeacherUnavailable(RuntimeError):
    """The teacher cannot run or stopped for good (server down past its outage budget, key
    refused, model not served …). Its message is one line for the user, naming the setting
    and saying what was kept; the stage CLI prints it without a traceback."""


@dataclass(frozen=True)
class Sampling:
    temperature: float
    top_p: float
    max_new_tokens: int
    stop: tuple[str, ...] = ()
    seed: int = 0

    def as_dict(self) -> dict:
        return asdict(self)


def request_seed(seed: int, key: str) -> int:
    """Per-request seed: a rerun samples the same text on the same hardware and version,
    whatever worker, batch or order the request lands in."""
    return int(content_hash(seed, key)[:8], 16)


@dataclass(frozen=True)
class Request:
    key: str                      # content hash: prompt, model, revision, sampling, sample
    item: dict = field(hash=False)
    sample: int
    messages: tuple = field(hash=False)
    prompt: str = ""              # rendered text, filled in by backends that render


@dataclass(frozen=True)
class Completion:
    key: str
    text: str
    finish_reason: str            # "stop" (EOS, stop string or answer line) or "length"
    prompt_tokens: int = 0
    completion_tokens: int = 0
    prompt: Optional[str] = None
    meta: Optional[dict] = field(default=None, compare=False)  # set where it differs per worker


class TeacherBackend(abc.ABC):
    name: str = "base"
    cache = None                  # the run's GenerationCache, set by the driver
    tokenizer = None              # backends with a local tokenizer render its chat template

    def __init__(self, cfg, answer_prefix: str):
        self.cfg = cfg
        self.answer_prefix = answer_prefix

    @property
    def model_id(self) -> str:
        return self.cfg.model

    def render(self, messages) -> str:
        from pst_distill.teacher.prompts import render

        return render(list(messages), self.tokenizer)

    def metadata(self) -> dict:
        """Recorded with every generation (backend versions, device)."""
        return {"backend": self.name, "model": self.cfg.model, "revision": self.cfg.revision}

    @abc.abstractmethod
    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        """Yield one completion per request, in any order, as soon as each is done."""

    def close(self) -> None:
        """Release models, processes and GPU memory."""

    def check(self) -> None:
        """Fail fast, before any expensive work, when the backend cannot run (no server…)."""
