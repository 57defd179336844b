#!/usr/bin/env bash
# The ImageNet runs behind results/imagenet.md, in resumable parts on one CPU thread each: every
# part that finishes is stored at once in results/imagenet/parts/NAME-pK (a killed part resumes from
# its cache in runs/imagenet/ when started again; a stored part is skipped); scripts/imagenet_tables.sh
# joins the stored parts of each NAME into results/imagenet/runs/NAME (ross combine).
#   scripts/imagenet_runs.sh NAME K[,K...]     NAME: paper-transfer | adaptive-plain | adaptive-smoothed | certify
# e.g. nice -n 19 scripts/imagenet_runs.sh certify 1,2,3,4 > runs/imagenet-certify.log 2>&1 &
set -euo pipefail
cd "$(dirname "$0")/.."
name="$1"; parts="$2"
cfg="configs/imagenet/$name.yaml"
[ -f "$cfg" ] || { echo "no config $cfg" >&2; exit 2; }
cmd=attack; [ "$name" = certify ] && cmd=certify
m="$(grep -o -- '--part K/[0-9]*' "$cfg" | head -1 | cut -d/ -f2)"
[ -n "$m" ] || { echo "$cfg names no --part K/M" >&2; exit 2; }
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
for k in ${parts//,/ }; do
  dest="results/imagenet/parts/$name-p$k"
  if [ -f "$dest/results.json" ]; then echo "$dest stored: skipped"; continue; fi
  t0=$SECONDS
  echo "[$(date +%H:%M:%S)] $name part $k/$m"
  .venv/bin/ross "$cmd" --config "$cfg" --part "$k/$m" --no-progress --out "runs/imagenet/$name-p$k"
  scripts/store_run.sh "runs/imagenet/$name-p$k" "$dest"
  echo "[$(date +%H:%M:%S)] $name part $k/$m: $((SECONDS - t0)) s"
done
