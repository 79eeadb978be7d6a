"""The experiment's dry-run params: a profile cut down to CPU sizes with its structure kept
(sections, tasks, methods, seeds, full finetune, packing, each method's budget kind and
batch ratio), so a CPU run of the kit goes through every stage the GPU run will.

    python -m tools.gpu dry-params PROFILE OUT
"""

from __future__ import annotations

import argparse
import copy
import sys
from pathlib import Path

import yaml

ITEMS_PER_TASK = 16
STEPS = 2
BATCH = 2


def dry_params(profile: dict) -> dict:
    """A CPU-sized copy of ``profile``: every size cut down, every device ``cpu``."""
    p = copy.deepcopy(profile)
    p["prepare"]["test_frac"] = 0.25
    for task in p["prepare"]["tasks"]:
        if task.get("source", "offline") == "offline":
            task["n"] = ITEMS_PER_TASK
    if "embed" in p:
        p["embed"].update(device="cpu", batch_size=16)
    train = p["train"]
    base = train.setdefault("defaults", {})
    base_batch = base.get("batch_size", 8)
    base.update(device="cpu", steps=STEPS, epochs=None, batch_size=BATCH, save_every=STEPS,
                warmup_steps=0)
    for name, block in train["methods"].items():
        block = train["methods"][name] = dict(block or {})
        if "steps" in block or "epochs" in block:
            block.update(steps=STEPS, epochs=None)
        if "batch_size" in block:  # keep a method's own ratio to the default batch
            block["batch_size"] = max(1, round(BATCH * block["batch_size"] / base_batch))
        for key in ("device", "save_every"):
            block.pop(key, None)
    if "sem" in train:
        train["sem"]["hidden"] = 64
    p.setdefault("evaluate", {}).update(device="cpu", batch_size=6, per_task=3, max_new_tokens=8,
                                        max_new_tokens_rationale=24)
    # a few held-out questions for adaptive's routers, leaving the rest to train on
    p.setdefault("assemble", {})["holdout_per_task"] = 2
    if "adaptive" in p:
        p["adaptive"].setdefault("perception", {})["epochs"] = 20
    p.setdefault("report", {})["n_boot"] = 200
    return p


def seed_targets(params: dict) -> list[tuple[int, list[str]]]:
    """Per training seed, the dvc.yaml stages that train and evaluate every method with it."""
    train = params["train"]
    return [(seed, [f"evaluate_student@{m}-{seed}" for m in train["methods"]])
            for seed in train.get("seeds", [1])]


def write_dry_params(profile: Path, out: Path) -> None:
    text = yaml.safe_dump(dry_params(yaml.safe_load(profile.read_text())), sort_keys=False)
    out.write_text(f"# CPU dry run of {profile.name} (python -m tools.gpu dry-params): the same "
                   f"structure, tiny sizes\n{text}")


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu dry-params",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("profile", type=Path)
    ap.add_argument("out", type=Path)
    args = ap.parse_args(argv)
    write_dry_params(args.profile, args.out)
    try:  # validated where pst_distill is importable
        from pst_distill.config import ConfigError
        from pst_distill.config.sections import check_file
    except ImportError:
        print(f"{args.out} written (not validated: pst_distill is not importable here)")
        return 0
    try:
        check_file(args.out, machine=False)
    except ConfigError as exc:
        print(exc, file=sys.stderr)
        return 2
    print(f"{args.out} written and validated")
    return 0
