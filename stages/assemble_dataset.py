"""Stage assemble_dataset: one training JSONL per method (segments + target key), and the
semantic targets (targets.jsonl) that the embed stage embeds next."""

import argparse

from pst_distill.assemble.build import assemble, write_datasets, write_targets
from pst_distill.config import load
from pst_distill.config.assemble import AssembleConfig
from pst_distill.io import read_jsonl, write_json, write_jsonl
from pst_distill.runtime import Timer, cli, provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rationales", required=True, help="kept rationales (jsonl)")
    ap.add_argument("--out-dir", required=True, help="folder for <method>.jsonl")
    ap.add_argument("--targets", required=True, help="semantic targets to embed (jsonl)")
    ap.add_argument("--holdout", required=True, help="questions held out of adaptive's data, "
                    "to fit its routers on (jsonl)")
    ap.add_argument("--stats", required=True, help="the few figures a sweep compares (metrics json)")
    ap.add_argument("--details", required=True, help="full assembly statistics and provenance (json)")
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, assemble=AssembleConfig)
    log = setup("assemble", common, cfg)
    records = read_jsonl(args.rationales)
    with timer.phase("assemble"):
        datasets, targets, stats, holdout = assemble(records, cfg, common.format, common.seed)
    with timer.phase("write"):
        write_datasets(args.out_dir, datasets)
        write_targets(args.targets, targets)
        write_jsonl(args.holdout, holdout)
    write_json(args.details, {**stats, "timings": timer.as_dict(), "provenance": provenance()})
    write_json(args.stats, {"items": stats["items"], "corrupted": stats["corrupted"],
                            "corrupt": {k: stats["corrupt"][k] for k in ("frac", "mode", "per_task")},
                            "semantic_target": stats["semantic_target"], "targets": stats["targets"]})
    log.info("assembled %d items into %s; corrupted %d (semantic target: %s); %d targets; "
             "rows per method %s", stats["items"], args.out_dir, stats["corrupted"],
             stats["semantic_target"], stats["targets"],
             {m: s["rows"] for m, s in stats["methods"].items()})


if __name__ == "__main__":
    cli(main, exit_fast=True)
