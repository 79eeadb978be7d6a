"""Stage generate_rationales: the teacher writes step-by-step rationales for train items."""

import argparse

from pst_distill.config import load
from pst_distill.config.teacher import TeacherConfig
from pst_distill.io import read_jsonl, write_json, write_jsonl
from pst_distill.runtime import Timer, cli, provenance, setup
from pst_distill.teacher.generate import generate_rationales


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, help="prepared train items (jsonl)")
    ap.add_argument("--out", required=True, help="kept rationales (jsonl)")
    ap.add_argument("--generations", required=True, help="every generation, kept or not (jsonl)")
    ap.add_argument("--stats", required=True)
    ap.add_argument("--cache-dir", default=None,
                    help="where new generations are written as they arrive (not an out): a "
                         "rerun generates only what is new")
    ap.add_argument("--store", default=None,
                    help="the shared store of generations (read first; `python -m pst_distill "
                         "teacher-share` moves the cache's generations into it)")
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, teacher=TeacherConfig)
    log = setup("teacher", common, cfg)
    items = read_jsonl(args.train)
    with timer.phase("teacher"):
        kept, generations, stats = generate_rationales(
            items, cfg, common.format.answer_prefix, common.seed, cache_dir=args.cache_dir,
            store=args.store)
    with timer.phase("write"):
        write_jsonl(args.generations, generations)
        write_jsonl(args.out, kept)
    write_json(args.stats, {**stats, "timings": timer.as_dict(), "provenance": provenance()})
    log.info("kept %d of %d generations; dropped %s", stats["kept"], stats["generations"],
             stats["dropped"])


if __name__ == "__main__":
    cli(main, exit_fast=True)
