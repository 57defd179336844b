"""Every base score against a hand computation on a tiny linear model with fixed weights."""
import math

import numpy as np
import pytest
import torch

import ross_ood
from ross_ood.scores import FDBD, get_score

X = torch.tensor([[[[0.2, 0.6]]]])  # h = (0.2, 0.6), z = (0.2, 0.6, -0.2)
Z = [0.2, 0.6, -0.2]


def softmax(z, t=1.0):
    e = [math.exp(v / t) for v in z]
    return [v / sum(e) for v in e]


def test_msp_maxlogit_energy(tiny):
    p = softmax(Z)
    assert ross_ood.base_score("msp", tiny, X).item() == pytest.approx(max(p), abs=1e-6)
    assert ross_ood.base_score("maxlogit", tiny, X).item() == pytest.approx(0.6, abs=1e-6)
    lse = math.log(sum(math.exp(v) for v in Z))  # = 1.3331...
    assert ross_ood.base_score("energy", tiny, X).item() == pytest.approx(lse, abs=1e-6)
    t = 2.0
    assert ross_ood.base_score("energy", tiny, X, temperature=t).item() == pytest.approx(
        t * math.log(sum(math.exp(v / t) for v in Z)), abs=1e-6)


def test_msp_literal_value(tiny):
    # softmax(0.2, 0.6, -0.2): e^0.6 / (e^0.2 + e^0.6 + e^-0.2) = 1.82212 / 3.86222 = 0.47178
    assert ross_ood.base_score("msp", tiny, X).item() == pytest.approx(0.471777, abs=1e-5)


def test_gen(tiny):
    p = softmax(Z)
    want = -sum((q ** 0.1) * ((1 - q) ** 0.1) for q in p)
    assert ross_ood.base_score("gen", tiny, X).item() == pytest.approx(want, abs=1e-6)
    top2 = sorted(p)[-2:]
    want2 = -sum((q ** 0.5) * ((1 - q) ** 0.5) for q in top2)
    assert ross_ood.base_score("gen", tiny, X, gamma=0.5, m=2).item() == pytest.approx(want2, abs=1e-6)


def test_fdbd_feature_norm(tiny):
    # c = 1; j=0: |0.6-0.2| / ||(0,1)-(1,0)|| = 0.4/sqrt(2); j=2: |0.6+0.2| / ||(0,1)-(1,1)|| = 0.8
    want = (0.4 / math.sqrt(2) + 0.8) / math.sqrt(0.2 ** 2 + 0.6 ** 2)  # = 1.7121247
    assert want == pytest.approx(1.7121247, abs=1e-6)
    assert ross_ood.base_score("fdbd", tiny, X).item() == pytest.approx(want, abs=1e-5)


def test_fdbd_train_mean(tiny):
    mu = torch.tensor([0.1, 0.2])
    s = FDBD("train_mean", train_mean=mu)(tiny, X).item()
    want = (0.4 / math.sqrt(2) + 0.8) / math.sqrt(0.1 ** 2 + 0.4 ** 2)
    assert s == pytest.approx(want, abs=1e-5)
    with pytest.raises(ValueError, match="train_mean"):
        FDBD("train_mean")


def test_odin(tiny):
    t, eps = 1000.0, 0.0014
    p = softmax(Z, t)
    # grad_x log p_c(z/T) = (W_c - sum_k p_k W_k) / T with c = 1, W = rows (1,0), (0,1), (1,1)
    w = np.array([[1, 0], [0, 1], [1, 1]], float)
    g = (w[1] - np.dot(p, w)) / t
    x_t = np.array([0.2, 0.6]) + eps * np.sign(g)  # x - eps * sign(-g), std = 1
    z_t = w @ x_t + np.array([0, 0, -1.0])
    want = max(softmax(list(z_t), t))
    assert ross_ood.base_score("odin", tiny, X).item() == pytest.approx(want, abs=1e-7)
    # the step moved the input towards higher confidence
    assert want > max(p)


def test_odin_step_scales_with_std(tiny):
    m2 = ross_ood.wrap(tiny.net, [0.0], [2.0])  # features become x / 2 and the step eps * 2 in pixels
    s = ross_ood.base_score("odin", m2, X, eps=0.01).item()
    w = np.array([[1, 0], [0, 1], [1, 1]], float)
    h = np.array([0.1, 0.3])
    p = softmax(list(w @ h + np.array([0, 0, -1.0])), 1000)
    g = w[1] - np.dot(p, w)
    h_t = h + 0.01 * np.sign(g)  # 0.01 normalised units = 0.02 pixels = 0.01 in feature space
    want = max(softmax(list(w @ h_t + np.array([0, 0, -1.0])), 1000))
    assert s == pytest.approx(want, abs=1e-7)


def test_pro_msp(tiny):
    delta = 0.05
    w = np.array([[1, 0], [0, 1], [1, 1]], float)
    b = np.array([0, 0, -1.0])

    def msp_and_grad(x):
        p = np.array(softmax(list(w @ x + b)))
        c = p.argmax()
        return p[c], p[c] * (w[c] - p @ w)

    x = np.array([0.2, 0.6])
    vals = []
    for _ in range(2):
        v, g = msp_and_grad(x)
        vals.append(v)
        x = x - delta * np.sign(g)
    vals.append(msp_and_grad(x)[0])
    got = ross_ood.base_score("pro-msp", tiny, X, steps=2, delta=delta).item()
    assert got == pytest.approx(min(vals), abs=1e-6)
    assert min(vals) < vals[0]


def test_scores_differentiable(cnn, images):
    for name in ("msp", "maxlogit", "energy", "gen", "fdbd", "odin", "pro-fdbd"):
        x = images[:3].clone().requires_grad_(True)
        s = ross_ood.base_score(name, cnn, x)
        assert s.shape == (3,)
        (g,) = torch.autograd.grad(s.sum(), x)
        assert torch.isfinite(g).all() and g.abs().sum() > 0, name


def test_batch_independence(cnn, images):
    for name in ("msp", "gen", "fdbd", "odin", "pro-energy"):
        full = ross_ood.base_score(name, cnn, images).detach()
        parts = torch.cat([ross_ood.base_score(name, cnn, images[i:i + 5]).detach() for i in range(0, 12, 5)])
        assert torch.allclose(full, parts, atol=1e-6), name


def test_unknown_score_name(tiny):
    with pytest.raises(ValueError, match="unknown score name 'mps'"):
        get_score("mps")
    with pytest.raises(ValueError, match="bad parameters for score 'msp'"):
        get_score("msp", temperature=2)


def test_linear_detection_error():
    from torch import nn

    class Post(nn.Module):
        def __init__(self):
            super().__init__()
            self.fc = nn.Linear(4, 3)

        def forward(self, x):
            return self.fc(x.flatten(1)) * 2  # the linear output is not returned unchanged

    m = ross_ood.wrap(Post(), [0.0], [1.0])
    with pytest.raises(ValueError, match="cannot tell which linear layer"):
        ross_ood.base_score("fdbd", m, torch.rand(2, 1, 2, 2))
    m2 = ross_ood.wrap(Post(), [0.0], [1.0], linear="fc")
    assert ross_ood.base_score("fdbd", m2, torch.rand(2, 1, 2, 2)).shape == (2,)
    with pytest.raises(ValueError, match="no module named 'head'"):
        ross_ood.wrap(Post(), [0.0], [1.0], linear="head")


def test_wrapper_normalises(cnn, images):
    manual = cnn.net((images - cnn.mean) / cnn.std)
    assert torch.allclose(cnn(images), manual)
    out = cnn.outputs(images)
    assert out.features.shape == (12, 32)
    assert torch.allclose(out.features @ cnn.net.fc.weight.T + cnn.net.fc.bias, out.logits, atol=1e-5)


def test_fdbd_class_distances_equal_the_direct_differences_and_follow_the_weights():
    """fDBD gathers ||W_c - W_j|| from a per-weight (K, K) table (no (B, K, D) tensor at 1,000 classes):
    the same values as the direct differences, bit for bit, and recomputed when W changes in place."""
    from ross_ood.scores.fdbd import class_distances
    g = torch.Generator().manual_seed(3)
    w = torch.randn(1000, 64, generator=g, requires_grad=True)
    c = torch.randint(0, 1000, (7,), generator=g)
    direct = (w[c][:, None, :] - w[None, :, :]).norm(dim=2).detach()
    assert torch.equal(class_distances(w)[c], direct)
    assert float(class_distances(w).diagonal().abs().max()) == 0.0
    with torch.no_grad():
        w.mul_(3)
    assert torch.allclose(class_distances(w)[c], 3 * direct, rtol=1e-6)
