"""ROSS statistics and gate against hand computations; determinism of the noise."""
import numpy as np
import pytest
import torch

import ross_ood
from ross_ood.scores import get_score
from ross_ood.smoothing import Smoothing, calibrate_tau, median_stats, noisy_scores, ross_gate


def test_stats_odd_n():
    s = torch.tensor([[1.0, 2.0, 3.0, 4.0, 10.0], [4.0, 4.0, 4.0, 4.0, 4.0]])
    st = median_stats(s)
    assert st["median"].tolist() == [3.0, 4.0]
    # D = (2 + 1 + 0 + 1 + 7) / 5 = 2.2 ; D = 0 for a constant row
    assert st["D"].tolist() == pytest.approx([2.2, 0.0])
    assert st["cov"].tolist() == pytest.approx([2.2 / 3.0, 0.0])


def test_stats_even_n_takes_lower_middle():
    st = median_stats(torch.tensor([[4.0, 1.0, 3.0, 2.0]]))
    assert st["median"].item() == 2.0  # torch.median convention, as the authors' code
    assert st["D"].item() == pytest.approx((1 + 0 + 1 + 2) / 4)


def test_gate_hand_values():
    m = torch.tensor([3.0, 1.0, 2.0, 5.0], dtype=torch.float64)
    d = torch.tensor([2.2, 0.5, 0.7, 0.0], dtype=torch.float64)
    s = ross_gate(m, d, tau=2.0, lam=0.1)
    # above tau: 2 + (3-2)(1 + 0.1/2.2) = 3.0454545; below: unchanged; at tau: tau
    assert s[0].item() == pytest.approx(2 + 1 * (1 + 0.1 / 2.2), abs=1e-12)
    assert s[1].item() == 1.0
    assert s[2].item() == 2.0
    # D = 0: pushed up by lam / 1e-12
    assert s[3].item() == pytest.approx(2 + 3 * (1 + 0.1 / 1e-12), rel=1e-12)


def test_gate_is_monotone_in_median_and_antitone_in_d():
    m = torch.linspace(-1, 3, 41, dtype=torch.float64)
    s = ross_gate(m, torch.full_like(m, 0.3), 1.0, 0.05)
    assert (s.diff() > 0).all()
    d = torch.linspace(0.01, 2, 20, dtype=torch.float64)
    s2 = ross_gate(torch.full_like(d, 2.0), d, 1.0, 0.05)
    assert (s2.diff() < 0).all()


def test_calibrate_tau_numpy_linear():
    v = np.arange(1, 21, dtype=float)  # 5% quantile, linear: 1 + 0.05 * 19 = 1.95
    assert calibrate_tau(v) == pytest.approx(1.95)
    with pytest.raises(ValueError, match="empty"):
        calibrate_tau([])


def _ross(cnn, **kw):
    args = dict(base="fdbd", n_samples=7, sigma=0.1, lam=0.01, seed=3, batch_size=4)
    args.update(kw)
    return ross_ood.ROSS(cnn, **args)


def test_ross_components_match_manual(cnn, images):
    det = _ross(cnn).fit(images[:8])
    x = images[8:]
    s = noisy_scores(cnn, x, [get_score("fdbd")], Smoothing(7, 0.1, "pixel", 3))["fdbd"]
    st = median_stats(s)
    comp = det.components(x)
    assert torch.allclose(comp["median"], st["median"])
    assert torch.allclose(comp["neg_mean_abs_dev"], -st["D"])
    with pytest.warns(DeprecationWarning, match="mean absolute deviation"):
        assert torch.equal(comp["mad"], comp["neg_mean_abs_dev"])
    assert torch.allclose(comp["cov"], -st["cov"])
    assert torch.allclose(comp["ross"], ross_gate(st["median"], st["D"], det.tau_, 0.01))
    # tau is the 5% quantile of the validation medians
    sm = Smoothing(7, 0.1, "pixel", 3)
    val = median_stats(noisy_scores(cnn, images[:8], [get_score("fdbd")], sm)["fdbd"])["median"]
    assert det.tau_ == pytest.approx(float(np.quantile(val.detach().numpy(), 0.05)))


def test_scores_invariant_to_batch_chunk_order(cnn, images):
    ref = _ross(cnn, batch_size=12, chunk_size=1000).fit(images).score(images)
    for bs, cs in [(1, 1), (5, 3), (12, 7)]:
        det = _ross(cnn, batch_size=bs, chunk_size=cs).fit(images)
        got = torch.cat([det.score(images[i:i + bs]) for i in range(0, 12, bs)])
        assert torch.allclose(got, ref, atol=1e-6), (bs, cs)
    perm = torch.randperm(12, generator=torch.Generator().manual_seed(0))
    det = _ross(cnn).fit(images[perm])
    assert torch.allclose(det.score(images[perm]), ref[perm], atol=1e-6)


def test_same_seed_same_numbers_other_seed_differs(cnn, images):
    a = _ross(cnn, seed=5).fit(images).score(images)
    b = _ross(cnn, seed=5).fit(images).score(images)
    c = _ross(cnn, seed=6).fit(images).score(images)
    assert torch.equal(a, b)
    assert (a - c).abs().max() > 1e-4


def test_explicit_keys_define_the_noise(cnn, images):
    f = [get_score("msp")]
    a = noisy_scores(cnn, images[:4], f, Smoothing(5, 0.1), keys=[10, 11, 12, 13])["msp"]
    b = noisy_scores(cnn, images[:4].flip(0), f, Smoothing(5, 0.1), keys=[13, 12, 11, 10])["msp"]
    assert torch.allclose(a, b.flip(0))
    c = noisy_scores(cnn, images[:4], f, Smoothing(5, 0.1), keys=[0, 1, 2, 3])["msp"]
    assert not torch.allclose(a, c)


def test_noise_statistics_and_spaces(cnn):
    # with a score that reads the input, pixel-space noise has the requested std
    from ross_ood.noise import channel_scale, draw_noise
    e = draw_noise([1, 2], [0, 0], (3, 64, 64), seed=0)
    assert abs(e.std().item() - 1.0) < 0.02 and abs(e.mean().item()) < 0.02
    assert torch.allclose(channel_scale(cnn.std, 0.1, "normalized").flatten(), 0.1 * cnn.std.flatten())
    assert torch.allclose(channel_scale(cnn.std, 0.1, "pixel").flatten(), torch.full((3,), 0.1))
    with pytest.raises(ValueError, match="space must be one of"):
        channel_scale(cnn.std, 0.1, "latent")


def test_sigma_zero_equals_base(cnn, images):
    det = ross_ood.MedianSmoothing(cnn, base="energy", n_samples=3, sigma=0.0)
    plain = ross_ood.base_score("energy", cnn, images).detach().double()
    assert torch.allclose(det.score(images), plain, atol=1e-5)


def test_stale_fit_is_an_error(cnn, images):
    det = _ross(cnn).fit(images)
    det.score(images)
    det.sigma = 0.2
    with pytest.raises(ross_ood.StaleFitError, match="sigma"):
        det.score(images)
    det.fit(images)
    det.score(images)
    det.base = get_score("msp")
    with pytest.raises(ross_ood.StaleFitError, match="base"):
        det.components(images)


def test_predict_threshold_accepts_95_percent(cnn):
    g = torch.Generator().manual_seed(3)
    val = torch.rand(200, 3, 8, 8, generator=g)
    det = ross_ood.BaseScoreDetector(cnn, base="msp").fit(val)
    flagged = det.predict(val)
    assert flagged.dtype == torch.bool
    assert abs(flagged.float().mean().item() - 0.05) <= 0.01
    det.accept_rate = 0.8
    with pytest.raises(ross_ood.StaleFitError):
        det.predict(val)
    det.fit(val)
    assert abs(det.predict(val).float().mean().item() - 0.2) <= 0.01


def test_save_load_roundtrip(cnn, images, tmp_path):
    det = _ross(cnn).fit(images)
    det.save(tmp_path / "d.json")
    back = ross_ood.ROSS.load(tmp_path / "d.json", cnn)
    assert back.tau_ == det.tau_ and back.threshold_ == det.threshold_
    assert torch.equal(back.score(images), det.score(images))
    assert torch.equal(back.predict(images), det.predict(images))
    (tmp_path / "bad.json").write_text("{not json")
    with pytest.raises(ValueError, match="not a saved ross-ood detector"):
        ross_ood.ROSS.load(tmp_path / "bad.json", cnn)


def test_predicted_class_from_clean_input(cnn, images):
    det = _ross(cnn, sigma=0.5).fit(images)
    assert torch.equal(det.predict_class(images), cnn(images).argmax(1))


def test_gradients_flow_through_ross(cnn, images):
    det = _ross(cnn).fit(images)
    x = images[:2].clone().requires_grad_(True)
    (g,) = torch.autograd.grad(det.score(x).sum(), x)
    assert g.abs().sum() > 0


def test_noise_device_model_equals_cpu_on_a_cpu_model(cnn, images):
    f = [get_score("fdbd")]
    a = noisy_scores(cnn, images, f, Smoothing(4, 0.1, seed=2))["fdbd"]
    b = noisy_scores(cnn, images, f, Smoothing(4, 0.1, seed=2, noise_device="model"))["fdbd"]
    assert torch.equal(a, b)
    with pytest.raises(ValueError, match="noise_device must be one of"):
        Smoothing(4, 0.1, noise_device="gpu")
    det = ross_ood.ROSS(cnn, base="fdbd", n_samples=4, sigma=0.1, seed=2, noise_device="model").fit(images)
    assert det.config()["noise_device"] == "model"
    assert "noise_device" not in ross_ood.ROSS(cnn, base="fdbd").config()  # the default keeps old cache keys
