"""AUROC and FPR@95 against brute-force computations on random and tied scores."""
import numpy as np
import pytest

from ross_ood import ood_metrics


def brute_auroc(s_id, s_ood):
    # P(ID score > OOD score) + 1/2 P(tie): the Mann-Whitney form of AUROC
    d = s_id[:, None] - s_ood[None, :]
    return ((d > 0).sum() + 0.5 * (d == 0).sum()) / d.size


def brute_fpr95(s_id, s_ood, r=0.95):
    # flag OOD when score <= t; the smallest share of flagged ID among t catching >= r of OOD
    best = 1.0
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if (s_ood <= t).mean() >= r:
            best = min(best, (s_id <= t).mean())
    return best


def brute_fpr95_id(s_id, s_ood, r=0.95):
    # accept when score >= t; the smallest share of accepted OOD among t accepting >= r of ID
    best = 1.0
    for t in np.unique(np.concatenate([s_id, s_ood])):
        if (s_id >= t).mean() >= r:
            best = min(best, (s_ood >= t).mean())
    return best


@pytest.mark.parametrize("seed", range(6))
@pytest.mark.parametrize("tied", [False, True])
def test_against_brute_force(seed, tied):
    rng = np.random.default_rng(seed)
    n_id, n_ood = rng.integers(20, 120, size=2)
    s_id = rng.normal(1.0, 1.0, n_id)
    s_ood = rng.normal(0.0, 1.0, n_ood)
    if tied:
        s_id, s_ood = np.round(s_id * 2) / 2, np.round(s_ood * 2) / 2
    m = ood_metrics(s_id, s_ood)
    assert m["auroc"] == pytest.approx(brute_auroc(s_id, s_ood), abs=1e-12)
    assert m["fpr95"] == pytest.approx(brute_fpr95(s_id, s_ood), abs=1e-12)
    assert m["fpr95_id"] == pytest.approx(brute_fpr95_id(s_id, s_ood), abs=1e-12)
    for k in ("aupr_in", "aupr_out"):
        assert 0 <= m[k] <= 1


def test_perfect_and_reversed():
    m = ood_metrics([2.0, 3.0, 4.0], [0.0, 1.0])
    assert m["auroc"] == 1.0 and m["fpr95"] == 0.0 and m["fpr95_id"] == 0.0
    assert m["aupr_in"] == pytest.approx(1.0) and m["aupr_out"] == pytest.approx(1.0)
    r = ood_metrics([0.0, 1.0], [2.0, 3.0, 4.0])
    assert r["auroc"] == 0.0 and r["fpr95"] == 1.0


def test_hand_example():
    # ID 1,2,3,4 ; OOD 0,2 : ID above OOD 0: 4 pairs; above OOD 2: 3 and 4, plus a tie -> 6.5 / 8
    m = ood_metrics([1.0, 2.0, 3.0, 4.0], [0.0, 2.0])
    assert m["auroc"] == pytest.approx(6.5 / 8)
    # catching both OOD needs t = 2 -> ID flagged: 1, 2 -> 0.5
    assert m["fpr95"] == pytest.approx(0.5)


def test_large_scores_keep_their_ranking():
    # raw scores far outside [0, 1] (torchmetrics' sigmoid would saturate these)
    s_id = np.array([1000.0, 1000.5, 1001.0])
    s_ood = np.array([999.0, 1000.25])
    assert ood_metrics(s_id, s_ood)["auroc"] == pytest.approx(brute_auroc(s_id, s_ood))
