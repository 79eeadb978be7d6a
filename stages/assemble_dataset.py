"""Stage assemble_dataset: one training JSONL per method (segments + embedding row)."""

import argparse

from pst_distill.assemble import assemble, write_datasets
from pst_distill.config import load_section
from pst_distill.embed import load_embeddings
from pst_distill.io import read_jsonl, write_json
from pst_distill.runtime import cli, provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--rationales", required=True, help="kept rationales (jsonl)")
    ap.add_argument("--embeddings", required=True, help="embeddings matrix (.npy)")
    ap.add_argument("--keys", required=True, help="JSON key list aligned to the matrix")
    ap.add_argument("--out-dir", required=True, help="folder for <method>.jsonl")
    ap.add_argument("--stats", required=True)
    args = ap.parse_args()

    common, cfg = load_section(args.params, "assemble")
    log = setup("assemble", common, cfg)
    records = read_jsonl(args.rationales)
    # norms are checked only for presence/alignment here: embed.normalize may be false
    emb = load_embeddings(args.embeddings, args.keys, expected_keys=[r["key"] for r in records],
                          check_norms=False)
    datasets, stats = assemble(records, emb.row_of, cfg, common.format, common.seed)
    write_datasets(args.out_dir, datasets)
    write_json(args.stats, {**stats, "embedding_dim": emb.dim, "provenance": provenance()})
    log.info("assembled %d items into %s; corrupted %d; rows per method %s", stats["items"],
             args.out_dir, stats["corrupted"], {m: s["rows"] for m, s in stats["methods"].items()})


if __name__ == "__main__":
    cli(main)
