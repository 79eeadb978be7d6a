"""Stage report: accuracy with 95% intervals, constant baselines, paired differences, label
histograms, cost and training tables, the adaptive accuracy/tokens frontier (Markdown),
summary.json (metrics) and PNG plots."""

import argparse
from pathlib import Path

from pst_distill.config import load, read_params
from pst_distill.config.adaptive import AdaptiveConfig
from pst_distill.config.report import ReportConfig
from pst_distill.report.build import Inputs, Outputs, build_report
from pst_distill.io import write_json
from pst_distill.runtime import Timer, cli, provenance, setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--predictions", required=True, help="folder of <method>-<seed>.jsonl predictions")
    ap.add_argument("--train", required=True, help="prepared train split (majority baseline)")
    ap.add_argument("--test", required=True, help="prepared test split")
    ap.add_argument("--train-metrics", required=True, help="folder of <method>-<seed>.json training metrics")
    ap.add_argument("--curves", required=True, help="folder of <method>-<seed>.tsv loss curves")
    ap.add_argument("--out", required=True, help="Markdown report")
    ap.add_argument("--summary", required=True, help="accuracy intervals, baselines, cost (json)")
    ap.add_argument("--accuracy-plot", required=True)
    ap.add_argument("--loss-plot", required=True)
    ap.add_argument("--details", required=True, help="timings and provenance (json, not a metric)")
    ap.add_argument("--frontier-plot", required=True,
                    help="accuracy against generated tokens per question (methods, adaptive routers)")
    args = ap.parse_args()
    timer = Timer()

    common, cfg, acfg = load(args.params, report=ReportConfig, adaptive=AdaptiveConfig)
    log = setup("report", common, cfg)
    train = read_params(args.params)["train"]  # checked by train_student
    runs = frozenset((m, s) for m in train["methods"] for s in train["seeds"])
    inputs = Inputs(Path(args.predictions), Path(args.train), Path(args.test),
                    Path(args.train_metrics), Path(args.curves), runs)
    outputs = Outputs(Path(args.out), Path(args.summary), Path(args.accuracy_plot),
                      Path(args.loss_plot), Path(args.frontier_plot))
    with timer.phase("report"):
        summary = build_report(inputs, outputs, cfg, acfg)
    write_json(args.details, {"methods": list(summary["methods"]), "timings": timer.as_dict(),
                              "provenance": provenance()})
    log.info("report for %s written to %s", ", ".join(summary["methods"]), args.out)


if __name__ == "__main__":
    cli(main, exit_fast=True)
