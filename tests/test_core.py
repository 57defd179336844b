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


@pytest.mark.slow
def test_api_scores_equal_ross_eval_scores(tmp_path):
    """``ROSS(...).fit(id_val).score(x)`` through the API equals what ``ross eval`` stores,
    for plain, median and ROSS detectors, on the same images (to 1e-6)."""
    need_data("cifar10-png", "test.zip")
    out = tmp_path / "eval"
    assert cli.main(["eval", "--data-root", str(DATA_ROOT), "--out", str(out), "--limit", "16", "--no-progress",
                     "--device", "cpu", "--detectors", "msp,median-fdbd,ross-fdbd,ross-msp", "-N", "5",
                     "--sigma", "0.05", "--noise-space", "normalized", "--lam", "fdbd=0.02,msp=0.003",
                     "--tau-quantile", "0.1", "--block-size", "8", "--batch-size", "8"]) == 0
    z = np.load(out / "scores.npz")
    model = load_model("resnet20-original", DATA_ROOT)
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


@pytest.mark.parametrize("kind", ["median", "quantile", "ross"])
def test_order_statistic_surrogate_is_the_order_statistic(cnn, images, kind):
    """The 'median' surrogate is the detector's percentile of ``attack_n`` fresh noisy
    copies: the median for median smoothing *and for ROSS* (not the gate: until attack
    version 3 ROSS's 'median' plan attacked the gate, a duplicate of its 'ross' plan), the
    q-quantile for quantile smoothing. Its value and input gradient equal autograd through
    ``lower_quantile`` of all copies, while the backward pass runs through one copy per input."""
    from ross_ood.smoothing import lower_quantile
    cls = {"median": ross_ood.MedianSmoothing, "quantile": ross_ood.QuantileSmoothing, "ross": ross_ood.ROSS}[kind]
    det = cls(cnn, base="energy", n_samples=5, sigma=0.2, **({"q": 0.25} if kind == "quantile" else {}))
    det.fit(images)
    x = images[:6]
    counted = {"fwd": 0, "bwd": 0}

    def hook(module, inputs, output):
        counted["fwd"] += output.shape[0]
        if output.requires_grad:
            output.register_hook(lambda g, n=output.shape[0]: counted.__setitem__("bwd", counted["bwd"] + n))
    h = cnn.net.register_forward_hook(hook)
    try:
        xa = x.clone().requires_grad_(True)
        got = det.surrogate("median", attack_n=7)(xa, 2)
        (g_got,) = torch.autograd.grad(got.sum(), xa)
    finally:
        h.remove()
    assert counted == {"fwd": 6 * 7 + 6, "bwd": 6}
    xb = x.clone().requires_grad_(True)
    feats = det.noisy(xb, n_samples=7, salt=3)
    want = lower_quantile(feats, 0.25 if kind == "quantile" else 0.5)
    (g_want,) = torch.autograd.grad(want.sum(), xb)
    torch.testing.assert_close(got, want.detach(), rtol=0, atol=1e-6)
    torch.testing.assert_close(g_got, g_want, rtol=1e-5, atol=1e-6)
    assert g_want.abs().sum() > 0
    with torch.no_grad():
        torch.testing.assert_close(det.surrogate("median", attack_n=7)(x, 2), want.detach(), rtol=0, atol=1e-6)
    if kind == "ross":  # the gate differs from the median on these inputs, so the two plans differ
        with torch.no_grad():
            gate = det.surrogate("ross", attack_n=7)(x, 2)
        assert not torch.allclose(gate, want.detach())


def test_noisy_scores_of_chosen_draws_are_columns_of_the_full_matrix(cnn, images):
    from ross_ood.scores import get_score
    from ross_ood.smoothing import Smoothing, noisy_scores
    sm = Smoothing(n_samples=6, sigma=0.1, chunk_size=4)
    base = get_score("msp")
    full = noisy_scores(cnn, images[:5], [base], sm, salt=2)["msp"]
    draws = torch.tensor([[0, 5], [3, 3], [1, 2], [4, 0], [5, 5]])
    some = noisy_scores(cnn, images[:5], [base], sm, salt=2, draws=draws)["msp"]
    torch.testing.assert_close(some, full.gather(1, draws), rtol=0, atol=1e-6)
    with pytest.raises(ValueError, match="draws must be"):
        noisy_scores(cnn, images[:5], [base], sm, draws=torch.tensor([[6]] * 5))


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
