"""Stage train_student@<method>: finetune the student on that method's assembled sequences."""

import argparse

from pst_distill.config import load_section
from pst_distill.io import read_jsonl, read_npy, write_json
from pst_distill.models import pick_device
from pst_distill.runtime import provenance, setup
from pst_distill.trainer import train


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--method", required=True, help="a key of train.methods")
    ap.add_argument("--data", required=True, help="assembled sequences of this method (jsonl)")
    ap.add_argument("--embeddings", required=True, help="rationale embeddings (npy, [N, d])")
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--curve", required=True, help="per-step loss curve (tsv)")
    ap.add_argument("--metrics", required=True, help="training metrics (json)")
    args = ap.parse_args()

    common, cfg = load_section(args.params, "train")
    if args.method not in cfg.methods:
        raise SystemExit(f"method {args.method!r} is not under train.methods ({', '.join(cfg.methods)})")
    settings = cfg.methods[args.method]
    log = setup(f"train_student.{args.method}", common, settings)
    rows = read_jsonl(args.data)
    embeddings = read_npy(args.embeddings) if settings.loss.w_sem > 0 else None
    device = pick_device(settings.device)
    metrics = train(rows, settings, args.method, common.format, common.seed, args.out, args.curve,
                    embeddings=embeddings, device=device).metrics
    write_json(args.metrics, {**metrics, "seed": common.seed, "provenance": provenance(device)})
    log.info("%s: %d steps, final loss %.4f, %.0f tok/s, %.0f s", args.method, metrics["steps"],
             metrics["final_loss"], metrics["tokens_per_s"], metrics["wall_seconds"])


if __name__ == "__main__":
    main()
