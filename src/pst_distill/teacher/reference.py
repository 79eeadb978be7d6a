"""The oracle teacher: the task's own worked solution, written as a teacher would."""

from __future__ import annotations

from typing import Iterator

from pst_distill.teacher.prompts import assistant_turn
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend


class ReferenceBackend(TeacherBackend):
    name = "reference"

    @property
    def model_id(self) -> str:
        return "reference"

    def metadata(self) -> dict:
        return {"backend": self.name, "model": "reference", "revision": None}

    def generate(self, requests: list[Request], sampling: Sampling) -> Iterator[Completion]:
        for req in requests:
            rationale = req.item.get("reference_rationale")
            if not rationale:
                # no worked solution: an empty completion, dropped as "no_answer"
                yield Completion(key=req.key, text="", finish_reason="stop")
                continue
            text = assistant_turn(rationale, req.item["answer"], self.answer_prefix)
            yield Completion(key=req.key, text=text, finish_reason="stop",
                             completion_tokens=len(text.split()))
