#!/usr/bin/env bash
# Store a finished run for the docs: its config, results and per-input scores (gzip'd when large),
# never its cache.   scripts/store_run.sh RUN_DIR DEST_DIR
set -euo pipefail
run="$1"; dest="$2"
[ -f "$run/results.json" ] || { echo "$run holds no results.json (not finished?)" >&2; exit 2; }
mkdir -p "$dest"
for f in config.yaml results.json results.md results.csv diagnosis.json diagnosis.md; do
  [ -f "$run/$f" ] && cp "$run/$f" "$dest/$f"
done
if [ -f "$run/input_scores.json" ]; then
  if [ "$(stat -c %s "$run/input_scores.json")" -gt 1000000 ]; then
    gzip -9 -n -c "$run/input_scores.json" > "$dest/input_scores.json.gz"; rm -f "$dest/input_scores.json"
  else
    cp "$run/input_scores.json" "$dest/input_scores.json"
  fi
fi
echo "stored $run in $dest ($(du -sh "$dest" | cut -f1))"
