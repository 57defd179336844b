"""KNN, Mahalanobis, ViM, ReAct, ASH and SCALE against independent numpy implementations, on a
model whose penultimate features are its input pixels (so every statistic is checkable by hand),
and their statistics through the command line (fitted once, cached, a stale cache refused)."""
import json

import numpy as np
import pytest
import torch
from torch import nn

import ross_ood
from ross_ood import cli
from ross_ood.scores import STATS_SCORES, vim_dim

from .conftest import DATA_ROOT, need_data

D, K = 8, 3


def _model():
    """h = the D pixels of a 1 x 1 x D image; z = W h + b."""
    torch.manual_seed(3)
    lin = nn.Linear(D, K)
    return ross_ood.wrap(nn.Sequential(nn.Flatten(), lin), [0.0], [1.0])


@pytest.fixture(scope="module")
def setup():
    g = torch.Generator().manual_seed(5)
    y = torch.arange(120) % K
    # class-dependent features in [0, 1]
    x = (0.3 * torch.rand(120, 1, 1, D, generator=g) + 0.2 * (y[:, None, None, None] == torch.arange(D) % K))
    test = torch.rand(10, 1, 1, D, generator=g)
    model = _model()
    stats = ross_ood.fit_feature_stats(model, x, y)
    w = model.net[1].weight.detach().double().numpy()
    b = model.net[1].bias.detach().double().numpy()
    return model, stats, x.reshape(120, D).double().numpy(), y.numpy(), test, test.reshape(10, D).double().numpy(), w, b


def _lse(z):
    m = z.max(1, keepdims=True)
    return (m + np.log(np.exp(z - m).sum(1, keepdims=True)))[:, 0]


def test_stats_are_the_features(setup):
    model, stats, f, y, *_ = setup
    np.testing.assert_allclose(stats.features.numpy(), f, atol=1e-7)
    assert stats.labels.tolist() == y.tolist() and len(stats.fingerprint) == 16


def test_knn(setup):
    model, stats, f, _, test, t, *_ = setup
    got = ross_ood.base_score(ross_ood.get_score("knn", k=5, stats=stats), model, test).detach().double().numpy()
    fn = f / np.linalg.norm(f, axis=1, keepdims=True)
    tn = t / np.linalg.norm(t, axis=1, keepdims=True)
    dist = np.sqrt(((tn[:, None, :] - fn[None]) ** 2).sum(2))
    np.testing.assert_allclose(got, -np.sort(dist, axis=1)[:, 4], atol=1e-5)


def test_mahalanobis(setup):
    model, stats, f, y, test, t, *_ = setup
    got = ross_ood.base_score(ross_ood.get_score("mahalanobis", stats=stats), model, test).detach().double().numpy()
    mu = np.stack([f[y == c].mean(0) for c in range(K)])
    cen = f - mu[y]
    prec = np.linalg.pinv(cen.T @ cen / len(f))
    d = np.stack([np.einsum("bd,de,be->b", t - mu[c], prec, t - mu[c]) for c in range(K)], 1)
    np.testing.assert_allclose(got, -d.min(1), rtol=1e-4, atol=1e-4)


def test_vim(setup):
    model, stats, f, y, test, t, w, b = setup
    score = ross_ood.get_score("vim", stats=stats, model=model)
    assert score.dim == vim_dim(D) == D // 2
    got = ross_ood.base_score(score, model, test).detach().double().numpy()
    u = -np.linalg.pinv(w) @ b
    c = f - u
    vals, vecs = np.linalg.eigh(c.T @ c / len(c))  # sklearn's EmpiricalCovariance(assume_centered=True)
    ns = vecs[:, np.argsort(-vals)[D // 2:]]  # the complement of the top D/2 directions
    alpha = (f @ w.T + b).max(1).mean() / np.linalg.norm((f - u) @ ns, axis=1).mean()
    ref = _lse(t @ w.T + b) - alpha * np.linalg.norm((t - u) @ ns, axis=1)
    np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-4)


def test_react(setup):
    model, stats, f, _, test, t, w, b = setup
    got = ross_ood.base_score(ross_ood.get_score("react", percentile=90, stats=stats), model, test).detach().double().numpy()
    c = np.percentile(f.ravel(), 90)
    np.testing.assert_allclose(got, _lse(np.minimum(t, c) @ w.T + b), atol=1e-5)


@pytest.mark.parametrize("name,p", [("ash", 75.0), ("scale", 50.0)])
def test_ash_and_scale(setup, name, p):
    model, _, _, _, test, t, w, b = setup
    got = ross_ood.base_score(name, model, test, percentile=p).detach().double().numpy()
    keep = D - int(round(D * p / 100))
    ref = []
    for row in t:
        top = np.argsort(-row)[:keep]
        kept = np.zeros_like(row)
        kept[top] = row[top]
        s = np.exp(row.sum() / kept.sum())
        ref.append((kept if name == "ash" else row) * s)
    np.testing.assert_allclose(got, _lse(np.array(ref) @ w.T + b), rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("name", ["knn", "mahalanobis", "vim", "react", "ash", "scale"])
def test_every_new_score_is_differentiable_and_smoothable(setup, name):
    model, stats, *_ = setup
    test = setup[4]
    kw = {"stats": stats} if name in STATS_SCORES else {}
    score = ross_ood.get_score(name, **kw, **({"model": model} if name == "vim" else {}))
    x = test.clone().requires_grad_(True)
    s = ross_ood.base_score(score, model, x)
    (g,) = torch.autograd.grad(s.sum(), x)
    assert torch.isfinite(g).all() and g.abs().sum() > 0
    det = ross_ood.MedianSmoothing(model, base=score, n_samples=5, sigma=0.05).fit(setup[4])
    feats = det.features(test)
    assert feats.shape == (10, 5)
    torch.testing.assert_close(det.score(test).double(), feats.kthvalue(3, dim=1).values.double())
    assert score.params().get("stats", stats.fingerprint) == stats.fingerprint


def test_stats_scores_name_what_they_need(setup):
    model, stats, *_ = setup
    for name in STATS_SCORES:
        with pytest.raises(ValueError, match=f"score '{name}' needs the ID training statistics"):
            ross_ood.get_score(name)
    with pytest.raises(ValueError, match="ViM needs model="):
        ross_ood.get_score("vim", stats=stats)
    with pytest.raises(ValueError, match=r"KNN k must be an integer in \[1, 120\]"):
        ross_ood.get_score("knn", k=500, stats=stats)
    with pytest.raises(ValueError, match="give the labels"):
        ross_ood.fit_feature_stats(model, setup[4])
    for name, kw in (("react", {"percentile": 100}), ("ash", {"percentile": 0}), ("scale", {"percentile": -5})):
        with pytest.raises(ValueError, match=r"percentile must be in \(0, 100\)"):
            ross_ood.get_score(name, **kw, **({"stats": stats} if name == "react" else {}))
    with pytest.raises(ValueError, match=r"ViM dim must be in \[1, 7\] for 8-d features"):
        ross_ood.get_score("vim", stats=stats, model=model, dim=8)
    with pytest.raises(ValueError, match="2 channels but the model expects 1"):
        ross_ood.fit_feature_stats(model, torch.rand(4, 2, 1, D), torch.zeros(4))
    other = _model()  # the same architecture, other weights
    with torch.no_grad():
        other.net[1].weight.add_(1.0)
    knn = ross_ood.get_score("knn", k=5, stats=stats)
    with pytest.raises(ValueError, match="knn: its training statistics were fitted on model"):
        ross_ood.base_score(knn, other, setup[4])


def test_cli_fits_caches_and_refuses_a_stale_cache(tmp_path):
    need_data("cifar10", "train.zip")
    cache = tmp_path / "stats"
    base = ["eval", "--benchmark", "cifar10-jpeg", "--model", "resnet20", "--limit", "8", "--ood-sets", "tin",
            "--stats-limit", "200", "--stats-cache", str(cache), "--no-progress", "--device", "cpu",
            "--data-root", str(DATA_ROOT), "--bootstrap", "0", "-N", "3"]
    assert cli.main([*base, "--detectors", "knn,median-mahalanobis,react", "--out", str(tmp_path / "a")]) == 0
    files = list(cache.glob("*.safetensors"))
    assert len(files) == 1
    doc = json.loads((tmp_path / "a" / "results.json").read_text())
    assert {r["detector"] for r in doc["results"]} == {"knn", "median-mahalanobis", "react"}
    # the same statistics again come from the cache and give the same numbers
    assert cli.main([*base, "--detectors", "knn", "--out", str(tmp_path / "b")]) == 0
    again = json.loads((tmp_path / "b" / "results.json").read_text())
    assert [r["auroc"] for r in again["results"]] == [r["auroc"] for r in doc["results"] if r["detector"] == "knn"]
    # a cache file whose record does not match its key is refused by name
    from safetensors.torch import load_file, save_file
    t = load_file(str(files[0]))
    from safetensors import safe_open
    with safe_open(str(files[0]), "pt") as f:
        rec = json.loads(f.metadata()["record"])
    rec["model"] = "another-model"
    save_file(t, str(files[0]), metadata={"record": json.dumps(rec)})
    assert cli.main([*base, "--detectors", "knn", "--out", str(tmp_path / "c")]) == 2
    assert not (tmp_path / "c").exists()


def test_mahalanobis_refuses_statistics_with_one_image_per_class():
    """One image per class (the imagenet benchmark's sample images): the shared covariance would be
    zero and every score equal (AUROC 50.00 exactly): refused by name instead."""
    from ross_ood.scores import FeatureStats, get_score
    f = torch.randn(5, 8, generator=torch.Generator().manual_seed(0))
    with pytest.raises(ValueError, match="Mahalanobis needs classes with at least 2 training images.*5 image"):
        get_score("mahalanobis", stats=FeatureStats(f, torch.arange(5)))
    get_score("mahalanobis", stats=FeatureStats(torch.cat([f, f + 0.1]), torch.arange(5).repeat(2)))  # 2 per class: fine
