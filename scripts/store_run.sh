#!/usr/bin/env bash
# Store a finished run for the docs: its config, results and per-input scores (gzip'd when large),
# never its cache.   scripts/store_run.sh RUN_DIR DEST_DIR
set -euo pipefail
run="$1"; dest="$2"
[ -f "$run/results.json" ] || { echo "$run holds no results.json (not finished?)" >&2; exit 2; }
mkdir -p "$dest"
for f in config.yaml results.json results.md results.csv diagnosis.json diagnosis.md objective-curves.png; do
  [ -f "$run/$f" ] && cp "$run/$f" "$dest/$f"
done
# per-input scores (eval, attack) and per-input certified bounds (certify): what compare / combine read
for f in input_scores.json certified_bounds.json; do
  [ -f "$run/$f" ] || continue
  if [ "$(stat -c %s "$run/$f")" -gt 1000000 ]; then
    gzip -9 -n -c "$run/$f" > "$dest/$f.gz"; rm -f "$dest/$f"
  else
    cp "$run/$f" "$dest/$f"; rm -f "$dest/$f.gz"
  fi
done
echo "stored $run in $dest ($(du -sh "$dest" | cut -f1))"
