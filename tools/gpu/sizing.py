"""The GPU experiment's time by arithmetic: the profile's real training tokens per method
(its data built and tokenised here, on CPU) times per-stage costs, phase by phase, against
the experiment's deadline.

    python -m tools.gpu size [--profile FILE] [--costs FILE] [--budget S] [--sample N]

Costs come from ``--costs`` (a JSON object with any of :class:`Costs`' fields: what a smoke
run on the machine measured) or the planning values below. Prints every phase, the seconds
of one seed with each method's training and evaluation, when the first seed ends, whether it
ends with the margin, and how many seeds fit. Exit status 1 when the first seed does not fit.
"""

from __future__ import annotations

import argparse
import json
import math
import random
from dataclasses import asdict, dataclass, fields, replace
from pathlib import Path

from tools.gpu.machine import ROOT

MARGIN = 0.15  # the share of the deadline the first seed and the report leave unused


@dataclass(frozen=True)
class Costs:
    """Seconds (or tokens/s) that size the experiment. Planning values: measured where a
    source is named, else an estimate; a smoke run on the machine (``python -m tools.gpu
    smoke``, its ``costs.json``) replaces them."""
    # per stage process before and after its work: interpreter 0.3 s, torch/transformers/peft
    # imports 4.5 s, student load 1.5-3 s, DVC hashing and lock 1.5-2 s (measured per stage
    # on a 2-core CPU, docs/results.md), plus CUDA initialisation 3 s (estimate), rounded up
    stage_s: float = 12.0
    # a full-finetune checkpoint: 270 MB of bf16 weights written, then hashed by DVC (estimate)
    save_s: float = 3.0
    # training throughput in real tokens/s: the pretrained SmolLM2-135M full finetune measured
    # on an H100 at 77k (64 x 128, eager); a plain bf16 loop with 512-token rows reached 151k
    train_tokens_per_s: float = 77_000.0
    # one greedy decode step of a batch of <= 1024 prompts on the 135M student (estimate: HF
    # generate is launch-bound there)
    decode_step_s: float = 0.03
    install_s: float = 15.0      # the bundle's wheels into a folder (estimate)
    workcopy_s: float = 5.0      # the project copied with the profile as params.yaml
    convert_s: float = 26.0      # the student's GGUF to safetensors, once (measured on the H100)
    # prepare_data, generate_rationales (reference), teacher_store, assemble_dataset: 11.8 s
    # through `dvc repro` on a 2-core CPU at this profile's size (they use no GPU)
    cpu_upstream_s: float = 12.0
    embed_s: float = 5.0         # encoding the profile's targets on the GPU (estimate)
    report_s: float = 35.0       # the report stage: tables, bootstrap, routers, plots (reserved)
    source: str = "planning values (tools/gpu/sizing.py)"

    @classmethod
    def read(cls, path: Path | None) -> Costs:
        if path is None:
            return cls()
        raw = json.loads(Path(path).read_text())
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(raw) - known)
        if unknown:
            raise SystemExit(f"error: {path}: unknown cost keys {unknown}; known: {sorted(known)}")
        return replace(cls(), **{"source": str(path), **raw})


def build_data(profile: Path, sample: int | None = None) -> tuple[dict, dict, list[dict]]:
    """The profile's data, built in-process as the pipeline builds it (tasks, the split, the
    teacher when it is the reference one, assembly) and tokenised as the trainer does.
    Returns ``(rows per method, sizes, test questions)``; sizes are ``{method: {"questions",
    "rows", "tokens"}}`` (tokens per epoch; with ``sample``, the mean length of ``sample``
    rows drawn at random, times the rows), ``"_eval"``: the questions each run evaluates and
    adaptive's held-out ones, and ``"_targets"``: the semantic targets (embedding rows)."""
    from pst_distill.assemble.build import assemble
    from pst_distill.config.sections import check_file
    from pst_distill.formats import control_tokens
    from pst_distill.models import load_tokenizer
    from pst_distill.tasks import load_task, split_records
    from pst_distill.teacher.generate import generate_rationales
    from pst_distill.train.data import encode_rows, question_groups
    from pst_distill.train.model import add_special

    p = check_file(profile, machine=False)
    common, train = p["common"], p["train"]
    if p["teacher"].backend != "reference":
        raise SystemExit(f"error: {profile}: sizing builds the data with the reference teacher; "
                         f"teacher.backend is {p['teacher'].backend!r}")
    records = [r for spec in p["prepare"].tasks for r in load_task(spec, common.seed)[0]]
    train_items, test = split_records(records, p["prepare"].test_frac)
    kept, _, _ = generate_rationales(train_items, p["teacher"], common.format.answer_prefix,
                                     common.seed)
    datasets, targets, stats, _ = assemble(kept, p["assemble"], common.format, common.seed)
    sizes = {}
    tokenizers = {}
    for method in train.methods:
        s = train.settings_for(method)
        if (s.model, s.revision) not in tokenizers:
            tok = load_tokenizer(s.model, s.revision, s.trust_remote_code)
            for t in [common.format.sem_token, *control_tokens("fast", common.format),
                      *control_tokens("think", common.format)]:
                add_special(tok, t)
            tokenizers[s.model, s.revision] = tok
        rows = datasets[method]
        part = rows if sample is None or sample >= len(rows) else \
            random.Random(0).sample(rows, sample)
        ex, _ = encode_rows(part, tokenizers[s.model, s.revision], s.max_length,
                            s.label_sem_token, common.format.system_prompt)
        n_tokens = sum(len(e.input_ids) for e in ex)
        sizes[method] = {"questions": len(question_groups(ex)) if part is rows
                         else len({r["id"] for r in rows}),
                         "rows": len(rows), "tokens": round(n_tokens * len(rows) / max(len(part), 1))}
    n_tasks = len(p["prepare"].tasks)
    sizes["_eval"] = {"questions": p["evaluate"].per_task * n_tasks,
                      "holdout": stats["adaptive_holdout"]}
    sizes["_targets"] = len(targets)
    return datasets, sizes, test


def measure_tokens(profile: Path, sample: int | None = None) -> dict:
    """The sizes of :func:`build_data`."""
    return build_data(profile, sample)[1]


def plan(params: dict, data: dict, costs: Costs, budget_s: float) -> dict:
    """Seconds per phase and per method for one seed; when the first seed ends; how many
    seeds fit. ``params``: the profile's validated sections; ``data``: :func:`measure_tokens`."""
    from pst_distill.evaluate.generate import max_new_tokens
    from pst_distill.methods import BY_NAME
    from pst_distill.train.data import questions_per_step, total_steps

    train, ev = params["train"], params["evaluate"]
    runs = {}
    for method in train.methods:
        s = train.settings_for(method)
        d = data[method]
        processes = s.distributed.processes
        steps = total_steps(s, d["questions"], processes)
        epochs = steps * questions_per_step(s, processes) / d["questions"]
        tokens = d["tokens"] * epochs
        train_s = costs.stage_s + tokens / costs.train_tokens_per_s + (
            costs.save_s if s.finetune == "full" else 0.0)
        modes = BY_NAME[method].modes  # both modes, on the test and the held-out questions
        questions = data["_eval"]["questions"] + (data["_eval"]["holdout"] if modes else 0)
        batches = math.ceil(questions / ev.batch_size)
        # a batch runs to its longest completion: the cap, the pessimistic case
        caps = ([ev.max_new_tokens, ev.max_new_tokens_rationale] if modes else
                [max_new_tokens(method, ev)])
        eval_s = costs.stage_s + batches * sum(caps) * costs.decode_step_s
        runs[method] = {"steps": steps, "tokens": round(tokens), "train_s": train_s,
                        "eval_s": eval_s}
    setup = {"install": costs.install_s, "workcopy": costs.workcopy_s,
             "student": costs.convert_s, "upstream": costs.cpu_upstream_s + costs.stage_s +
             costs.embed_s}
    seed_s = sum(r["train_s"] + r["eval_s"] for r in runs.values())
    before = sum(setup.values())
    first_end = before + seed_s + costs.report_s
    usable = budget_s * (1 - MARGIN)
    fit = max(0, math.floor((budget_s - before - costs.report_s) / seed_s)) if seed_s else 0
    return {"setup": setup, "runs": runs, "seed_s": seed_s, "report_s": costs.report_s,
            "first_seed_end_s": first_end, "budget_s": budget_s, "usable_s": usable,
            "first_seed_fits": first_end <= usable,
            "seeds_that_fit": min(fit, len(train.seeds)), "seeds": list(train.seeds),
            "costs": asdict(costs)}


def render(p: dict) -> list[str]:
    lines = [f"costs: {p['costs']['source']}", "",
             "| phase | seconds |", "|---|---|"]
    lines += [f"| {k} | {v:.0f} |" for k, v in p["setup"].items()]
    lines += ["", "| method (one seed) | steps | training tokens | train s | evaluate s |",
              "|---|---|---|---|---|"]
    lines += [f"| {m} | {r['steps']} | {r['tokens'] / 1e6:.2f}M | {r['train_s']:.0f} | "
              f"{r['eval_s']:.0f} |" for m, r in p["runs"].items()]
    lines += ["", f"one seed: {p['seed_s']:.0f} s; report {p['report_s']:.0f} s",
              f"the first seed and the report end at {p['first_seed_end_s']:.0f} s of "
              f"{p['budget_s']:.0f} s ({p['usable_s']:.0f} s with the {MARGIN:.0%} margin): "
              + ("fits" if p["first_seed_fits"] else "DOES NOT FIT"),
              f"seeds that fit the deadline: {p['seeds_that_fit']} of {len(p['seeds'])} "
              "(the experiment starts another seed only when the time seed 1 took is left)"]
    return lines


def main(argv: list[str] | None = None) -> int:
    from tools.gpu.experiment import BUDGET_S

    ap = argparse.ArgumentParser(prog="python -m tools.gpu size",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("--profile", type=Path, default=ROOT / "profiles" / "gpu.yaml")
    ap.add_argument("--costs", type=Path, help="JSON with measured costs (Costs' fields)")
    ap.add_argument("--budget", type=float, default=BUDGET_S, help="the experiment's deadline (s)")
    ap.add_argument("--sample", type=int, help="tokenise only the first N rows per method")
    args = ap.parse_args(argv)
    from pst_distill.config.sections import check_file

    costs = Costs.read(args.costs)
    data = measure_tokens(args.profile, args.sample)
    p = plan(check_file(args.profile, machine=False), data, costs, args.budget)
    print("\n".join(render(p)))
    return 0 if p["first_seed_fits"] else 1
