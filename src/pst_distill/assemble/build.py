"""Training datasets per method, and the semantic targets they point to.

One JSONL per method, one row per training sequence (``step_by_step`` gives two per
rationale: the ``predict:`` row and the ``explain:`` row). A row::

    {"id", "key", "task", "method", "answer", "answer_type", "corrupted", "emb_key",
     "emb_row", "segments": [{"kind": "prompt"|"answer"|"rationale"|"sem", "text": ...}]}

``segments`` come from :func:`pst_distill.formats.training_sequences` unchanged.

Semantic targets (``targets.jsonl``, embedded by the embed stage, which runs after this
one): one row ``{"key", "task", "corrupted", "rationale"}`` per distinct target key, in the
order of the items. ``emb_key`` is the target key of the row (the PST target) and
``emb_row`` its index in the targets file, which is the row of the embeddings matrix the
embed stage writes; both are set on every row that contains a rationale segment, and null
on rows without one (answer_only, step_by_step's predict row). Training joins rows to the
matrix by ``emb_key`` (:func:`pst_distill.embed.targets.join_embeddings`), never by position alone.

Target key of an item (``assemble.semantic_target``):

- a clean item: its generation ``key`` (target text: its rationale);
- ``seen`` (default), a corrupted item: the rationale the student sees. ``shuffle`` shows
  a donor's clean rationale, so the key is the donor's generation key; ``numbers``/``swap``
  show a new text, keyed by ``content_hash("target", key, mode, text)``;
- ``clean``, a corrupted item: its own generation key, i.e. the embedding of the clean
  rationale it had before corruption, whatever the mode. Only PST then gets clean
  information: kept to measure that effect, and recorded in the stats as such.

Held-out questions (``adaptive`` only): ``holdout_per_task`` questions per task, chosen by
id hash, are left out of adaptive's rows and returned apart (``holdout.jsonl``): its
routers are fitted on them after training, so they never see a question the student
trained on, and the test split is disjoint from the training split already. The other
methods keep them (a few questions of a large pool; their budget is in steps).

A key always names one text, so the target text of every row equals the rationale its
rationale segment shows (``seen``) or the item's clean rationale (``clean``).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from pst_distill.assemble.corrupt import corrupt_records
from pst_distill.formats import training_sequences
from pst_distill.io import content_hash, write_jsonl
from pst_distill.methods import BY_NAME, METHODS

log = logging.getLogger(__name__)

REQUIRED = ("id", "key", "task", "question", "answer", "rationale")


def check_records(records: list[dict]) -> None:
    for i, rec in enumerate(records):
        missing = [f for f in REQUIRED if f not in rec]
        if missing:
            raise ValueError(f"rationale record {i} lacks field(s) {', '.join(missing)}")
    keys = Counter(r["key"] for r in records)
    dupes = [k for k, n in keys.items() if n > 1]
    if dupes:
        raise ValueError(f"duplicate rationale keys: {', '.join(dupes[:3])}")


def cap_per_task(records: list[dict], max_per_task: int | None) -> list[dict]:
    """Keep the first ``max_per_task`` questions per task in id-hash order, with all their samples.

    Ordering by a hash of the id (not by file position or the seed) makes the subset the
    same across seeds and stable when unrelated items are added or removed.
    """
    if max_per_task is None:
        return list(records)
    ids = defaultdict(set)
    for rec in records:
        ids[rec["task"]].add(rec["id"])
    keep = {i for task_ids in ids.values()
            for i in sorted(task_ids, key=lambda i: content_hash("cap", i))[:max_per_task]}
    return [r for r in records if r["id"] in keep]


SEMANTIC_TARGETS = ("seen", "clean")


def target_of(item: dict, clean_text: str, semantic_target: str, mode: str) -> dict:
    """The semantic target ``{key, task, corrupted, rationale}`` of one (possibly corrupted)
    item; ``clean_text`` is the item's rationale before corruption, ``mode`` the corrupt
    mode. ``corrupted`` marks a target text that no clean rationale has."""
    if semantic_target not in SEMANTIC_TARGETS:
        raise ValueError(f"unknown semantic_target {semantic_target!r}; allowed: "
                         f"{', '.join(SEMANTIC_TARGETS)}")
    if not item.get("corrupted") or semantic_target == "clean":
        return {"key": item["key"], "task": item["task"], "corrupted": False,
                "rationale": clean_text.strip()}
    text = item["rationale"].strip()
    key = item.get("donor_key") or content_hash("target", item["key"], mode, text)
    return {"key": key, "task": item["task"], "corrupted": "donor_key" not in item,
            "rationale": text}


def build_targets(items: list[dict], clean: dict[str, str], semantic_target: str,
                  mode: str) -> tuple[list[dict], list[str]]:
    """(targets, emb_key per item): distinct targets in item order; ``clean`` maps a
    generation key to its clean rationale. A key naming two texts is a bug, so it raises."""
    targets: dict[str, dict] = {}
    keys = []
    for item in items:
        target = target_of(item, clean[item["key"]], semantic_target, mode)
        seen = targets.setdefault(target["key"], target)
        if seen["rationale"] != target["rationale"]:
            raise ValueError(f"target key {target['key']} names two different texts")
        keys.append(target["key"])
    return list(targets.values()), keys


def build_rows(rec: dict, method: str, fmt, emb_key: str | None = None,
               emb_row: int | None = None) -> list[dict]:
    """The rows one (possibly corrupted) record contributes to ``method``'s dataset.

    ``emb_key`` is the key of the record's semantic target (default: its own ``key``) and
    ``emb_row`` that target's row in targets.jsonl.
    """
    emb_key = emb_key or rec["key"]
    rows = []
    for segments in training_sequences(method, rec["question"], rec["answer"],
                                       rec["rationale"], fmt):
        has_rationale = any(s.kind == "rationale" for s in segments)
        rows.append({
            "id": rec["id"], "key": rec["key"], "task": rec["task"], "method": method,
            "answer": rec["answer"], "answer_type": rec.get("answer_type"),
            "corrupted": bool(rec.get("corrupted", False)),
            "emb_key": emb_key if has_rationale else None,
            "emb_row": emb_row if has_rationale else None,
            "segments": [s.as_dict() for s in segments],
        })
    return rows


def holdout_ids(records: list[dict], per_task: int) -> set[str]:
    """The first ``per_task`` question ids of each task in id-hash order."""
    ids = defaultdict(set)
    for rec in records:
        ids[rec["task"]].add(rec["id"])
    return {i for task_ids in ids.values()
            for i in sorted(task_ids, key=lambda i: content_hash("holdout", i))[:per_task]}


def holdout_questions(records: list[dict], ids: set[str]) -> list[dict]:
    """One row per held-out question: id, task, question, gold answer and its type."""
    out: dict[str, dict] = {}
    for rec in records:
        if rec["id"] in ids and rec["id"] not in out:
            out[rec["id"]] = {k: rec.get(k) for k in ("id", "task", "question", "answer", "answer_type")}
    return list(out.values())


def assemble(records: list[dict], cfg, fmt, seed: int
             ) -> tuple[dict[str, list[dict]], list[dict], dict, list[dict]]:
    """Rows per method for ``cfg.methods``, the semantic targets (targets.jsonl), the
    stats for metrics/assemble.json and adaptive's held-out questions
    (``cfg.holdout_per_task`` per task, when adaptive is built)."""
    check_records(records)
    kept = cap_per_task(records, cfg.max_per_task)
    held = holdout_ids(kept, cfg.holdout_per_task)
    items, corrupt_stats = corrupt_records(kept, cfg.corrupt_frac, cfg.corrupt_mode, seed)
    targets, emb_keys = build_targets(items, {r["key"]: r["rationale"] for r in kept},
                                      cfg.semantic_target, cfg.corrupt_mode)
    row_of = {t["key"]: i for i, t in enumerate(targets)}
    datasets = {}
    for method in cfg.methods:
        datasets[method] = [row for item, key in zip(items, emb_keys)
                            if not BY_NAME[method].modes or item["id"] not in held
                            for row in build_rows(item, method, fmt, key, row_of[key])]
    stats = {
        "items": len(items),
        "items_per_task": dict(sorted(Counter(r["task"] for r in items).items())),
        "dropped_by_cap": len(records) - len(kept),
        "max_per_task": cfg.max_per_task,
        "corrupt": corrupt_stats,
        "corrupted": corrupt_stats["corrupted"],
        "semantic_target": cfg.semantic_target,
        "targets": len(targets),
        "corrupted_targets": sum(t["corrupted"] for t in targets),
        "methods": {m: _method_stats(rows) for m, rows in datasets.items()},
        "adaptive_holdout": len(held),
    }
    return datasets, targets, stats, holdout_questions(kept, held)


def _method_stats(rows: list[dict]) -> dict:
    per_task = Counter(r["task"] for r in rows)
    return {"rows": len(rows), "per_task": dict(sorted(per_task.items())),
            "corrupted_rows": sum(r["corrupted"] for r in rows),
            "with_emb_row": sum(r["emb_row"] is not None for r in rows)}


def write_targets(path: str | Path, targets: Iterable[dict]) -> Path:
    """Write targets.jsonl (the embed stage's input)."""
    n = write_jsonl(path, targets)
    log.info("wrote %d semantic targets to %s", n, path)
    return Path(path)


def write_datasets(out_dir: str | Path, datasets: dict[str, Iterable[dict]]) -> dict[str, Path]:
    """Write ``<out_dir>/<method>.jsonl``; remove stale files of methods no longer listed."""
    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("*.jsonl"):
        if stale.stem in METHODS and stale.stem not in datasets:
            stale.unlink()
    paths = {}
    for method, rows in datasets.items():
        paths[method] = out_dir / f"{method}.jsonl"
        n = write_jsonl(paths[method], rows)
        log.info("wrote %d rows to %s", n, paths[method])
    return paths
