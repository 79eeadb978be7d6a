"""The prepare wing: builds the records of each configured task, offline or from the hub,
and splits them into train and test by id hash."""

from __future__ import annotations

import logging
import random

from pst_distill.config.prepare import HUB, OFFLINE, TASK_NAMES
from pst_distill.io import content_hash
from pst_distill.tasks.generators import GENERATORS
from pst_distill.tasks.records import is_test, make_record

__all__ = ["TASK_NAMES", "build_task", "load_task", "split_records", "make_record"]
log = logging.getLogger(__name__)


def build_task(spec, seed: int) -> list[dict]:
    """Records of one task spec, de-duplicated by id, in a deterministic order."""
    return load_task(spec, seed)[0]


def load_task(spec, seed: int) -> tuple[list[dict], dict]:
    """``(records, origin)``: the records of :func:`build_task` and where they came from
    (for a hub task the dataset commit read, or ``local:<sha256>`` of its ``data_files``)."""
    if spec.source == OFFLINE:
        fn, options_model = GENERATORS[spec.name]
        rng = random.Random(content_hash(seed, spec.name, spec.options))
        options = options_model.model_validate(spec.options).model_dump()
        records: dict[str, dict] = {}
        attempts = 0
        while len(records) < spec.n and attempts < 20:  # refill after duplicates
            for rec in fn(spec.n - len(records), rng, **options):
                records.setdefault(rec["id"], rec)
            attempts += 1
        if len(records) < spec.n:
            log.warning("%s: only %d unique items of %d asked", spec.name, len(records), spec.n)
        return list(records.values()), {"source": OFFLINE, "options": options}
    assert spec.source == HUB
    from pst_distill.tasks.hub import read_hub_task

    return read_hub_task(spec)


def split_records(records: list[dict], test_frac: float, split: str = "test",
                  validation_frac: float = 0.2) -> tuple[list[dict], list[dict]]:
    """``(train, evaluation)`` by id hash. ``split="test"``: the test split. ``"validation"``:
    a ``validation_frac`` share of the TRAINING questions (a second hash of the id), each
    marked ``"split": "validation"``, becomes the evaluation set and leaves training; the test
    questions are not written at all, so a setting chosen here never saw them."""
    train = [r for r in records if not is_test(r["id"], test_frac)]
    if split == "validation":
        held = [{**r, "split": "validation"} for r in train
                if is_test(f"validation:{r['id']}", validation_frac)]
        ids = {r["id"] for r in held}
        return [r for r in train if r["id"] not in ids], held
    return train, [r for r in records if is_test(r["id"], test_frac)]
