"""The evaluation set: the same questions for every method and seed, balanced by label."""

from __future__ import annotations

import logging
from collections import Counter, defaultdict

from pst_distill.io import content_hash
from pst_distill.parsing import INVALID, normalize

log = logging.getLogger(__name__)


# answers drawn from a small label set: the evaluation set is balanced over the labels
BALANCED_TYPES = ("yes-no", "choice")


def _label(item: dict) -> str:
    value = normalize(str(item["answer"]), item["answer_type"])
    return str(item["answer"]) if value == INVALID else value


def _take_balanced(queues: dict[str, list[dict]], n: int) -> dict[str, int]:
    """How many of each label: round-robin over labels in sorted order, so the counts are
    equal as far as each label's questions last (the remainder goes to the first labels)."""
    take = dict.fromkeys(sorted(queues), 0)
    while n > 0 and any(take[lab] < len(queues[lab]) for lab in take):
        for lab in take:
            if n > 0 and take[lab] < len(queues[lab]):
                take[lab], n = take[lab] + 1, n - 1
    return take


def _select_task(items: list[dict], n: int | None) -> tuple[list[dict], dict]:
    """One task's questions: the first ``n`` in id-hash order, per label for label tasks."""
    ranked = sorted(items, key=lambda it: (content_hash("eval", it["id"]), it["id"]))
    info: dict = {"available": len(items)}
    if items[0]["answer_type"] not in BALANCED_TYPES:
        chosen = ranked if n is None else ranked[:n]
    else:
        queues: dict[str, list[dict]] = defaultdict(list)
        for it in ranked:
            queues[_label(it)].append(it)
        take = _take_balanced(queues, len(items) if n is None else n)
        chosen = [it for lab, k in take.items() for it in queues[lab][:k]]
        info["labels"] = take
        if n is not None:
            share = {lab: n // len(take) + (i < n % len(take)) for i, lab in enumerate(take)}
            info["short_labels"] = {lab: {"wanted": share[lab], "available": len(queues[lab])}
                                    for lab in take if len(queues[lab]) < share[lab]}
    info["selected"] = len(chosen)
    return chosen, info


def select_items(items: list[dict], per_task: int | None) -> tuple[list[dict], dict]:
    """The evaluation set: ``per_task`` questions of each task (null: all), in input order.

    Chosen by a hash of the id, not by position or seed, so every method and seed gets the
    same questions and adding questions to one task leaves the other tasks' sets unchanged.
    Yes-no and choice tasks take equal numbers per gold label as far as the test split
    allows; ``info[task]["short_labels"]`` names a label that ran short.
    """
    counts = Counter(it["id"] for it in items)
    dupes = [i for i, k in counts.items() if k > 1]
    if dupes:
        raise ValueError(f"test items have duplicate ids: {dupes[:3]}")
    by_task: dict[str, list[dict]] = defaultdict(list)
    for it in items:
        by_task[it["task"]].append(it)
    keep: set[str] = set()
    info: dict[str, dict] = {}
    for task in sorted(by_task):
        chosen, info[task] = _select_task(by_task[task], per_task)
        keep.update(it["id"] for it in chosen)
        if per_task is not None and info[task]["selected"] < per_task:
            log.warning("task %s: only %d test questions for evaluate.per_task=%d",
                        task, info[task]["selected"], per_task)
    return [it for it in items if it["id"] in keep], info
