#!/usr/bin/env bash
# Prints the data root the GPU scripts (gpu_run.sh, gpu_queue.sh) read: $ROSS_DATA, else ../shared/data, else
# (a machine that cannot reach the data) the xz pack of scripts/pack_data.sh in .gpu/data, unpacked bit for bit
# into DEST first (files already there are kept).   scripts/data_root.sh DEST
set -euo pipefail
cd "$(dirname "$0")/.."
dest="$1"
if [ -n "${ROSS_DATA:-}" ]; then echo "$ROSS_DATA"; exit 0; fi
if [ -d ../shared/data ] || [ ! -d .gpu/data ]; then echo "$(cd .. && pwd)/shared/data"; exit 0; fi
py="${PY:-python3}"
(cd .gpu/data && find . -name '*.xz') | while read -r f; do
  mkdir -p "$dest/$(dirname "$f")"
  [ -f "$dest/${f%.xz}" ] || "$py" -c "import lzma,shutil,sys; shutil.copyfileobj(lzma.open(sys.argv[1]), open(sys.argv[2],'wb'))" \
    ".gpu/data/$f" "$dest/${f%.xz}"
done
echo "unpacked .gpu/data into $dest" >&2
cd "$dest" && pwd
