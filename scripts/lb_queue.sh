#!/usr/bin/env bash
# Run leaderboard parts on this CPU, J at a time (one torch thread each), storing each one that finishes.
#   scripts/lb_queue.sh [-j J] JOB ... [-- EXTRA ROSS FLAGS]
#   JOB = NAME:K/M          ross attack  --config configs/leaderboard/NAME.yaml         --part K/M
#       | NAME:K/M@EPS      the same at that budget alone (--eps EPS after the extra flags), in NAME-EPS-pK
#       | certify/NAME:K/M  ross certify --config configs/leaderboard/certify/NAME.yaml --part K/M --block-size 25
#       | convergence/NAME:K/M  ross attack --config configs/leaderboard/convergence/NAME.yaml --part K/M (--diagnose)
# Part K of NAME runs in $LB_RUNS/NAME-pK (default runs/lb; certify-NAME-pK, conv-NAME-pK), logs to its .log beside
# it and, once it has finished, is stored by scripts/store_run.sh in $LB_STORE/NAME-pK (default
# results/robustness/lb): nothing depends on a cache surviving the session, and a part stopped midway resumes
# from its cache when queued again. The source is frozen first (a copy in $LB_RUNS/.src-STAMP, first on
# PYTHONPATH), so editing src/ while the queue runs changes nothing in it. Exits non-zero when a part failed.
set -euo pipefail
cd "$(dirname "$0")/.."
J=2
if [ "${1:-}" = "-j" ]; then J="$2"; shift 2; fi
jobs=()
while [ $# -gt 0 ] && [ "$1" != "--" ]; do jobs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
[ ${#jobs[@]} -gt 0 ] || { sed -n 2,13p "$0" >&2; exit 2; }
export LB_RUNS="${LB_RUNS:-runs/lb}" LB_STORE="${LB_STORE:-results/robustness/lb}" ROSS="${ROSS:-.venv/bin/ross}"
for job in "${jobs[@]}"; do  # refuse a malformed queue before anything runs
  [[ "$job" =~ ^(certify/|convergence/)?[A-Za-z0-9._-]+:[0-9]+/[0-9]+$ || "$job" =~ ^[A-Za-z0-9._-]+:[0-9]+/[0-9]+@[0-9]+$ ]] ||
    { echo "lb_queue: job '$job' is not NAME:K/M, NAME:K/M@EPS, certify/NAME:K/M or convergence/NAME:K/M" >&2; exit 2; }
  name="${job%:*}"
  [ -f "configs/leaderboard/$name.yaml" ] || { echo "lb_queue: job '$job': no configs/leaderboard/$name.yaml" >&2; exit 2; }
done
export SNAP="$LB_RUNS/.src-$(date -u +%Y%m%d-%H%M%S)-$$"
mkdir -p "$SNAP" && cp -r src/ross_ood "$SNAP/"
export EXTRA="${*:-}"

one() {
  local job="$1" name="${1%:*}" part="${1##*:}" eps="" cmd base extra=()
  if [[ "$part" == *@* ]]; then eps="${part#*@}"; part="${part%@*}"; fi
  case "$name" in
    certify/*) cmd=certify; base="certify-${name#certify/}"; extra=(--block-size 25) ;;
    convergence/*) cmd=attack; base="conv-${name#convergence/}" ;;
    *) cmd=attack; base="$name${eps:+-$eps}" ;;
  esac
  local out="$LB_RUNS/$base-p${part%/*}" dest="$LB_STORE/$base-p${part%/*}"
  echo "$(date -u +%FT%TZ) start $job -> $out"
  # shellcheck disable=SC2086  # EXTRA is a list of flags
  if OMP_NUM_THREADS=1 PYTHONPATH="$SNAP${PYTHONPATH:+:$PYTHONPATH}" "$ROSS" "$cmd" \
      --config "configs/leaderboard/$name.yaml" --part "$part" --out "$out" "${extra[@]}" $EXTRA ${eps:+--eps "$eps"} >> "$out.log" 2>&1; then
    scripts/store_run.sh "$out" "$dest"
    echo "$(date -u +%FT%TZ) done $job"
  else
    echo "$(date -u +%FT%TZ) FAILED $job (its log: $out.log)"
    return 1
  fi
}
export -f one
failed=0
printf '%s\n' "${jobs[@]}" | xargs -P "$J" -I{} bash -c 'one "$1"' _ {} || failed=$?
exit "$failed"
