"""scripts/gpu_run.sh, the prepared GPU run, at its tiny size on the CPU: every stage runs,
writes what it says, and packs the results."""
import os
import subprocess
import sys
import tarfile
from pathlib import Path

import pytest

from .conftest import DATA_ROOT, need_data

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_gpu_run_script_tiny_on_cpu(tmp_path):
    need_data("cifar10", "train.zip")
    env = {**os.environ, "ROSS_DATA": str(DATA_ROOT), "PY": sys.executable, "RECIPES": "r20-s012",
           "ATTACK_CONFIGS": "configs/leaderboard/std-ross-msp.yaml configs/leaderboard/e52-median-react.yaml",
           "CERTIFY_CONFIGS": "configs/leaderboard/certify/e36s025.yaml", "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu"
    r = subprocess.run([str(ROOT / "scripts" / "gpu_run.sh"), "--tiny", "--out", str(out), "train", "check", "attack", "certify"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (out / "gpu_run.log").read_text()
    assert "r20-s012: 40 test images" in log
    assert "check: CPU vs device scores, " in log and "largest absolute difference 0" in log  # CPU vs CPU here
    assert "attack std-ross-msp: 4 images per set" in log and "attack e52-median-react: 4 images per set" in log
    assert "certify e36s025: 4 images per set" in log
    with tarfile.open(out / "gpu-results.tar.gz") as t:
        names = t.getnames()
    assert "./train/r20-s012/model.json" in names and "./attack/std-ross-msp/results.json" in names
    assert "./attack/e52-median-react/results.json" in names and "./certify/e36s025/results.json" in names
    assert not any("/cache" in n or n.endswith("state.pt") for n in names)
