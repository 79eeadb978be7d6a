"""Stage prepare_data: build every configured task, split train/test by id hash (or, with
prepare.split: validation, train/validation within the training questions)."""

import argparse
from collections import Counter

from pst_distill.config import load
from pst_distill.config.prepare import PrepareConfig
from pst_distill.io import write_json, write_jsonl
from pst_distill.runtime import Timer, cli, setup
from pst_distill.tasks import load_task, split_records


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True)
    ap.add_argument("--test", required=True)
    ap.add_argument("--stats", required=True)
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, prepare=PrepareConfig)
    log = setup("prepare", common, cfg)

    records, sources = [], {}
    with timer.phase("tasks"):
        for spec in cfg.tasks:
            task_records, sources[spec.name] = load_task(spec, common.seed)
            log.info("%s (%s): %d items", spec.name, spec.source, len(task_records))
            records.extend(task_records)
        train, test = split_records(records, cfg.test_frac, cfg.split, cfg.validation_frac)
    with timer.phase("write"):
        write_jsonl(args.train, train)
        write_jsonl(args.test, test)
    stats = {
        "train": dict(Counter(r["task"] for r in train)),
        cfg.split: dict(Counter(r["task"] for r in test)),  # written to the --test file
        "with_reference_rationale": sum(bool(r.get("reference_rationale")) for r in records),
        "sources": sources,  # per task: hub dataset commit read, or local:<sha256> of the file
        "timings": timer.as_dict(),
    }
    write_json(args.stats, stats)
    log.info("wrote %d train and %d %s items", len(train), len(test), cfg.split)


if __name__ == "__main__":
    cli(main, exit_fast=True)
