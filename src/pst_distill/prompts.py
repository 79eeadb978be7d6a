"""Chain-of-thought prompts for the teacher: zero-shot or few-shot, chat or plain text."""

from __future__ import annotations

import random

from pst_distill.io import content_hash

INSTRUCTION = "Think step by step, then give the final answer on its own last line as '{prefix} <answer>'."


def user_turn(question: str, answer_prefix: str) -> str:
    return f"{question}\n{INSTRUCTION.format(prefix=answer_prefix)}"


def assistant_turn(rationale: str, answer: str, answer_prefix: str) -> str:
    return f"{rationale}\n{answer_prefix} {answer}"


def pick_shots(item: dict, pool: list[dict], n_shots: int, seed: int) -> list[dict]:
    """Deterministic worked examples of the same task, never the item itself."""
    same = [r for r in pool if r["task"] == item["task"] and r["id"] != item["id"]
            and r.get("reference_rationale")]
    rng = random.Random(content_hash(seed, item["id"]))
    return rng.sample(same, min(n_shots, len(same)))


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
