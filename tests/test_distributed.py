"""Sharding: disjoint blocks that cover every input once, and a 2-process torchrun (gloo,
CPU) `ross eval` whose results equal a 1-process run's."""
import json
import os
import subprocess
import sys

import numpy as np
import pytest

from ross_ood.store import shard_blocks

from .conftest import DATA_ROOT, need_data


@pytest.mark.parametrize("n", [1, 7, 10, 33, 100])
@pytest.mark.parametrize("world", [1, 2, 3, 5])
@pytest.mark.parametrize("block", [1, 4, 16])
def test_shards_disjoint_and_covering(n, world, block):
    seen = []
    for rank in range(world):
        for a, b in shard_blocks(n, block, rank, world):
            assert 0 <= a < b <= n
            seen.extend(range(a, b))
    assert sorted(seen) == list(range(n))  # every input exactly once


def test_shard_argument_errors():
    with pytest.raises(ValueError, match="rank 2 out of range for world size 2"):
        shard_blocks(10, 4, 2, 2)
    with pytest.raises(ValueError, match="block_size"):
        shard_blocks(10, 0)


def _eval_cmd(out, launcher):
    return launcher + ["-m", "ross_ood.cli", "eval", "--data-root", str(DATA_ROOT), "--out", str(out),
                       "--limit", "30", "--detectors", "msp,fdbd,ross-fdbd,odin", "-N", "5", "--block-size", "8",
                       "--batch-size", "8", "--no-progress", "--device", "cpu"]


@pytest.mark.slow
def test_two_processes_equal_one(tmp_path):
    need_data("cifar10", "test.zip")
    env = dict(os.environ, OMP_NUM_THREADS="1", PYTHONUNBUFFERED="1")
    one = subprocess.run(_eval_cmd(tmp_path / "one", [sys.executable]), env=env, capture_output=True, text=True,
                         timeout=600)
    assert one.returncode == 0, one.stderr[-3000:]
    two = subprocess.run(_eval_cmd(tmp_path / "two", [sys.executable, "-m", "torch.distributed.run", "--standalone",
                                                       "--nproc-per-node", "2"]),
                         env=env, capture_output=True, text=True, timeout=600)
    assert two.returncode == 0, two.stderr[-3000:]
    a = json.loads((tmp_path / "one" / "results.json").read_text())
    b = json.loads((tmp_path / "two" / "results.json").read_text())
    assert a["world_size"] == 1 and b["world_size"] == 2
    assert a["id_accuracy"] == b["id_accuracy"] and a["taus"] == pytest.approx(b["taus"], abs=1e-9)
    for ra, rb in zip(a["results"], b["results"], strict=True):
        assert ra["detector"] == rb["detector"] and ra["ood_set"] == rb["ood_set"]
        for k in ("auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out"):
            assert ra[k] == pytest.approx(rb[k], abs=1e-9)
    za, zb = np.load(tmp_path / "one" / "scores.npz"), np.load(tmp_path / "two" / "scores.npz")
    assert sorted(za.files) == sorted(zb.files)
    for k in za.files:
        np.testing.assert_allclose(za[k], zb[k], atol=1e-6, rtol=0)


def test_atomic_writes_honour_the_umask(tmp_path):
    import os
    import stat

    from ross_ood.store import atomic_write_text
    old = os.umask(0o022)
    try:
        atomic_write_text(tmp_path / "r.json", "{}")
    finally:
        os.umask(old)
    assert stat.S_IMODE((tmp_path / "r.json").stat().st_mode) == 0o644
