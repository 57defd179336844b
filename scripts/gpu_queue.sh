#!/usr/bin/env bash
# Leaderboard parts on a lent GPU machine, for a fixed number of seconds: scripts/lb_queue.sh with the
# device's settings, the data of scripts/data_root.sh (the pack of .gpu/data unpacked where ../shared is not
# there), and every part that finished packed into $OUT/store.tgz (its stored run, as scripts/store_run.sh
# writes it) with the logs; a part still running at the deadline is dropped.
#   scripts/gpu_queue.sh SECONDS -j J JOB ... [-- MORE ROSS FLAGS]   (JOB as in scripts/lb_queue.sh)
# Device, chunk and batch sizes are run-only settings (combine.RUN_ONLY_SETTINGS) and noise stays drawn on
# the CPU, so these parts combine with the CPU's parts of the same row. A part that fails before any part
# has finished stops the queue at once (its log's tail is printed): a broken set-up does not spend the
# device's minutes; a later failure (one row's missing file) stops only that part.
set -uo pipefail
cd "$(dirname "$0")/.."
secs="$1"; shift
qargs=(); while [ $# -gt 0 ] && [ "$1" != "--" ]; do qargs+=("$1"); shift; done
[ "${1:-}" = "--" ] && shift
out="${OUT:-runs/gpu-queue}"; mkdir -p "$out"
py="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
ROSS_DATA="$(PY="$py" scripts/data_root.sh /tmp/ross-data)"; export ROSS_DATA
mkdir -p /tmp/ross-bin && printf '#!/bin/sh\nexec %s -m ross_ood.cli "$@"\n' "$py" > /tmp/ross-bin/ross && chmod +x /tmp/ross-bin/ross
work="$(mktemp -d)"
export ROSS=/tmp/ross-bin/ross LB_RUNS="$work/runs" LB_STORE="$work/store" PYTHONUNBUFFERED=1
mkdir -p "$LB_RUNS" "$LB_STORE"
dev="$("$py" -c 'import sys, torch; c = torch.cuda.is_available()
print("torch", torch.__version__, torch.cuda.get_device_name(0) if c else "cpu", file=sys.stderr); print("cuda" if c else "cpu")')"
[ "$dev" = cuda ] && extra=(--device cuda --chunk-size 4096 --attack-batch 100) || extra=(--device cpu)
setsid scripts/lb_queue.sh "${qargs[@]}" -- "${extra[@]}" "$@" > "$out/queue.log" 2>&1 &
qpid=$!
failed_logs() { grep FAILED "$out/queue.log" | sed 's/.*its log: \(.*\))/\1/'; }
t0=$SECONDS
while kill -0 "$qpid" 2>/dev/null && [ $((SECONDS - t0)) -lt "$secs" ]; do
  if grep -q FAILED "$out/queue.log" && ! grep -q " done " "$out/queue.log"; then
    grep FAILED "$out/queue.log"; tail -n 30 "$(failed_logs | head -n 1)"
    break
  fi
  sleep 5
done
kill -- -"$qpid" 2>/dev/null; sleep 2
cat "$out/queue.log"
for f in $(failed_logs); do echo "== $f"; tail -n 3 "$f"; done
cp "$LB_RUNS"/*.log "$LB_STORE"/ 2>/dev/null
tar -czf "$out/store.tgz" -C "$LB_STORE" .
echo "packed $(ls "$LB_STORE" | grep -vc '\.log$') finished parts into $out/store.tgz in $((SECONDS - t0)) s"
