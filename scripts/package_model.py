"""Package a ross train run for the zoo: OUT/model.pt's state dict re-saved as safetensors under
src/ross_ood/weights/FILE (float32, or float16 with --fp16 for models over 2 MB at float32), its
training record copied to results/train/NAME.model.json, and the sha256 printed for the ZOO entry.

    python scripts/package_model.py RUN_DIR NAME FILE.safetensors [--fp16]
"""
from __future__ import annotations

import argparse
import hashlib
import json
import shutil
from pathlib import Path

import torch
from safetensors.torch import save_file

ROOT = Path(__file__).resolve().parents[1]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("run")
    ap.add_argument("name")
    ap.add_argument("file")
    ap.add_argument("--fp16", action="store_true")
    a = ap.parse_args()
    run = Path(a.run)
    record = json.loads((run / "model.json").read_text())
    sd = torch.load(run / "model.pt", map_location="cpu", weights_only=True)["state_dict"]
    dtype = torch.float16 if a.fp16 else None
    sd = {k: (v.to(dtype) if dtype is not None and v.is_floating_point() else v).contiguous() for k, v in sd.items()}
    dest = ROOT / "src" / "ross_ood" / "weights" / a.file
    save_file(sd, str(dest))
    sha = hashlib.sha256(dest.read_bytes()).hexdigest()
    shutil.copy(run / "model.json", ROOT / "results" / "train" / f"{a.name}.model.json")
    size = dest.stat().st_size
    print(json.dumps({"name": a.name, "file": a.file, "sha256": sha, "bytes": size,
                      "model_pt_sha256": record["sha256"], "test_acc": record["test_acc"],
                      "test_acc_noisy": record["test_acc_noisy"], "noise_sigma": record["noise_sigma"],
                      "wall_s": record["wall_s"], "command": record["command"]}, indent=1))
    if size > 2_000_000:
        raise SystemExit(f"{dest} is {size} bytes: over the 2 MB a committed model may take (try --fp16)")


if __name__ == "__main__":
    main()
