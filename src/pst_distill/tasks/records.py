"""The record every stage shares: ``id, task, question, answer, answer_type, ...``."""

from __future__ import annotations

from typing import Optional

from pst_distill.io import content_hash
from pst_distill.parsing import ANSWER_TYPES


def make_record(
    task: str,
    question: str,
    answer: str,
    answer_type: str,
    reference_rationale: Optional[str] = None,
    **extra,
) -> dict:
    """A task item whose ``id`` is a content hash, so splits and caches ignore row order."""
    if answer_type not in ANSWER_TYPES:
        raise ValueError(f"unknown answer_type {answer_type!r}; allowed: {ANSWER_TYPES}")
    question, answer = str(question).strip(), str(answer).strip()
    if not question or not answer:
        raise ValueError(f"{task}: empty question or answer in {question[:80]!r}")
    return {
        "id": content_hash(task, question, answer),
        "task": task,
        "question": question,
        "answer": answer,
        "answer_type": answer_type,
        "reference_rationale": reference_rationale,
        **extra,
    }


def is_test(record_id: str, test_frac: float) -> bool:
    """Deterministic split by id hash: the same item is always on the same side."""
    return int(content_hash("split", record_id)[:8], 16) / 16**8 < test_frac
