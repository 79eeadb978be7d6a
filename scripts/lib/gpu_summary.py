"""The summary of scripts/gpu_check.sh: its steps (status, seconds), the benchmark lines
against issue 8's targets, and the environment; written as markdown, a short table printed.

    python scripts/lib/gpu_summary.py STEPS_TSV BENCH_JSONL ENV_TXT OUT_MD
"""

from __future__ import annotations

import json
import sys
from pathlib import Path

# issue 8's targets (GPU, side by side in one run)
TARGETS = {"ratio_vs_hf": 5.0, "smollm2-135m-random": 300_000.0, "qwen2.5-0.5b-random": 0.40}


def read_steps(path: Path) -> list[list[str]]:
    if not path.exists():
        return []
    return [line.split("\t") for line in path.read_text().splitlines() if line.strip()]


def read_bench(path: Path) -> list[dict]:
    if not path.exists():
        return []
    out = []
    for line in path.read_text().splitlines():
        try:
            out.append(json.loads(line))
        except json.JSONDecodeError:
            continue
    return out


def fmt(x, spec: str = ",.0f") -> str:
    return "-" if x is None else format(x, spec)


def target_note(rec: dict) -> str:
    notes = [f"ratio {'>=' if rec['ratio_vs_hf'] >= TARGETS['ratio_vs_hf'] else '<'} 5x"]
    ours = rec["ours"]
    if rec["config"] == "smollm2-135m-random":
        ok = ours["tokens_per_s"] >= TARGETS["smollm2-135m-random"]
        notes.append(f"{'>=' if ok else '<'} 300k tok/s")
    if rec["config"] == "qwen2.5-0.5b-random" and ours["mfu"] is not None:
        notes.append(f"MFU {'>=' if ours['mfu'] >= TARGETS['qwen2.5-0.5b-random'] else '<'} 40%")
    return ", ".join(notes) if rec["device"].startswith("cuda") else "no CPU target"


def bench_table(bench: list[dict]) -> list[str]:
    rows = ["| config | device | batch | HF tok/s | ours tok/s | ours/HF | ours MFU | ours peak GiB "
            "| packed/unpacked | targets |", "|" + "---|" * 10]
    for r in bench:
        ours, hf = r["ours"], r["hf"]
        mem = None if ours["peak_mem_bytes"] is None else ours["peak_mem_bytes"] / 2**30
        rows.append(f"| {r['config']} | {r['device_name'] or r['device']} | {r['batch']} | "
                    f"{fmt(hf['tokens_per_s'])} | {fmt(ours['tokens_per_s'])} | "
                    f"{r['ratio_vs_hf']:.2f} | {fmt(ours['mfu'], '.1%')} | {fmt(mem, '.1f')} | "
                    f"{fmt(r.get('packed_over_unpacked'), '.2f')} | {target_note(r)} |")
    return rows


def main() -> int:
    steps_path, bench_path, env_path, out_path = map(Path, sys.argv[1:5])
    steps, bench = read_steps(steps_path), read_bench(bench_path)
    step_rows = ["| step | status | seconds | note |", "|---|---|---|---|"]
    step_rows += [f"| {' | '.join((s + ['', '', '', ''])[:4])} |" for s in steps]
    env = env_path.read_text() if env_path.exists() else ""
    text = ["# gpu_check summary", "", "## Steps", "", *step_rows, "", "## Training throughput "
            "(real non-padding tokens/s; HF Trainer defaults vs ours)", "",
            *(bench_table(bench) if bench else ["no benchmark lines"]), "",
            "## Environment", "", "```", env.strip(), "```", ""]
    Path(out_path).write_text("\n".join(text))
    print("\n".join(step_rows))
    print()
    print("\n".join(bench_table(bench)) if bench else "no benchmark lines")
    failed = [s for s in steps if len(s) > 1 and s[1] != "ok"]
    return 1 if failed else 0


if __name__ == "__main__":
    raise SystemExit(main())
