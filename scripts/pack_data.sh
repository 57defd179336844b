#!/usr/bin/env bash
# Packs the offline data root ($ROSS_DATA, else ../shared/data) into .gpu/data as xz files, small
# enough to travel to a machine that cannot reach it (the JPEG archives shrink about 3x: their
# per-member JPEG headers repeat). scripts/gpu_run.sh and scripts/gpu_queue.sh unpack them bit for bit (sha256
# checked by the data code and the zoo as usual). Usage: scripts/pack_data.sh [dest [FILE ...]]: the FILEs
# (paths under the data root) alone, else everything; the device takes 64 MiB with the repository, so the
# leaderboard's attack parts on cifar10 packed only cifar10-png/test.{zip,json}, cifar100/test.{zip,json},
# tinyimagenet32/val.{zip,json} and weights/resnet20-12fca82f.th (48 MB).
set -euo pipefail
cd "$(dirname "$0")/.."
src="${ROSS_DATA:-$(cd .. && pwd)/shared/data}"
dest="${1:-.gpu/data}"
[ $# -gt 0 ] && shift
mkdir -p "$dest"
{ if [ $# -gt 0 ]; then printf '%s\n' "$@"; else (cd "$src" && find . -type f ! -name '*.md' | sort); fi; } | while read -r f; do
  [ -f "$src/$f" ] || { echo "pack_data: no $src/$f" >&2; exit 2; }
  mkdir -p "$dest/$(dirname "$f")"
  [ -f "$dest/$f.xz" ] || xz -T2 -6 -c "$src/$f" > "$dest/$f.xz"
done
du -sh "$dest"
