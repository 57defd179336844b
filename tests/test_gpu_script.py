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


def test_gpu_train_stage_runs_the_wide_resnet_recipe_tiny_on_cpu(tmp_path):
    """The 8/255 schedule on a WRN-28-10 (issue 54), from random weights, with attacked outliers and the
    catastrophic-overfitting guard: one tiny epoch, a model.json that says what ran."""
    need_data("cifar10", "train.zip")
    import json
    env = {**os.environ, "ROSS_DATA": str(DATA_ROOT), "PY": sys.executable, "OMP_NUM_THREADS": "1",
           "RECIPES": "c10png-wrn2810-s012-fast8-oe"}
    out = tmp_path / "gpu"
    r = subprocess.run([str(ROOT / "scripts" / "gpu_run.sh"), "--tiny", "--out", str(out), "train"],
                       cwd=ROOT, env=env, capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "c10png-wrn2810-s012-fast8-oe: 40 test images" in (out / "gpu_run.log").read_text()
    doc = json.loads((out / "train" / "c10png-wrn2810-s012-fast8-oe" / "model.json").read_text())
    assert doc["arch"] == "wrn-28-10" and doc["settings"]["scratch"] and doc["settings"]["adv_eps"] == "8"
    assert doc["outliers"] and "val_pgd_acc" in doc["history"][0] and doc["kept_epoch"] == 1


def _queue(tmp_path, data, *args):
    env = {**os.environ, "ROSS_DATA": str(data), "PY": sys.executable, "OUT": str(tmp_path / "out"), "OMP_NUM_THREADS": "1"}
    return subprocess.run([str(ROOT / "scripts" / "gpu_queue.sh"), *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=600)


def test_gpu_queue_keeps_finished_parts_and_stops_a_broken_setup(tmp_path):
    """scripts/gpu_queue.sh on the CPU: a finished part comes back in store.tgz as lb_queue stores it (config,
    results, per-input scores: what ross combine reads), run with the CPU's noise; a queue whose first part
    fails (no data) stops at once and says why."""
    need_data("cifar10-png", "test.zip")
    r = _queue(tmp_path, DATA_ROOT, "300", "-j", "1", "std-ross-msp:3/5@2", "--", "--limit", "10", "--adaptive-steps", "1",
               "--eotpgd-steps", "1", "--transfer-steps", "1", "--restarts", "1", "-N", "3", "--bootstrap", "20")
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert "packed 1 finished parts" in r.stdout
    with tarfile.open(tmp_path / "out" / "store.tgz") as t:
        t.extractall(tmp_path / "st", filter="data")
    part = tmp_path / "st" / "std-ross-msp-2-p3"
    assert (part / "results.json").is_file() and (part / "input_scores.npz").is_file()
    cfg = (part / "config.yaml").read_text()
    assert "part: 3/5" in cfg and "noise_device: cpu" in cfg and "- '2'" in cfg
    bad = _queue(tmp_path, tmp_path / "no-data", "300", "-j", "1", "std-ross-msp:3/5@2", "e52-median-energy:3/5@2")
    assert "packed 0 finished parts" in bad.stdout and "not found" in bad.stdout


def test_gpu_run_imagenet_stage_tiny_on_cpu(tmp_path):
    """The ImageNet stage on tiny generated archives (the zoo's MobileNetV2 at 224 px): every
    attack config and the certificate run and are packed."""
    from .test_imagenet import pack_tiny
    pack_tiny(tmp_path / "extra", n_id=304)
    env = {**os.environ, "ROSS_DATA": str(tmp_path / "empty"), "ROSS_EXTRA_DATA": str(tmp_path / "extra"),
           "PY": sys.executable, "OMP_NUM_THREADS": "1"}
    out = tmp_path / "gpu"
    r = subprocess.run([str(ROOT / "scripts" / "gpu_run.sh"), "--tiny", "--out", str(out), "imagenet"], cwd=ROOT, env=env,
                       capture_output=True, text=True, timeout=900)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    log = (out / "gpu_run.log").read_text()
    for name in ("paper-transfer", "adaptive-plain", "adaptive-smoothed"):
        assert f"imagenet {name}: 2 images per set" in log
    assert "imagenet certify: 2 images per set" in log
    with tarfile.open(out / "gpu-results.tar.gz") as t:
        names = t.getnames()
    assert "./imagenet/adaptive-smoothed/results.json" in names and "./imagenet/certify/results.json" in names
