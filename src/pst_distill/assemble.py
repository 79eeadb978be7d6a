"""Training datasets per method: rationale records -> rows of text segments.

One JSONL per method, one row per training sequence (``step_by_step`` gives two per
rationale: the ``predict:`` row and the ``explain:`` row). A row::

    {"id", "key", "task", "method", "answer", "answer_type", "corrupted",
     "emb_row", "segments": [{"kind": "prompt"|"answer"|"rationale"|"sem", "text": ...}]}

``segments`` come from :func:`pst_distill.formats.training_sequences` unchanged. ``emb_row``
is the row of the embeddings matrix holding the semantic target of the row's rationale
(the PST target); it is set on every row that contains a rationale segment, and null on
rows without one (answer_only, step_by_step's predict row). For ``shuffle`` corruption it
points at the donor rationale's row; for ``numbers``/``swap`` at the clean rationale's row
(see :mod:`pst_distill.corrupt`).
"""

from __future__ import annotations

import logging
from collections import Counter, defaultdict
from pathlib import Path
from typing import Iterable

from pst_distill.corrupt import corrupt_records
from pst_distill.formats import METHODS, training_sequences
from pst_distill.io import content_hash, write_jsonl

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


def build_rows(rec: dict, method: str, fmt, emb_row: int | None) -> list[dict]:
    """The rows one (possibly corrupted) record contributes to ``method``'s dataset."""
    rows = []
    for segments in training_sequences(method, rec["question"], rec["answer"],
                                       rec["rationale"], fmt):
        has_rationale = any(s.kind == "rationale" for s in segments)
        rows.append({
            "id": rec["id"], "key": rec["key"], "task": rec["task"], "method": method,
            "answer": rec["answer"], "answer_type": rec.get("answer_type"),
            "corrupted": bool(rec.get("corrupted", False)),
            "emb_row": emb_row if has_rationale else None,
            "segments": [s.as_dict() for s in segments],
        })
    return rows


def assemble(records: list[dict], row_of: dict[str, int], cfg, fmt,
             seed: int) -> tuple[dict[str, list[dict]], dict]:
    """Rows per method for ``cfg.methods`` and the stats for metrics/assemble.json.

    ``row_of`` maps a generation key to its row in the embeddings matrix.
    """
    check_records(records)
    kept = cap_per_task(records, cfg.max_per_task)
    items, corrupt_stats = corrupt_records(kept, cfg.corrupt_frac, cfg.corrupt_mode, seed)
    missing = sorted({r["emb_key"] for r in items} - set(row_of))
    if missing:
        raise ValueError(f"{len(missing)} rationale key(s) have no embedding row, e.g. {missing[0]}")
    datasets = {}
    for method in cfg.methods:
        datasets[method] = [row for rec in items
                            for row in build_rows(rec, method, fmt, row_of[rec["emb_key"]])]
    stats = {
        "items": len(items),
        "items_per_task": dict(sorted(Counter(r["task"] for r in items).items())),
        "dropped_by_cap": len(records) - len(kept),
        "max_per_task": cfg.max_per_task,
        "corrupt": corrupt_stats,
        "corrupted": corrupt_stats["corrupted"],
        "methods": {m: _method_stats(rows) for m, rows in datasets.items()},
    }
    return datasets, stats


def _method_stats(rows: list[dict]) -> dict:
    per_task = Counter(r["task"] for r in rows)
    return {"rows": len(rows), "per_task": dict(sorted(per_task.items())),
            "corrupted_rows": sum(r["corrupted"] for r in rows),
            "with_emb_row": sum(r["emb_row"] is not None for r in rows)}


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
