"""Markdown for the kit's summaries: the one table writer, the steps table, and the check's
summary (its steps, the training benchmark against the throughput targets, the
environment block)."""

from __future__ import annotations

import json
from pathlib import Path

from tools.gpu.steps import Step

# the throughput targets (GPU, side by side in one run): ours/HF Trainer, SmolLM2-135M
# real tokens/s, Qwen2.5-0.5B MFU
TARGETS = {"ratio_vs_hf": 5.0, "smollm2-135m-random": 300_000.0, "qwen2.5-0.5b-random": 0.40}


def md_table(head: list[str], rows: list[list[str]]) -> list[str]:
    return ["| " + " | ".join(head) + " |", "|" + "---|" * len(head),
            *["| " + " | ".join(r) + " |" for r in rows]]


def steps_table(steps: list[Step]) -> list[str]:
    return md_table(["step", "status", "seconds", "note"], [s.row() for s in steps])


def read_jsonl(path: Path) -> list[dict]:
    out = []
    for line in path.read_text().splitlines() if path.exists() else []:
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def target_note(rec: dict) -> str:
    if not rec["device"].startswith("cuda"):
        return "no CPU target"
    ours = rec["ours"]
    notes = [f"ratio {'>=' if rec['ratio_vs_hf'] >= TARGETS['ratio_vs_hf'] else '<'} 5x"]
    if rec["config"] == "smollm2-135m-random":
        notes.append(f"{'>=' if ours['tokens_per_s'] >= TARGETS[rec['config']] else '<'} 300k tok/s")
    if rec["config"] == "qwen2.5-0.5b-random" and ours["mfu"] is not None:
        notes.append(f"MFU {'>=' if ours['mfu'] >= TARGETS[rec['config']] else '<'} 40%")
    return ", ".join(notes)


def bench_table(bench: list[dict]) -> list[str]:
    rows = []
    for r in bench:
        ours, hf = r["ours"], r["hf"]
        mem = None if ours["peak_mem_bytes"] is None else ours["peak_mem_bytes"] / 2**30
        rows.append([r["config"], r["device_name"] or r["device"], str(r["batch"]),
                     fmt(hf["tokens_per_s"]), fmt(ours["tokens_per_s"]), f"{r['ratio_vs_hf']:.2f}",
                     fmt(ours["mfu"], ".1%"), fmt(mem, ".1f"), fmt(r.get("packed_over_unpacked"), ".2f"),
                     target_note(r)])
    return md_table(["config", "device", "batch", "HF tok/s", "ours tok/s", "ours/HF", "ours MFU",
                     "ours peak GiB", "packed/unpacked", "targets"], rows)


def check_summary(steps: list[Step], bench: list[dict], env_text: str) -> tuple[list[str], list[str]]:
    """(summary.md lines, the short version printed last: steps, then the benchmark)."""
    table = bench_table(bench) if bench else ["no benchmark lines"]
    text = ["# GPU check summary", "", "## Steps", "", *steps_table(steps), "",
            "## Training throughput (real non-padding tokens/s; HF Trainer defaults vs ours)", "",
            *table, "", "## Environment", "", "```", env_text.strip(), "```", ""]
    return text, [*steps_table(steps), "", *table]
