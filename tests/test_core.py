"""One core: the public detector classes give exactly what every command reports."""
import numpy as np
import pytest
import torch

import ross_ood
from ross_ood import cli
from ross_ood.data import build_benchmark
from ross_ood.models import load_model

from .conftest import DATA_ROOT, need_data

SMOOTH = dict(n_samples=5, sigma=0.05, noise_space="normalized", seed=0)


def _stack(ds):
    return torch.stack([ds[i][0] for i in range(len(ds))])


def test_api_scores_equal_ross_eval_scores(tmp_path):
    """``ROSS(...).fit(id_val).score(x)`` through the API equals what ``ross eval`` stores,
    for plain, median and ROSS detectors, on the same images (to 1e-6)."""
    need_data("cifar10", "test.zip")
    out = tmp_path / "eval"
    assert cli.main(["eval", "--data-root", str(DATA_ROOT), "--out", str(out), "--limit", "16", "--no-progress",
                     "--device", "cpu", "--detectors", "msp,median-fdbd,ross-fdbd,ross-msp", "-N", "5",
                     "--sigma", "0.05", "--noise-space", "normalized", "--lam", "fdbd=0.02,msp=0.003",
                     "--tau-quantile", "0.1", "--block-size", "8", "--batch-size", "8"]) == 0
    z = np.load(out / "scores.npz")
    model = load_model("resnet20", DATA_ROOT)
    bench = build_benchmark("cifar10", DATA_ROOT, 3, 32, limit=16)
    val, test, tin = _stack(bench.val), _stack(bench.id), _stack(bench.ood["tin"])
    dets = {"msp": ross_ood.BaseScoreDetector(model, base="msp"),
            "median-fdbd": ross_ood.MedianSmoothing(model, base="fdbd", **SMOOTH),
            "ross-fdbd": ross_ood.ROSS(model, base="fdbd", lam=0.02, tau_quantile=0.1, **SMOOTH),
            "ross-msp": ross_ood.ROSS(model, base="msp", lam=0.003, tau_quantile=0.1, **SMOOTH)}
    for name, det in dets.items():
        det.fit(val)
        for set_name, x in (("id_test", test), ("tin", tin)):
            api = det.score(x).double().numpy()
            np.testing.assert_allclose(api, z[f"{name}|{set_name}|score"], rtol=0, atol=1e-6, err_msg=name)
    import json
    taus = json.loads((out / "results.json").read_text())["taus"]
    assert taus["ross-fdbd"] == pytest.approx(dets["ross-fdbd"].tau_, abs=1e-9)  # tau_quantile reached eval


def test_feature_level_equals_input_level(cnn, images):
    det = ross_ood.ROSS(cnn, base="energy", n_samples=7, sigma=0.1, lam=0.05, seed=1)
    det.fit(images[:8])
    feats = det.features(images[8:])
    assert feats.shape == (4, 7)
    assert torch.equal(det.score_features(feats), det.score(images[8:]))
    other = ross_ood.ROSS(cnn, base="energy", n_samples=7, sigma=0.1, lam=0.05, seed=1)
    other.fit_features(det.features(images[:8]))
    assert other.tau_ == det.tau_ and other.threshold_ == det.threshold_


def test_attack_surrogate_is_the_detectors_gate(cnn, images):
    """The adaptive attack's 'ross' surrogate is the fitted detector's own score on
    ``attack_n`` fresh copies, so a fix to the gate reaches the attack."""
    det = ross_ood.ROSS(cnn, base="msp", n_samples=5, sigma=0.1, lam=0.01).fit(images)
    f = det.surrogate("ross", attack_n=5)
    with torch.no_grad():
        got = f(images, 3)
        want = det.score_features(det.noisy(images, n_samples=5, salt=4))
    assert torch.equal(got, want)
    with pytest.raises(ValueError, match="no attack surrogate 'ross'"):
        ross_ood.MedianSmoothing(cnn, base="msp").surrogate("ross")


def test_certified_gate_is_the_scoring_gate(cnn, images):
    """At radius 0 with alpha near 1 the certified ROSS bounds pass through ``ROSS.gate``:
    changing lam after fitting changes scores and bounds alike (after refitting)."""
    det = ross_ood.ROSS(cnn, base="msp", n_samples=5, sigma=0.1, lam=0.01).fit(images)
    rng = np.random.default_rng(0)
    samples = rng.uniform(0.2, 0.9, size=(6, 400))
    lo, hi = det.certified_bounds(samples, 0.0, alpha=0.5, grid=50)
    from ross_ood.certify import d_bounds, median_bounds
    m_lo, m_hi = median_bounds(samples, 0.0, 0.1, 0.25, value_range=(0.0, 1.0))
    d_lo, d_hi = d_bounds(samples, 0.0, 0.1, 0.25, m_lo, m_hi, 50, (0.0, 1.0))
    np.testing.assert_allclose(lo, det.gate(m_lo, d_hi))
    np.testing.assert_allclose(hi, det.gate(m_hi, d_lo))
    with pytest.raises(ValueError, match="noise_space='pixel'"):
        ross_ood.ROSS(cnn, base="msp", noise_space="normalized").fit(images).certified_bounds(samples, 0.1)
