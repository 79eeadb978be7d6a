"""Stage train_student@<method>: finetune the student on that method's assembled sequences.

With ``train.distributed.processes`` > 1 the stage re-runs itself on that many processes
(torch.distributed.run, one machine) unless it already runs under a launcher (torchrun,
accelerate launch, srun setting WORLD_SIZE), which then decides the process count.
"""

import argparse
import sys

from pst_distill.config import load
from pst_distill.config.train import TrainConfig
from pst_distill.embed.targets import join_embeddings
from pst_distill.io import read_jsonl, write_json
from pst_distill.models import pick_device
from pst_distill.runtime import Timer, cli, provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--method", required=True, help="a key of train.methods")
    ap.add_argument("--seed", type=int, required=True, help="training seed (one of train.seeds)")
    ap.add_argument("--data", required=True, help="assembled sequences of this method (jsonl)")
    ap.add_argument("--embeddings", required=True, help="rationale embeddings (npy, [N, d])")
    ap.add_argument("--keys", required=True, help="generation key of each embeddings row (json)")
    ap.add_argument("--out", required=True, help="model folder to write")
    ap.add_argument("--curve", required=True, help="per-step loss curve (tsv)")
    ap.add_argument("--metrics", required=True,
                    help="compared training metrics (json): loss parts, tokens/s, questions seen")
    ap.add_argument("--details", required=True,
                    help="the run's details (json, not a metric): settings echo, data counts, "
                         "precision, provenance, timings")
    ap.add_argument("--state-dir", default=None,
                    help="root of the resumable training state (not an out: DVC deletes outs)")
    ap.add_argument("--token-cache", default=None,
                    help="tokenised rows, shared by a method's seeds (not an out)")
    args = ap.parse_args()
    timer = Timer()

    common, cfg = load(args.params, train=TrainConfig)
    settings = cfg.settings_for(args.method)
    cfg.check_seed(args.seed)
    with timer.phase("imports"):  # torch, transformers, peft: after the params check
        from pst_distill.models import import_model_code
        from pst_distill.train.launch import in_distributed_launch, relaunch
        from pst_distill.train.loop import train
        from pst_distill.train.metrics import split_metrics
    if settings.distributed.processes > 1 and not in_distributed_launch():
        sys.exit(relaunch(settings.distributed.processes, sys.argv))
    with timer.phase("imports"):
        import_model_code(settings.model, settings.revision, settings.trust_remote_code)
    log = setup(f"train_student.{args.method}", common, settings)
    rows = read_jsonl(args.data)
    embeddings = None
    if settings.loss.w_sem > 0:  # joined by each row's emb_key, checked, never by position
        rows, embeddings = join_embeddings(rows, args.embeddings, args.keys)
    device = pick_device(settings.device)
    result = train(rows, settings, args.method, common.format, args.seed, args.out, args.curve,
                   embeddings=embeddings, device=device, state_dir=args.state_dir,
                   token_cache=args.token_cache)
    if not result.is_main:  # the main process writes the outputs
        return
    metrics, details = split_metrics({**result.metrics, "seed": args.seed})
    write_json(args.metrics, metrics)
    for name, seconds in details["timings"].items():  # the trainer's phases
        timer.add(name, seconds)
    write_json(args.details, {**details, "timings": timer.as_dict(), "data_seed": common.seed,
                              "provenance": provenance(device)})
    log.info("%s: %d steps, %d questions, final loss %.4f (mean of the last %d steps), "
             "%.0f tok/s, %.0f s", args.method, metrics["steps"], metrics["questions_seen"],
             metrics["final"]["loss"], details["final_window"], metrics["tokens_per_s"],
             details["wall_seconds"])


if __name__ == "__main__":
    cli(main, exit_fast=True)
