"""Stage report: methods × tasks accuracy table with token/time cost, and PNG plots."""

import argparse

from pst_distill.config import load_section
from pst_distill.report import build_report
from pst_distill.runtime import setup


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--params", default="params.yaml")
    ap.add_argument("--eval-metrics", required=True, help="folder of evaluate_student metrics")
    ap.add_argument("--train-metrics", required=True, help="folder of train_student metrics")
    ap.add_argument("--curves", required=True, help="folder of per-method loss curves (tsv)")
    ap.add_argument("--out", required=True, help="Markdown report")
    ap.add_argument("--accuracy-plot", required=True)
    ap.add_argument("--loss-plot", required=True)
    args = ap.parse_args()

    common, cfg = load_section(args.params, "report")
    log = setup("report", common, cfg)
    done = build_report(args.eval_metrics, args.train_metrics, args.curves, args.out,
                        args.accuracy_plot, args.loss_plot, cfg)
    log.info("report for %s written to %s", ", ".join(done["methods"]) or "no methods", args.out)


if __name__ == "__main__":
    main()
