"""Chain-of-thought prompts for the teacher: zero-shot or few-shot, chat or plain text."""

from __future__ import annotations

from collections import defaultdict
from typing import Iterable

from pst_distill.io import content_hash

INSTRUCTION = "Think step by step, then give the final answer on its own last line as '{prefix} <answer>'."


def user_turn(question: str, answer_prefix: str) -> str:
    return f"{question}\n{INSTRUCTION.format(prefix=answer_prefix)}"


def assistant_turn(rationale: str, answer: str, answer_prefix: str) -> str:
    return f"{rationale}\n{answer_prefix} {answer}"


def shot_rank(seed: int, item_id: str) -> tuple[str, str]:
    """An item's place in the few-shot ranking of its task: a hash of its id alone."""
    return content_hash(seed, "shots", item_id), item_id


def shot_pools(items: Iterable[dict], n_shots: int, seed: int) -> dict[str, list[dict]]:
    """Per task, the few-shot pool: the ``n_shots + 1`` items with a worked solution that
    rank first by :func:`shot_rank`, in that order.

    Each item's rank depends on its own id (and the seed) only, so adding or removing
    items leaves the pool, and so every prompt and teacher cache key, as it is, except
    when the item added or removed ranks inside the pool. One more than ``n_shots`` lets
    a pool item itself get ``n_shots`` other shots. The seed enters: another seed is
    another draw of shots (and a new cache anyway: the seed is part of every cache key).
    """
    by_task: dict[str, dict[str, dict]] = defaultdict(dict)
    for item in items:
        if item.get("reference_rationale"):
            by_task[item["task"]].setdefault(item["id"], item)
    return {task: sorted(pool.values(), key=lambda r: shot_rank(seed, r["id"]))[:n_shots + 1]
            for task, pool in by_task.items()}


def pick_shots(item: dict, pools: dict[str, list[dict]], n_shots: int) -> list[dict]:
    """Worked examples of the item's task from its fixed pool (:func:`shot_pools`), never
    the item itself."""
    return [s for s in pools.get(item["task"], []) if s["id"] != item["id"]][:n_shots]


def build_messages(item: dict, shots: list[dict], answer_prefix: str) -> list[dict]:
    messages = []
    for shot in shots:
        messages.append({"role": "user", "content": user_turn(shot["question"], answer_prefix)})
        messages.append({"role": "assistant", "content": assistant_turn(
            shot["reference_rationale"], shot["answer"], answer_prefix)})
    messages.append({"role": "user", "content": user_turn(item["question"], answer_prefix)})
    return messages


def render(messages: list[dict], tokenizer=None) -> str:
    """The prompt text: the tokenizer's chat template where it has one, else plain Q/A."""
    if tokenizer is not None and getattr(tokenizer, "chat_template", None):
        return tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    parts = []
    for m in messages:
        parts.append(("Q: " if m["role"] == "user" else "A: ") + m["content"])
    return "\n\n".join(parts) + "\n\nA:"
