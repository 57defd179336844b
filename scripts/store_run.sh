#!/usr/bin/env bash
# Store a finished run in results/: its config, results and per-input scores / certified bounds
# (compact npz, as the run wrote them), never its cache.   scripts/store_run.sh RUN_DIR DEST_DIR
set -euo pipefail
run="$1"; dest="$2"
[ -f "$run/results.json" ] || { echo "$run holds no results.json (not finished?)" >&2; exit 2; }
mkdir -p "$dest"
for f in config.yaml results.json results.md results.csv diagnosis.json diagnosis.md objective-curves.png; do
  [ -f "$run/$f" ] && cp "$run/$f" "$dest/$f"
done
# per-input scores (eval, attack) and per-input certified bounds (certify): what compare / combine read
for f in input_scores.npz certified_bounds.npz; do
  [ -f "$run/$f" ] && cp "$run/$f" "$dest/$f"
done
echo "stored $run in $dest ($(du -sh "$dest" | cut -f1))"
