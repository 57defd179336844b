#!/usr/bin/env bash
# The prepared GPU run (issues 18 and 19): one script, stages run in the order given.
#
#   scripts/gpu_run.sh [--tiny] [--out DIR] STAGE...
#
# Stages:
#   train   the training recipes of configs/train/*.yaml (RECIPES, space-separated names, picks
#           some), one process each, all at once on the one device; logs and model files in
#           OUT/train/NAME/ (model.json: sha256, command, accuracies, wall time).
#   check   CPU-vs-GPU agreement of scores on the same noise, and eval / attack / certify timings
#           on the GPU against the CPU (OUT/check/).
#   attack  the rows of the real-benchmark leaderboard (ATTACK_CONFIGS, default configs/leaderboard/*.yaml)
#           at LIMIT images per set (default 500, their own) on the GPU (OUT/attack/NAME/).
#   certify the leaderboard's certificates (CERTIFY_CONFIGS, default configs/leaderboard/certify/*.yaml)
#           at LIMIT images per set, n = 2,000 (OUT/certify/NAME/).
#   imagenet the ImageNet attacks (configs/imagenet/adaptive-*.yaml, paper-transfer.yaml) at LIMIT images per set
#           (default 500) and its certificate at CERT_LIMIT (default 500), with the DEFAULT attack budget
#           (OUT/imagenet/NAME/). Needs the packed archives (scripts/pack_imagenet.py) in $ROSS_EXTRA_DATA.
# Data: scripts/data_root.sh ($ROSS_DATA, else ../shared/data, else the pack in .gpu/data unpacked into OUT/data).
# --tiny: a few images and one epoch, so that the whole script runs on a CPU as a test.
# At the end everything but caches and data is packed into OUT/gpu-results.tar.gz.
set -euo pipefail
cd "$(dirname "$0")/.."
TINY=0
OUTDIR="${OUT:-runs/gpu}"
while [ $# -gt 0 ]; do
  case "$1" in
    --tiny) TINY=1; shift ;;
    --out) OUTDIR="$2"; shift 2 ;;
    *) break ;;
  esac
done
[ $# -gt 0 ] || { echo "usage: $0 [--tiny] [--out DIR] train|check|attack|certify|imagenet ..." >&2; exit 2; }
mkdir -p "$OUTDIR"
OUTDIR="$(cd "$OUTDIR" && pwd)"
PY="${PY:-$( [ -x .venv/bin/python ] && echo .venv/bin/python || echo python3)}"
export PYTHONPATH="$PWD/src${PYTHONPATH:+:$PYTHONPATH}" PYTHONUNBUFFERED=1
ross() { "$PY" -m ross_ood.cli "$@"; }
log() { echo "[$(date +%H:%M:%S)] $*" | tee -a "$OUTDIR/gpu_run.log"; }

ROSS_DATA="$(PY="$PY" scripts/data_root.sh "$OUTDIR/data")"; export ROSS_DATA
log "data: $ROSS_DATA"
"$PY" - <<'PY' | tee -a "$OUTDIR/gpu_run.log"
import torch
print("torch", torch.__version__, "cuda", torch.cuda.is_available(),
      torch.cuda.get_device_name(0) if torch.cuda.is_available() else "cpu")
PY

stage_train() {
  local recipes="${RECIPES:-$(cd configs/train && ls *.yaml | sed 's/\.yaml$//' | tr '\n' ' ')}"
  local extra=()
  [ "$TINY" = 1 ] && extra=(--epochs 1 --limit 64 --val-limit 20 --test-limit 40 --batch-size 32)
  mkdir -p "$OUTDIR/train"
  local pids=()
  for r in $recipes; do
    log "train $r"
    OMP_NUM_THREADS=2 timeout "${TRAIN_TIMEOUT:-420}" "$PY" -m ross_ood.cli train --config "configs/train/$r.yaml" --out "$OUTDIR/train/$r" --no-progress \
      --data-root "$ROSS_DATA" "${extra[@]}" > "$OUTDIR/train/$r.log" 2>&1 &
    pids+=($!)
  done
  local fail=0
  for p in "${pids[@]}"; do wait "$p" || fail=1; done
  for r in $recipes; do
    "$PY" - "$OUTDIR/train/$r" "$r" <<'PY' | tee -a "$OUTDIR/gpu_run.log" || true
import json, pathlib, sys
d, name = pathlib.Path(sys.argv[1]), sys.argv[2]
if (d / "model.json").is_file():
    m = json.loads((d / "model.json").read_text())
    print(f"{name}: {m['test_images']} test images, {100*m['test_acc']:.2f}% clean, "
          f"{100*m['test_acc_noisy']:.2f}% under sigma {m['noise_sigma']}, {m['wall_s']:.0f} s, sha256 {m['sha256'][:16]}")
elif (d / "state.pt").is_file():  # stopped by the timeout: keep its per-epoch history
    import torch
    h = torch.load(d / "state.pt", map_location="cpu", weights_only=True)["history"]
    (d / "history.json").write_text(json.dumps(h, indent=1))
    print(f"{name}: NOT FINISHED, {len(h)} epochs in {h[-1]['wall_s']:.0f} s, last val acc under noise "
          f"{100*h[-1]['val_acc_noisy']:.2f}%")
else:
    print(f"{name}: no epoch finished")
PY
  done
  return $fail
}

DEV="$("$PY" -c 'import torch; print("cuda" if torch.cuda.is_available() else "cpu")')"

stage_check() {
  # the same images, detectors and noise (drawn on the CPU) scored on the CPU and on the device:
  # scores must agree to float rounding; then eval / attack / certify wall times on both
  local n=$([ "$TINY" = 1 ] && echo 12 || echo 200)
  local common=(--data-root "$ROSS_DATA" --model resnet20-noise012 --sigma 0.12 --noise-space pixel
                -N "$([ "$TINY" = 1 ] && echo 5 || echo 25)"
                --detectors msp,median-msp,ross-msp --limit "$n" --no-progress --noise-device cpu --bootstrap 0)
  mkdir -p "$OUTDIR/check"
  for d in cpu "$DEV"; do
    local t0=$SECONDS
    OMP_NUM_THREADS=2 ross eval "${common[@]}" --device "$d" --out "$OUTDIR/check/eval-$d" > "$OUTDIR/check/eval-$d.log" 2>&1
    log "check: eval on $d, $n images per set: $((SECONDS - t0)) s"
  done
  "$PY" - "$OUTDIR/check/eval-cpu/scores.npz" "$OUTDIR/check/eval-$DEV/scores.npz" <<'PY' | tee -a "$OUTDIR/gpu_run.log"
import sys
import numpy as np
a, b = np.load(sys.argv[1]), np.load(sys.argv[2])
worst = max(float(np.max(np.abs(a[k] - b[k]))) for k in a.files)
print(f"check: CPU vs device scores, {len(a.files)} arrays, largest absolute difference {worst:.3g}")
PY
  local steps=$([ "$TINY" = 1 ] && echo 2 || echo 20)
  for d in cpu "$DEV"; do
    local t0=$SECONDS
    OMP_NUM_THREADS=2 ross attack "${common[@]}" --limit "$([ "$TINY" = 1 ] && echo 4 || echo 24)" --device "$d" \
      --eps 2 --objective both --adaptive-steps "$steps" --eotpgd-steps "$steps" --transfer-steps "$steps" \
      --restarts "$([ "$TINY" = 1 ] && echo 1 || echo 2)" --square-queries "$([ "$TINY" = 1 ] && echo 20 || echo 500)" \
      --detectors median-msp --out "$OUTDIR/check/attack-$d" > "$OUTDIR/check/attack-$d.log" 2>&1
    log "check: attack on $d: $((SECONDS - t0)) s"
    t0=$SECONDS
    OMP_NUM_THREADS=2 ross certify --data-root "$ROSS_DATA" --model resnet20-noise012 --sigma 0.12 \
      --detectors median-msp --limit "$([ "$TINY" = 1 ] && echo 6 || echo 50)" -N "$([ "$TINY" = 1 ] && echo 50 || echo 1000)" \
      --no-progress --device "$d" --out "$OUTDIR/check/certify-$d" > "$OUTDIR/check/certify-$d.log" 2>&1
    log "check: certify on $d: $((SECONDS - t0)) s"
  done
}

stage_attack() {
  # the leaderboard's and the README's robustness configs at LIMIT images per set on the device
  local limit=${LIMIT:-$([ "$TINY" = 1 ] && echo 4 || echo 500)}
  local configs="${ATTACK_CONFIGS:-$(ls configs/leaderboard/*.yaml | tr '\n' ' ')}"
  local extra=()
  [ "$TINY" = 1 ] && extra=(--adaptive-steps 2 --eotpgd-steps 2 --transfer-steps 2 --restarts 1 -N 5 --bootstrap 50
                            --stats-limit 200 --stats-cache "$OUTDIR/stats-cache")
  mkdir -p "$OUTDIR/attack"
  for c in $configs; do
    local name; name="$(basename "$(basename "$c" .yaml)" .config)"
    local t0=$SECONDS
    OMP_NUM_THREADS=4 ross attack --config "$c" --data-root "$ROSS_DATA" --limit "$limit" --device "$DEV" \
      --no-progress --out "$OUTDIR/attack/$name" "${extra[@]}" > "$OUTDIR/attack/$name.log" 2>&1 \
      && log "attack $name: $limit images per set, $((SECONDS - t0)) s" || { log "attack $name FAILED"; return 1; }
  done
}

stage_certify() {
  local limit=${LIMIT:-$([ "$TINY" = 1 ] && echo 4 || echo 500)}
  local configs="${CERTIFY_CONFIGS:-$(ls configs/leaderboard/certify/*.yaml | tr '\n' ' ')}"
  local extra=()
  [ "$TINY" = 1 ] && extra=(-N 40 --bootstrap 50 --stats-limit 200 --stats-cache "$OUTDIR/stats-cache")
  mkdir -p "$OUTDIR/certify"
  for c in $configs; do
    local name; name="$(basename "$c" .yaml)"
    local t0=$SECONDS
    OMP_NUM_THREADS=4 ross certify --config "$c" --data-root "$ROSS_DATA" --limit "$limit" --device "$DEV" \
      --no-progress --out "$OUTDIR/certify/$name" "${extra[@]}" > "$OUTDIR/certify/$name.log" 2>&1 \
      && log "certify $name: $limit images per set, $((SECONDS - t0)) s" || { log "certify $name FAILED"; return 1; }
  done
}

stage_imagenet() {
  local limit=${LIMIT:-$([ "$TINY" = 1 ] && echo 2 || echo 500)}
  local climit=${CERT_LIMIT:-$([ "$TINY" = 1 ] && echo 2 || echo 500)}
  local extra=() cextra=()
  [ "$TINY" = 1 ] && extra=(--adaptive-steps 2 --eotpgd-steps 2 --transfer-steps 2 --restarts 1 -N 3 --bootstrap 50
                            --square-queries 4) && cextra=(-N 20 --bootstrap 50)
  mkdir -p "$OUTDIR/imagenet"
  for c in configs/imagenet/paper-transfer.yaml configs/imagenet/adaptive-plain.yaml configs/imagenet/adaptive-smoothed.yaml; do
    local name; name="$(basename "$c" .yaml)"
    local t0=$SECONDS
    OMP_NUM_THREADS=4 ross attack --config "$c" --data-root "$ROSS_DATA" --limit "$limit" --device "$DEV" --budget default \
      --no-progress --out "$OUTDIR/imagenet/$name" "${extra[@]}" > "$OUTDIR/imagenet/$name.log" 2>&1 \
      && log "imagenet $name: $limit images per set, $((SECONDS - t0)) s" || { log "imagenet $name FAILED"; return 1; }
  done
  local t0=$SECONDS
  OMP_NUM_THREADS=4 ross certify --config configs/imagenet/certify.yaml --data-root "$ROSS_DATA" --limit "$climit" \
    --device "$DEV" --no-progress --out "$OUTDIR/imagenet/certify" "${cextra[@]}" > "$OUTDIR/imagenet/certify.log" 2>&1 \
    && log "imagenet certify: $climit images per set, $((SECONDS - t0)) s" || { log "imagenet certify FAILED"; return 1; }
}

status=0
for stage in "$@"; do
  case "$stage" in
    train) stage_train || status=1 ;;
    check) stage_check || status=1 ;;
    attack) stage_attack || status=1 ;;
    certify) stage_certify || status=1 ;;
    imagenet) stage_imagenet || status=1 ;;
    *) echo "unknown stage $stage" >&2; exit 2 ;;
  esac
done
tmp="$(mktemp)"
tar -czf "$tmp" -C "$OUTDIR" --exclude=./cache --exclude='*/cache' --exclude=./data --exclude=./stats-cache --exclude=gpu-results.tar.gz \
  --exclude=state.pt --exclude='*.npz' .
mv "$tmp" "$OUTDIR/gpu-results.tar.gz"
log "packed $OUTDIR/gpu-results.tar.gz ($(du -h "$OUTDIR/gpu-results.tar.gz" | cut -f1)); status $status"
exit $status
