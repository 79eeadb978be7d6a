"""Stage generate_rationales: the teacher writes step-by-step rationales for train items."""

import argparse

from pst_distill.config import load_section
from pst_distill.io import read_jsonl, write_json, write_jsonl
from pst_distill.runtime import cli, provenance, setup
from pst_distill.teacher import generate_rationales


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--train", required=True, help="prepared train items (jsonl)")
    ap.add_argument("--out", required=True, help="kept rationales (jsonl)")
    ap.add_argument("--generations", required=True, help="every generation, kept or not (jsonl)")
    ap.add_argument("--stats", required=True)
    ap.add_argument("--cache-dir", default=None,
                    help="per-generation cache (outside DVC outs): reruns generate only what is new")
    args = ap.parse_args()

    common, cfg = load_section(args.params, "teacher")
    log = setup("teacher", common, cfg)
    items = read_jsonl(args.train)
    kept, generations, stats = generate_rationales(
        items, cfg, common.format.answer_prefix, common.seed, cache_dir=args.cache_dir)
    write_jsonl(args.generations, generations)
    write_jsonl(args.out, kept)
    write_json(args.stats, {**stats, "provenance": provenance()})
    log.info("kept %d of %d generations; dropped %s", stats["kept"], stats["generations"],
             stats["dropped"])


if __name__ == "__main__":
    cli(main)
