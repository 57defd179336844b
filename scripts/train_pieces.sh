#!/usr/bin/env bash
# A long training schedule in pieces (issue 54): each call trains the next EPOCHS epochs of
# configs/train/NAME.yaml into runs/train/NAME (state.pt after every epoch; a killed piece loses at
# most the epoch it was in), then records every finished epoch and piece in
# results/train/NAME.pieces.json (commit it); the piece that reaches the schedule's end writes
# model.pt and model.json (copied to results/train/NAME.model.json).
#   nice -n 19 scripts/train_pieces.sh NAME EPOCHS > runs/train-NAME.log 2>&1 &
# One thread unless OMP_NUM_THREADS says otherwise; benchmarks/bench_train.py gives the cost per epoch.
# TRAIN_ARGS: more ross train flags (the same on every piece); RUNS / RESULTS: other folders (tests).
set -euo pipefail
cd "$(dirname "$0")/.."
[ $# -eq 2 ] || { echo "usage: $0 NAME EPOCHS_PER_PIECE" >&2; exit 2; }
name="$1"; k="$2"
cfg="configs/train/$name.yaml"
[ -f "$cfg" ] || { echo "no recipe $cfg" >&2; exit 2; }
out="${RUNS:-runs/train}/$name"
res="${RESULTS:-results/train}"
PY="${PY:-.venv/bin/python}"
export OMP_NUM_THREADS="${OMP_NUM_THREADS:-1}"
if [ -f "$out/model.json" ]; then echo "$out: the schedule is finished"; exit 0; fi
done_epochs=0
if [ -f "$out/state.pt" ]; then
  done_epochs="$("$PY" -c 'import sys, torch; print(torch.load(sys.argv[1], map_location="cpu", weights_only=True)["epoch"])' "$out/state.pt")"
fi
resume=(); [ -f "$out/state.pt" ] && resume=(--resume)
echo "[$(date +%H:%M:%S)] $name: epochs $((done_epochs + 1))-$((done_epochs + k))"
"$PY" -m ross_ood.cli train --config "$cfg" --out "$out" --no-progress --stop-after "$((done_epochs + k))" "${resume[@]}" ${TRAIN_ARGS:-}
mkdir -p "$res"
"$PY" - "$out" "$name" "$res" <<'PY'
import json, pathlib, sys
import torch
out, name, res = pathlib.Path(sys.argv[1]), sys.argv[2], pathlib.Path(sys.argv[3])
if (out / "model.json").is_file():
    doc = json.loads((out / "model.json").read_text())
    (res / f"{name}.model.json").write_text(json.dumps(doc, indent=1))
    hist, pieces, settings = doc["history"], doc["pieces"], doc["settings"]
else:
    s = torch.load(out / "state.pt", map_location="cpu", weights_only=True)
    hist, pieces, settings = s["history"], s["pieces"], s["recipe"]
rec = {"recipe": f"configs/train/{name}.yaml", "settings": settings, "epochs_done": len(hist), "pieces": pieces,
       "history": hist}
(res / f"{name}.pieces.json").write_text(json.dumps(rec, indent=1))
last = hist[-1]
print(f"{name}: {len(hist)} epochs in {len(pieces)} piece(s), {sum(p['wall_s'] for p in pieces):.0f} s; epoch {last['epoch']}: "
      f"val {100 * last['val_acc']:.2f}%, under noise {100 * last['val_acc_noisy']:.2f}%"
      + (f", PGD-10 {100 * last['val_pgd_acc']:.2f}%" if "val_pgd_acc" in last else ""))
PY
