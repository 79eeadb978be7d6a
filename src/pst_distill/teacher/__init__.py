"""Teacher stage: build requests, run one backend, score and filter its rationales."""

from __future__ import annotations

import logging
import time
from collections import Counter
from typing import Iterable

from tqdm.auto import tqdm

from pst_distill.io import content_hash
from pst_distill.parsing import extract_answer, is_correct, split_answer_line
from pst_distill.prompts import build_messages, pick_shots
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend

log = logging.getLogger(__name__)
BACKENDS = ("reference", "transformers", "vllm")


def make_backend(cfg, answer_prefix: str) -> TeacherBackend:
    if cfg.backend == "reference":
        from pst_distill.teacher.reference import ReferenceBackend as cls
    elif cfg.backend == "transformers":
        from pst_distill.teacher.transformers_backend import TransformersBackend as cls
    elif cfg.backend == "vllm":
        from pst_distill.teacher.vllm_backend import VllmBackend as cls
    else:
        raise ValueError(f"unknown teacher.backend {cfg.backend!r}; allowed: {BACKENDS}")
    return cls(cfg, answer_prefix)


def sampling_from(cfg, seed: int) -> Sampling:
    return Sampling(temperature=cfg.temperature, top_p=cfg.top_p,
                    max_new_tokens=cfg.max_new_tokens, stop=tuple(cfg.stop), seed=seed)


def build_requests(items: list[dict], cfg, backend: TeacherBackend, sampling: Sampling,
                   answer_prefix: str, seed: int) -> list[Request]:
    """One request per (question, sample index), keyed by a content hash of what shapes it."""
    requests = []
    for item in items:
        shots = pick_shots(item, items, cfg.n_shots, seed) if cfg.prompt == "few_shot_cot" else []
        messages = tuple(build_messages(item, shots, answer_prefix))
        prompt = backend.render(messages)
        for sample in range(cfg.n):
            key = content_hash(prompt, backend.model_id, cfg.revision, sampling.as_dict(), sample,
                               length=32)
            requests.append(Request(key=key, item=item, sample=sample, messages=messages,
                                    prompt=prompt))
    return requests


def score(req: Request, comp: Completion, meta: dict, sampling: Sampling) -> dict:
    item = req.item
    rationale, _ = split_answer_line(comp.text)
    ext = extract_answer(comp.text, item["answer_type"])
    return {
        "id": item["id"], "task": item["task"], "question": item["question"],
        "answer": item["answer"], "answer_type": item["answer_type"],
        "sample": req.sample, "key": req.key, "prompt": comp.prompt or req.prompt,
        "rationale": rationale, "pred_answer": ext.flexible, "pred_strict": ext.strict,
        "correct": is_correct(ext.flexible, item["answer"], item["answer_type"]),
        "finish_reason": comp.finish_reason, "prompt_tokens": comp.prompt_tokens,
        "completion_tokens": comp.completion_tokens, "teacher": meta,
        "sampling": sampling.as_dict(),
    }


def drop_reason(rec: dict, only_correct: bool) -> str | None:
    if rec["finish_reason"] == "length":
        return "truncated"
    if not rec["rationale"].strip():
        return "empty_rationale"
    if rec["pred_answer"] == "[invalid]":
        return "no_answer"
    if only_correct and not rec["correct"]:
        return "incorrect"
    return None


def summarize(records: Iterable[dict], dropped: Counter, n_items: int, wall: float) -> dict:
    records = list(records)
    kept = len(records) - sum(dropped.values())
    return {
        "items": n_items, "generations": len(records), "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "finish_reasons": dict(Counter(r["finish_reason"] for r in records)),
        "teacher_accuracy": round(sum(r["correct"] for r in records) / max(len(records), 1), 4),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "completion_tokens": sum(r["completion_tokens"] for r in records),
        "wall_s": round(wall, 3),
        "generations_per_s": round(len(records) / wall, 3) if wall > 0 else None,
    }


def generate_rationales(items: list[dict], cfg, answer_prefix: str, seed: int,
                        backend: TeacherBackend | None = None) -> tuple[list[dict], list[dict], dict]:
    """Return (kept rationales, all generations, stats)."""
    if cfg.max_items:
        items = items[: cfg.max_items]
    backend = backend or make_backend(cfg, answer_prefix)
    sampling = sampling_from(cfg, seed)
    meta = backend.metadata()
    requests = build_requests(items, cfg, backend, sampling, answer_prefix, seed)
    by_key = {r.key: r for r in requests}
    start = time.perf_counter()
    generations, dropped = [], Counter()
    bar = tqdm(total=len(requests), desc=f"teacher[{backend.name}]", unit="gen", mininterval=1.0)
    tokens = 0
    for comp in backend.generate(requests, sampling):
        rec = score(by_key[comp.key], comp, meta, sampling)
        reason = drop_reason(rec, cfg.only_correct)
        rec["dropped"] = reason
        if reason:
            dropped[reason] += 1
        generations.append(rec)
        tokens += comp.completion_tokens
        bar.update(1)
        bar.set_postfix(tok_s=f"{tokens / max(time.perf_counter() - start, 1e-9):.0f}", refresh=False)
    bar.close()
    backend.close()
    wall = time.perf_counter() - start
    stats = summarize(generations, dropped, len(items), wall)
    order = {r.key: i for i, r in enumerate(requests)}
    generations.sort(key=lambda r: order[r["key"]])
    kept = [r for r in generations if r["dropped"] is None]
    return kept, generations, stats
