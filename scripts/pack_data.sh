#!/usr/bin/env bash
# Packs the offline data root ($ROSS_DATA, else ../shared/data) into .gpu/data as xz files, small
# enough to travel to a machine that cannot reach it (the JPEG archives shrink about 3x: their
# per-member JPEG headers repeat). scripts/gpu_run.sh unpacks them bit for bit (sha256 checked by
# the data code and the zoo as usual). Usage: scripts/pack_data.sh [dest]
set -euo pipefail
cd "$(dirname "$0")/.."
src="${ROSS_DATA:-$(cd .. && pwd)/shared/data}"
dest="${1:-.gpu/data}"
mkdir -p "$dest"
(cd "$src" && find . -type f ! -name '*.md' | sort) | while read -r f; do
  mkdir -p "$dest/$(dirname "$f")"
  [ -f "$dest/$f.xz" ] || xz -T2 -6 -c "$src/$f" > "$dest/$f.xz"
done
du -sh "$dest"
