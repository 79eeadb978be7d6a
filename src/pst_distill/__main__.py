"""``python -m pst_distill``: the project's commands besides the pipeline's stages.

    python -m pst_distill check [--params params.yaml] [--no-machine]
        validate every section of a params file at once (and what this machine lacks)
    python -m pst_distill sweep run|collect|overrides ...
        the robustness sweep over DVC experiments (pst_distill.report.sweep)
    python -m pst_distill timings [--run DVC_REPRO_ARGS...]
        seconds per stage and phase, from logs/ (with --run: around a `dvc repro` it runs)
    python -m pst_distill teacher-share [--push]
        move this machine's new teacher generations into the shared store, record it in
        dvc.lock (and push it), so a teammate's `dvc repro --pull` regenerates none of them
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


def teacher_share(args) -> int:
    """Fold the local cache's segments into the store; ``dvc commit`` the store's stage so
    dvc.lock names it; with ``--push``, ``dvc push`` it to the remote."""
    import subprocess
    from pathlib import Path

    from pst_distill.teacher.cache import GenerationCache, fold

    moved = fold(Path(args.cache_dir), Path(args.store))
    total = len(GenerationCache(None, read=[args.store]).keys())
    print(f"{len(moved)} segment(s) moved from {args.cache_dir} into {args.store} "
          f"({total} generations in the store)")
    steps = [] if args.no_commit else [["dvc", "commit", "-f", args.stage]]
    steps += [["dvc", "push", args.stage]] if args.push else []
    for cmd in steps:
        if subprocess.run(cmd).returncode != 0:
            print(f"error: `{' '.join(cmd)}` failed", file=sys.stderr)
            return 1
    if not args.no_commit:
        print("recorded in dvc.lock: commit it" + ("" if args.push else "; `dvc push` sends the "
                                                  "store to the remote"))
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
    sh = sub.add_parser("teacher-share", help="share this machine's new teacher generations")
    sh.add_argument("--store", default="data/teacher_store")
    sh.add_argument("--cache-dir", default=".cache/teacher")
    sh.add_argument("--stage", default="teacher_store", help="the DVC stage that owns the store")
    sh.add_argument("--push", action="store_true", help="also `dvc push` the store")
    sh.add_argument("--no-commit", action="store_true", help="only move the segments")
    sh.set_defaults(fn=teacher_share)
    args = ap.parse_args(argv)
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    return args.fn(args)


if __name__ == "__main__":
    sys.exit(main())
