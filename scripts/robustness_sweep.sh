#!/usr/bin/env bash
# The robustness sweep of issue 9 in one command: assemble.corrupt_frac in {0, 0.25, 0.5}
# for pre_thinking, post_thinking and pst, as DVC experiments, then the report.
#
#   scripts/robustness_sweep.sh [--fractions 0,0.25,0.5] [--methods pre_thinking,post_thinking,pst]
#       [--name PREFIX] [--jobs N] [--out-dir reports] [--collect PREFIX] [-S key=value ...]
#
# 1. queues one experiment per fraction with DVC's grid syntax, named PREFIX-1, PREFIX-2, ...
#    (default PREFIX: robustness-<date>-<time>):
#      dvc exp run --queue -n PREFIX -S assemble.corrupt_frac=0,0.25,0.5 \
#          -S '~train.methods.answer_only' -S '~train.methods.step_by_step' [-S ...]
#    (the `~` overrides drop the other methods from the train/evaluate matrix; assemble keeps
#    building every dataset, so the compared methods' data and the run-cache stay shared);
# 2. runs the queue: `dvc exp run --run-all -j N` (every queued experiment, also ones queued
#    before; each in a temporary copy, the workspace is not touched; unchanged stages come
#    from the run-cache, so fraction 0 costs little after a `dvc repro` of the same params);
# 3. reads every experiment's reports/summary.json from `dvc exp show --json` and writes
#    OUT_DIR/robustness.md and OUT_DIR/robustness.png (python -m pst_distill.sweep report):
#    accuracy against corrupt_frac per method and task, 95% intervals, constant baselines.
#
# Extra `-S key=value` go to every experiment (e.g. -S assemble.corrupt_mode=swap,
# -S train.seeds=[1], -S assemble.semantic_target=clean). --collect PREFIX only redoes step 3
# for an earlier sweep. Experiments run from the last commit plus changes to files git
# tracks: commit new files first. Exit status 0 only if every experiment succeeded.
set -euo pipefail

usage() { sed -n '2,26p' "$0"; exit 2; }

ROOT=$(cd "$(dirname "$0")/.." && pwd)
cd "$ROOT"
PY=${PYTHON:-python}
FRACTIONS=0,0.25,0.5 METHODS=pre_thinking,post_thinking,pst JOBS=1 OUT_DIR=reports
NAME="robustness-$(date +%Y%m%d-%H%M%S)" COLLECT="" EXTRA=()
while [[ $# -gt 0 ]]; do
  case "$1" in
    --fractions) FRACTIONS=$2; shift 2 ;;
    --methods) METHODS=$2; shift 2 ;;
    --name) NAME=$2; shift 2 ;;
    --jobs) JOBS=$2; shift 2 ;;
    --out-dir) OUT_DIR=$2; shift 2 ;;
    --collect) COLLECT=$2; shift 2 ;;
    -S|--set-param) EXTRA+=(-S "$2"); shift 2 ;;
    -h|--help) usage ;;
    *) echo "error: unknown argument $1" >&2; usage ;;
  esac
done

report() {  # $1: the sweep's name prefix
  local show
  show=$(mktemp "${TMPDIR:-/tmp}/exp_show.XXXXXX.json")
  # every baseline (-A): the sweep's experiments stay under the commit they were queued on,
  # which is not HEAD any more once something was committed while they ran
  dvc exp show --json -A > "$show"
  "$PY" -m pst_distill.sweep report --exp-show "$show" --prefix "$1" \
      --out "$OUT_DIR/robustness.md" --plot "$OUT_DIR/robustness.png"
  rm -f "$show"
}

if [[ -n $COLLECT ]]; then
  report "$COLLECT"
  exit 0
fi

# the sweep's overrides, checked against params.yaml before anything is queued
OVERRIDES=$("$PY" -m pst_distill.sweep overrides --params params.yaml \
    --methods "$METHODS" --fractions "$FRACTIONS")
ARGS=()
while IFS= read -r line; do ARGS+=(-S "$line"); done <<< "$OVERRIDES"

untracked=$(git ls-files --others --exclude-standard -- src stages dvc.yaml params.yaml)
if [[ -n $untracked ]]; then
  echo "warning: not tracked by git, so missing in the experiments:" $untracked >&2
fi
queued_before=$(dvc queue status 2>/dev/null | awk '$4 == "Queued"' | wc -l)
if [[ $queued_before -gt 0 ]]; then
  echo "warning: $queued_before experiment(s) already queued will run too" >&2
fi

start=$SECONDS
echo "sweep $NAME: corrupt_frac $FRACTIONS, methods $METHODS" >&2
dvc exp run --queue -n "$NAME" "${ARGS[@]}" ${EXTRA[@]+"${EXTRA[@]}"}
status=0
dvc exp run --run-all -j "$JOBS" || status=$?
failed=$(dvc queue status 2>/dev/null | awk -v n="$NAME" '($2 == n || index($2, n "-") == 1) && $NF == "Failed" {print $2}')
if [[ $status -ne 0 || -n $failed ]]; then
  echo "error: experiment(s) failed: ${failed:-see dvc queue status}; logs: dvc queue logs <name>" >&2
  exit 1
fi
report "$NAME"
echo "sweep $NAME done in $((SECONDS - start)) s: $OUT_DIR/robustness.md, $OUT_DIR/robustness.png" >&2
