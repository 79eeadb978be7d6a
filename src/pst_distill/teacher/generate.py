"""The teacher stage: build requests, run one backend, score and filter its rationales."""

from __future__ import annotations

import logging
import time
from collections import Counter
from dataclasses import replace
from typing import Iterable

from tqdm.auto import tqdm

from pst_distill.io import content_hash
from pst_distill.parsing import extract_answer, is_correct, split_answer_line
from pst_distill.teacher.prompts import build_messages, pick_shots, shot_pools
from pst_distill.teacher.base import Completion, Request, Sampling, TeacherBackend
from pst_distill.teacher.cache import GenerationCache

log = logging.getLogger(__name__)
BACKENDS = ("reference", "transformers", "vllm", "openai")


def make_backend(cfg, answer_prefix: str) -> TeacherBackend:
    if cfg.backend == "reference":
        from pst_distill.teacher.reference import ReferenceBackend as cls
    elif cfg.backend == "transformers":
        from pst_distill.teacher.transformers_backend import TransformersBackend as cls
    elif cfg.backend == "vllm":
        from pst_distill.teacher.vllm_backend import VllmBackend as cls
    elif cfg.backend == "openai":
        from pst_distill.teacher.openai_backend import OpenAIBackend as cls
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
    pools = shot_pools(items, cfg.n_shots, seed) if cfg.prompt == "few_shot_cot" else {}
    for item in items:
        shots = pick_shots(item, pools, cfg.n_shots)
        messages = tuple(build_messages(item, shots, answer_prefix))
        prompt = backend.render(messages)
        for sample in range(cfg.n):
            key = content_hash(prompt, backend.model_id, cfg.revision, sampling.as_dict(), sample,
                               length=32)
            requests.append(Request(key=key, item=item, sample=sample, messages=messages,
                                    prompt=prompt))
    return requests


def score(req: Request, comp: Completion, meta: dict, sampling: Sampling,
          answer_prefix: str) -> dict:
    item = req.item
    rationale, _ = split_answer_line(comp.text, answer_prefix)
    ext = extract_answer(comp.text, item["answer_type"], answer_prefix)
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


def summarize(records: Iterable[dict], dropped: Counter, n_items: int, wall: float,
              cache_stats: dict | None = None) -> dict:
    records = list(records)
    kept = len(records) - sum(dropped.values())
    return {
        "items": n_items, "generations": len(records), "kept": kept,
        "dropped": dict(sorted(dropped.items())),
        "finish_reasons": dict(sorted(Counter(r["finish_reason"] for r in records).items())),
        "teacher_accuracy": round(sum(r["correct"] for r in records) / max(len(records), 1), 4),
        "prompt_tokens": sum(r["prompt_tokens"] for r in records),
        "completion_tokens": sum(r["completion_tokens"] for r in records),
        "wall_s": round(wall, 3),
        "generations_per_s": round(len(records) / wall, 3) if wall > 0 else None,
        "cache": cache_stats or {},
    }


class Progress:
    """A live bar: generations/s from tqdm, completion tokens/s and cache hits as postfix."""

    def __init__(self, total: int, name: str):
        self.bar = tqdm(total=total, desc=f"teacher[{name}]", unit="gen", mininterval=1.0)
        self.start = time.perf_counter()
        self.tokens = 0
        self.cached = 0

    def update(self, comp: Completion, cached: bool) -> None:
        self.cached += cached
        if not cached:
            self.tokens += comp.completion_tokens
        elapsed = max(time.perf_counter() - self.start, 1e-9)
        self.bar.set_postfix(tok_s=f"{self.tokens / elapsed:.0f}", cached=self.cached,
                             refresh=False)
        self.bar.update(1)

    def close(self) -> None:
        self.bar.close()


def run_backend(requests: list[Request], cache: GenerationCache, backend: TeacherBackend,
                sampling: Sampling, progress: Progress) -> dict[str, Completion]:
    """Completions for every request: from the cache, else from the backend (cached at once)."""
    done, missing = {}, []
    for req in requests:
        comp = cache.get(req.key)
        if comp is None:
            missing.append(req)
        else:
            done[req.key] = comp
            progress.update(comp, cached=True)
    log.info("teacher cache: %d hits, %d to generate", len(done), len(missing))
    if not missing:
        return done
    backend.cache = cache
    meta = backend.metadata()
    pending = {r.key for r in missing}
    for comp in backend.generate(missing, sampling):
        if comp.key not in pending:
            log.warning("backend returned key %s twice or unasked: ignored", comp.key)
            continue
        pending.discard(comp.key)
        comp = replace(comp, meta=comp.meta or meta)
        cache.put(comp, comp.meta)
        done[comp.key] = comp
        progress.update(comp, cached=False)
    if pending:
        raise RuntimeError(f"teacher backend finished without {len(pending)} of "
                           f"{len(missing)} generations (e.g. {sorted(pending)[0]})")
    return done


def generate_rationales(items: list[dict], cfg, answer_prefix: str, seed: int,
                        backend: TeacherBackend | None = None, cache_dir: str | None = None,
                        store: str | None = None) -> tuple[list[dict], list[dict], dict]:
    """Return (kept rationales, all generations, stats). ``cache_dir``: new generations are
    written there as they arrive (the run resumes from it); ``store``: the shared store,
    read first (:mod:`pst_distill.teacher.cache`)."""
    if cfg.max_items:
        items = items[: cfg.max_items]
    backend = backend or make_backend(cfg, answer_prefix)
    backend.check()
    sampling = sampling_from(cfg, seed)
    requests = build_requests(items, cfg, backend, sampling, answer_prefix, seed)
    cache = GenerationCache(cache_dir, read=[store] if store else [],
                            segment_size=cfg.cache.segment_size, flush_s=cfg.cache.flush_s)
    progress = Progress(len(requests), backend.name)
    try:
        done = run_backend(requests, cache, backend, sampling, progress)
    finally:  # also on an interrupt: what was generated is written before the run ends
        cache.close()
        progress.close()
        backend.close()
    generations, dropped = [], Counter()
    for req in requests:  # request order: the output does not depend on arrival order
        comp = done[req.key]
        rec = score(req, comp, comp.meta, sampling, answer_prefix)
        rec["dropped"] = reason = drop_reason(rec, cfg.only_correct)
        if reason:
            dropped[reason] += 1
        generations.append(rec)
    wall = time.perf_counter() - progress.start
    stats = summarize(generations, dropped, len(items), wall, cache.stats.as_dict())
    kept = [r for r in generations if r["dropped"] is None]
    return kept, generations, stats
