"""Stage embed_rationales: one L2-normalised sentence embedding per semantic target (the
assembled targets.jsonl: the rationales the PST rows point to, corrupted ones included)."""

import argparse

from pst_distill.config import load
from pst_distill.config.embed import EmbedConfig
from pst_distill.embed.encode import embed_rationales, load_embedder
from pst_distill.embed.targets import load_embeddings
from pst_distill.io import read_jsonl, write_json, write_npy
from pst_distill.models import pick_device
from pst_distill.runtime import Timer, cli, provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--targets", required=True, help="semantic targets {key, rationale} (jsonl)")
    ap.add_argument("--out", required=True, help="embeddings matrix (.npy, float32)")
    ap.add_argument("--keys", required=True, help="JSON list of keys, row i <-> keys[i]")
    ap.add_argument("--stats", required=True)
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, embed=EmbedConfig)
    log = setup("embed", common, cfg)
    records = read_jsonl(args.targets)
    device = pick_device(cfg.device)
    with timer.phase("load"):
        embedder = load_embedder(cfg.model, device, cfg.revision)
    with timer.phase("encode"):
        vectors, keys = embed_rationales(records, embedder, cfg.batch_size, cfg.normalize)
    load_s, encode_s = timer.phases["load"], timer.phases["encode"]
    write_npy(args.out, vectors)
    write_json(args.keys, keys)
    load_embeddings(args.out, args.keys, expected_keys=keys, check_norms=cfg.normalize)
    write_json(args.stats, {
        "model": cfg.model, "revision": cfg.revision, "dim": int(vectors.shape[1]),
        "rows": int(vectors.shape[0]), "distinct_texts": len({r["rationale"].strip() for r in records}),
        "normalize": cfg.normalize, "batch_size": cfg.batch_size, "load_s": round(load_s, 3), "encode_s": round(encode_s, 3),
        "timings": timer.as_dict(), "provenance": provenance(device),
    })
    log.info("embedded %d targets into %s (dim %d): load %.1f s, encode %.1f s",
             vectors.shape[0], args.out, vectors.shape[1], load_s, encode_s)


if __name__ == "__main__":
    cli(main, exit_fast=True)
