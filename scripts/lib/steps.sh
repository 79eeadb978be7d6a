# Steps under one deadline, for the prepared GPU scripts (sourced, not run).
#
#   steps_begin TAG BUDGET_S STEPS_TSV LOG     # the deadline is now + BUDGET_S
#   run_step NAME MAX_S FUNCTION [ARGS...]     # MAX_S 0: all that is left minus STEP_RESERVE_S
#
# run_step runs the exported FUNCTION (with ARGS) under `timeout -s INT` (INT first, so `dvc repro` and
# the stage it runs stop cleanly and DVC keeps every finished stage; KILL 15 s later),
# capped by what is left before the deadline; a step with under 10 s left is skipped. Its
# output goes to LOG, one status line to stdout, and "NAME<TAB>status<TAB>seconds<TAB>note"
# to STEPS_TSV (status: ok | timeout | failed | skipped). Returns 0 only for ok.

steps_begin() {
  STEPS_TAG=$1 STEPS_DEADLINE=$(( $(date +%s) + $2 )) STEPS_TSV=$3 STEPS_LOG=$4
  STEP_RESERVE_S=${STEP_RESERVE_S:-0}
}

steps_left() { echo $(( STEPS_DEADLINE - $(date +%s) )); }

run_step() {
  local name=$1 max=$2 left
  shift 2
  left=$(steps_left)
  if (( max == 0 )); then max=$(( left - STEP_RESERVE_S )); fi
  if (( left < 10 || max < 10 )); then
    printf '%s\tskipped\t0\tno time left\n' "$name" >> "$STEPS_TSV"
    echo "[$STEPS_TAG] $name: skipped (no time left)"
    return 1
  fi
  (( max > left )) && max=$left
  echo "[$STEPS_TAG] $name (limit ${max}s) ..."
  printf '\n===== %s (limit %ss) %s\n' "$name" "$max" "$(date -u +%FT%TZ)" >> "$STEPS_LOG"
  local t0 rc status note=""
  t0=$(date +%s)
  timeout -s INT --kill-after=15 "$max" bash -c '"$@"' bash "$@" < /dev/null >> "$STEPS_LOG" 2>&1
  rc=$?
  case $rc in
    0) status=ok ;;
    124|137) status=timeout; note="stopped at ${max}s" ;;
    *) status=failed; note="exit $rc; see the log" ;;
  esac
  printf '%s\t%s\t%s\t%s\n' "$name" "$status" "$(( $(date +%s) - t0 ))" "$note" >> "$STEPS_TSV"
  echo "[$STEPS_TAG] $name: $status ($(( $(date +%s) - t0 ))s)"
  [[ $status == ok ]]
}
