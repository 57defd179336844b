"""Certificates: order-statistic indices against scipy, Monte Carlo coverage on a real model,
the eps -> 0 limit and monotone widening, and the certify command's table."""
import numpy as np
import pytest
import torch
from scipy import stats

from ross_ood.certify import (
    d_bounds,
    dkw_eps,
    lower_index,
    median_bounds,
    ross_bounds,
    shifted_percentile,
    upper_index,
    worst_case_metrics,
)
from ross_ood.scores import get_score
from ross_ood.smoothing import Smoothing, median_stats, noisy_scores, ross_gate

from .conftest import DATA_ROOT, need_data


def brute_upper(n, q, alpha):
    ok = [k for k in range(1, n + 1) if stats.binom.sf(k - 1, n, q) <= alpha]
    return min(ok) if ok else None


def brute_lower(n, q, alpha):
    ok = [k for k in range(1, n + 1) if stats.binom.cdf(k - 1, n, q) <= alpha]
    return max(ok) if ok else None


@pytest.mark.parametrize("n", [1, 5, 20, 100, 1000])
@pytest.mark.parametrize("q", [0.01, 0.3, 0.5, 0.8, 0.99, 0.9999])
@pytest.mark.parametrize("alpha", [0.001, 0.05])
def test_order_statistic_indices(n, q, alpha):
    assert upper_index(n, q, alpha) == brute_upper(n, q, alpha)
    assert lower_index(n, q, alpha) == brute_lower(n, q, alpha)


def test_abstain_when_n_too_small():
    # p+ = Phi(0 + 2) = 0.977: with n = 20, P(Bin(20, 0.977) >= 20) = 0.63 > alpha -> abstain
    p_plus = shifted_percentile(0.5, 0.5, 0.25, +1)
    assert p_plus == pytest.approx(stats.norm.cdf(2.0))
    assert upper_index(20, p_plus, 0.001) is None
    lo, hi = median_bounds(np.random.default_rng(0).normal(size=(3, 20)), 0.5, 0.25, 0.001)
    assert np.isposinf(hi).all() and np.isneginf(lo).all()
    lo2, hi2 = median_bounds(np.random.default_rng(0).random((3, 20)), 0.5, 0.25, 0.001, value_range=(0, 1))
    assert (hi2 == 1).all() and (lo2 == 0).all()  # abstention at the score's range


def test_bounds_collapse_and_widen():
    rng = np.random.default_rng(1)
    s = rng.normal(loc=rng.normal(size=(20, 1)), size=(20, 20000))
    med = np.median(s, axis=1)
    lo0, hi0 = median_bounds(s, 0.0, 0.25, 0.001)
    assert (lo0 <= med).all() and (med <= hi0).all()
    # at eps = 0 only the sampling error remains: about 2 x 3.3 x 1.2533 / sqrt(n) = 0.058 wide
    assert (hi0 - lo0).max() < 0.07
    prev_lo, prev_hi = lo0, hi0
    for eps in (0.01, 0.05, 0.1, 0.2, 0.4):
        lo, hi = median_bounds(s, eps, 0.25, 0.001)
        assert (lo <= prev_lo).all() and (hi >= prev_hi).all()
        prev_lo, prev_hi = lo, hi
    # for a N(mu, 1) score the exact limits are mu +- eps/sigma; the bounds hold them
    mu = s.mean(1)
    assert (prev_lo <= mu - 0.4 / 0.25 + 0.1).all() and (prev_hi >= mu + 0.4 / 0.25 - 0.1).all()


def test_d_bounds_contain_true_d_and_dkw():
    rng = np.random.default_rng(2)
    s = rng.exponential(size=(10, 5000))
    st = median_stats(torch.from_numpy(s))
    m_lo, m_hi = median_bounds(s, 0.0, 0.25, 0.001)
    d_lo, d_hi = d_bounds(s, 0.0, 0.25, 0.001, m_lo, m_hi, grid=400, value_range=(0.0, 20.0))
    d = st["D"].numpy()
    assert (d_lo <= d).all() and (d <= d_hi).all()
    true_d = np.log(2)  # E|X - median| for Exp(1) = ln 2
    assert (d_lo <= true_d).all() and (true_d <= d_hi).all()
    assert dkw_eps(5000, 0.001) == pytest.approx(np.sqrt(np.log(2000) / 10000))


def test_ross_bounds_order_and_worst_case_metrics():
    rng = np.random.default_rng(3)
    s = rng.normal(2.0, 0.3, size=(8, 3000)).clip(0)
    gate = lambda m, d: ross_gate(torch.from_numpy(m), torch.from_numpy(d), 1.5, 0.01).numpy()  # noqa: E731
    b = ross_bounds(s, 0.05, 0.25, gate, alpha=0.001, value_range=(0.0, np.inf))
    assert (b["lo"] <= b["hi"]).all() and (b["m_lo"] <= b["m_hi"]).all()
    assert np.isposinf(b["d_hi"]).all()  # unbounded above: no finite sample bounds the tail
    assert (b["lo"] == b["m_lo"]).all()  # S(m_lo, inf) = m_lo
    m = worst_case_metrics(np.array([1.0, -np.inf, 3.0]), np.array([0.0, np.inf]))
    assert m["auroc"] == pytest.approx(2 / 6)  # the abstentions rank worst


def _l2_project(delta, eps):
    n = delta.flatten(1).norm(dim=1).clamp_min(1e-12)
    return delta * (eps / n).clamp(max=1.0).view(-1, 1, 1, 1)


@pytest.mark.slow
@pytest.mark.parametrize("q", [0.5, 0.25])
def test_monte_carlo_coverage_on_a_real_model(q):
    """Random and PGD-found L2 perturbations within eps never move the empirical smoothed
    median / q-quantile (large n) outside the certified bounds (beyond the failure rate alpha)."""
    need_data("mnist", "t10k-images-idx3-ubyte.gz")
    from ross_ood.data import IdxImageSet
    from ross_ood.models import load_model
    model = load_model("mnist-cnn", DATA_ROOT)
    ds = IdxImageSet(DATA_ROOT / "mnist" / "t10k-images-idx3-ubyte.gz").prepare(1, 28)
    x = torch.stack([ds[i][0] for i in range(0, 80, 10)])
    score = get_score("energy")
    sigma, eps, alpha, n, n_check = 0.25, 0.25, 0.01, 1000, 2000
    s = noisy_scores(model, x, [score], Smoothing(n, sigma, "pixel", 0, chunk_size=512))["energy"].detach().numpy()
    lo, hi = median_bounds(s, eps, sigma, alpha, p=q)
    assert np.isfinite(lo).all() and np.isfinite(hi).all()
    g = torch.Generator().manual_seed(0)
    candidates = []
    for _ in range(4):  # random directions on the sphere of radius eps
        candidates.append(x + _l2_project(torch.randn(x.shape, generator=g) * 10, eps))
    for direction in (-1.0, 1.0):  # L2 PGD on the mean of noisy scores, towards each bound
        xa = x.clone()
        for step in range(10):
            xa.requires_grad_(True)
            val = noisy_scores(model, xa, [score], Smoothing(16, sigma), salt=100 + step)["energy"].mean(1)
            (grad,) = torch.autograd.grad(val.sum(), xa)
            gn = grad / grad.flatten(1).norm(dim=1).clamp_min(1e-12).view(-1, 1, 1, 1)
            xa = x + _l2_project(xa.detach() + direction * 0.1 * gn - x, eps)
        candidates.append(xa.detach())
    violations, moved = 0, []
    with torch.no_grad():
        m0 = np.quantile(s, q, axis=1)
        for xc in candidates:
            assert (xc - x).flatten(1).norm(dim=1).max() <= eps + 1e-5
            sc = noisy_scores(model, xc, [score], Smoothing(n_check, sigma, "pixel", 7))["energy"].numpy()
            mc = np.quantile(sc, q, axis=1)
            violations += int(((mc < lo) | (mc > hi)).sum())
            moved.append(np.abs(mc - m0).max())
    assert max(moved) > 0.05  # the perturbations do move the smoothed score
    assert violations <= max(1, int(alpha * len(candidates) * len(x)))


@pytest.mark.slow
def test_certify_command_writes_table_and_curve(tmp_path):
    need_data("cifar10", "test.zip")
    from ross_ood.cli.jobs import run_certify
    from ross_ood.cli.settings import CertifySettings
    cfg = CertifySettings(data_root=str(DATA_ROOT), out=str(tmp_path), limit=8, n_samples=60,
                          detectors="median-msp,ross-msp", sigma="0.12", model="resnet20-noise012", radii="0,0.1",
                          block_size=8, batch_size=8, progress=False, device="cpu", alpha=0.01)
    doc = run_certify(cfg)
    means = {(r["detector"], r["radius"]): r for r in doc["means"]}
    for det in ("median-msp", "ross-msp"):
        assert means[(det, 0.1)]["auroc"] <= means[(det, 0.0)]["auroc"] + 1e-12  # larger radius, weaker
    assert (tmp_path / "certified_auroc.png").stat().st_size > 1000
    assert "eps=0.1" in (tmp_path / "results.md").read_text()


def test_quantile_detector_score_and_certificate(cnn, images):
    """QuantileSmoothing scores the numpy 'lower' q-quantile of the noisy scores, its
    certificate is the pair of order statistics that the brute-force binomial search picks at
    the shifted percentiles q-+ (section 5b of docs/certification.md), and at q = 1/2 it is
    median smoothing."""
    from ross_ood import MedianSmoothing, QuantileSmoothing
    det = QuantileSmoothing(cnn, base="energy", n_samples=101, sigma=0.25, q=0.2).fit(images)
    with torch.no_grad():
        feats = det.features(images).numpy()
    want = np.quantile(feats.astype(np.float64), 0.2, axis=1, method="lower")
    assert np.array_equal(det.score(images).numpy(), want)
    eps, alpha = 0.1, 0.01
    lo, hi = det.certified_bounds(feats, eps, alpha)
    srt = np.sort(feats.astype(np.float64), axis=1)
    kl = brute_lower(101, stats.norm.cdf(stats.norm.ppf(0.2) - eps / 0.25), alpha / 2)
    ku = brute_upper(101, stats.norm.cdf(stats.norm.ppf(0.2) + eps / 0.25), alpha / 2)
    assert np.array_equal(lo, srt[:, kl - 1]) and np.array_equal(hi, srt[:, ku - 1])
    assert (lo <= want).all() and (want <= hi).all()
    med = MedianSmoothing(cnn, base="energy", n_samples=101, sigma=0.25).fit(images)
    half = det.with_params(q=0.5).fit(images)
    assert torch.equal(half.score(images), med.score(images))
    for a, b in zip(half.certified_bounds(feats, eps, alpha), med.certified_bounds(feats, eps, alpha)):
        assert np.array_equal(a, b)
    for bad in (0, 1, 1.5, -0.1):
        with pytest.raises(ValueError, match="q must be a number in"):
            QuantileSmoothing(cnn, base="energy", q=bad)
