#!/usr/bin/env bash
# Issue 44's CPU training queue: the 8/255 and 4/255 fast-AT arms on the lossless training set, one thread each,
# nice 19, resumable (re-run the script: a finished arm is skipped, a killed one resumes at its last epoch).
# Usage: scripts/train44.sh OUT_BASE   (logs in OUT_BASE/ARM.log)
set -uo pipefail
cd "$(dirname "$0")/.."
base=${1:?OUT_BASE}
mkdir -p "$base"
for arm in fast8 fast4; do
  out="$base/$arm"
  [ -f "$out/model.json" ] && continue
  resume=""; [ -f "$out/state.pt" ] && resume="--resume"
  OMP_NUM_THREADS=1 nice -n 19 .venv/bin/ross train --config "configs/train/c10png-r20-s012-e52-c2-$arm-oe.yaml" \
    --out "$out" --device cpu --no-progress $resume >> "$base/$arm.log" 2>&1 || exit 1
done
