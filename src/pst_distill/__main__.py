"""``python -m pst_distill``: the project's commands besides the pipeline's stages.

    python -m pst_distill check [--params params.yaml] [--no-machine]
        validate every section of a params file at once (and what this machine lacks)
    python -m pst_distill sweep run|collect|overrides ...
        the robustness sweep over DVC experiments (pst_distill.report.sweep)
    python -m pst_distill timings [--run DVC_REPRO_ARGS...]
        seconds per stage and phase, from logs/ (with --run: around a `dvc repro` it runs)
"""

from __future__ import annotations

import argparse
import logging
import sys


def check(args) -> int:
    from pst_distill.config import ConfigError
    from pst_distill.config.sections import check_file

    try:
        sections = check_file(args.params, machine=not args.no_machine)
    except ConfigError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    print(f"{args.params}: ok ({', '.join(sections)})")
    return 0


def main(argv: list[str] | None = None) -> int:
    from pst_distill import timings
    from pst_distill.report import sweep

    ap = argparse.ArgumentParser(prog="python -m pst_distill", description=__doc__.split("\n")[0])
    sub = ap.add_subparsers(dest="cmd", required=True)
    c = sub.add_parser("check", help="validate a whole params file")
    c.add_argument("--params", default="params.yaml")
    c.add_argument("--no-machine", action="store_true", help="skip the machine checks (model ids, "
                   "CUDA, files): only the values")
    c.set_defaults(fn=check)
    s = sub.add_parser("sweep", help="the robustness sweep (corrupted rationales)")
    sweep.add_arguments(s)
    s.set_defaults(fn=sweep.command)
    t = sub.add_parser("timings", help="seconds per stage and phase of the last run")
    timings.add_arguments(t)
    t.set_defaults(fn=timings.command)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
