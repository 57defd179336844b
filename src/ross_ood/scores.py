"""Post-hoc base scores. Every score is oriented higher = more in-distribution (ID).

Each score is a small object with a ``name``, its ``params()`` (which key calibration: a
threshold computed with other parameters is stale) and ``__call__(model, x) -> (B,)``.
Scores that need only one forward pass (MSP, MaxLogit, Energy, GEN, fDBD) also implement
``from_outputs(outputs, model)`` so that several of them can share one pass.
All scores are differentiable in ``x`` and run on the model's device.

Notation: z = logits, p = softmax(z), h = penultimate features, c = argmax z,
W = weight rows of the last linear layer.
"""
from __future__ import annotations

from typing import Callable

import torch
import torch.nn.functional as F

from ross_ood.model import ModelWrapper, Outputs

__all__ = ["Score", "MSP", "MaxLogit", "Energy", "GEN", "ODIN", "FDBD", "PRO", "KNN", "Mahalanobis", "ViM",
           "ReAct", "ASH", "SCALE", "FeatureStats", "fit_feature_stats", "STATS_SCORES",
           "get_score", "base_score", "SCORE_NAMES", "score_from_spec", "is_score_name"]


class Score:
    """Base class. Subclasses set ``name`` and implement ``__call__``."""

    name: str = "score"
    #: True when the score is a function of one forward pass (logits, features)
    pass_level: bool = False
    needs_features: bool = False
    #: the interval the score's values lie in (used by certificates to bound tails)
    value_range: tuple = (float("-inf"), float("inf"))

    def params(self) -> dict:
        return {}

    def spec(self) -> dict:
        """Name and parameters: everything that determines the score's values."""
        return {"name": self.name, **self.params()}

    def __call__(self, model: ModelWrapper, x: torch.Tensor) -> torch.Tensor:
        out = model.outputs(x, features=self.needs_features)
        return self.from_outputs(out, model)

    def from_outputs(self, out: Outputs, model: ModelWrapper) -> torch.Tensor:
        raise NotImplementedError(f"{self.name} needs the input, not only one forward pass")

    def __repr__(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.params().items())
        return f"{type(self).__name__}({args})"


class MSP(Score):
    """Maximum softmax probability, max_c softmax(z)_c (Hendrycks & Gimpel, ICLR 2017)."""

    name, pass_level, value_range = "msp", True, (0.0, 1.0)

    def from_outputs(self, out, model):
        return out.logits.softmax(1).max(1).values


class MaxLogit(Score):
    """Maximum logit, max_c z_c (Hendrycks et al., ICML 2022)."""

    name, pass_level = "maxlogit", True

    def from_outputs(self, out, model):
        return out.logits.max(1).values


class Energy(Score):
    """Negative free energy, T * logsumexp(z / T) (Liu et al., NeurIPS 2020)."""

    name, pass_level = "energy", True

    def __init__(self, temperature: float = 1.0):
        if not temperature > 0:
            raise ValueError(f"energy temperature must be > 0, got {temperature}")
        self.temperature = float(temperature)

    def params(self):
        return {"temperature": self.temperature}

    def from_outputs(self, out, model):
        t = self.temperature
        return t * torch.logsumexp(out.logits / t, dim=1)


class GEN(Score):
    """Generalised entropy, -sum over the top-M p of p^g (1-p)^g (Liu et al., CVPR 2023).

    Probabilities are clamped at the smallest normal float so that the gradient of p^g stays
    finite where softmax underflows to 0 (the value changes by at most tiny^g).
    """

    name, pass_level, value_range = "gen", True, (float("-inf"), 0.0)

    def __init__(self, gamma: float = 0.1, m: int = 100):
        if not gamma > 0:
            raise ValueError(f"GEN gamma must be > 0, got {gamma}")
        if int(m) < 1:
            raise ValueError(f"GEN M must be >= 1, got {m}")
        self.gamma, self.m = float(gamma), int(m)

    def params(self):
        return {"gamma": self.gamma, "m": self.m}

    def from_outputs(self, out, model):
        p = out.logits.softmax(1)
        m = min(self.m, p.shape[1])
        top = p.topk(m, dim=1).values.clamp_min(torch.finfo(p.dtype).tiny)
        g = self.gamma
        return -(top.pow(g) * (1 - top).clamp_min(0).pow(g)).sum(1)


class FDBD(Score):
    """Feature distance to decision boundaries (Liu & Qin, ICML 2024).

    s = sum_{j != c} |z_c - z_j| / ||W_c - W_j||, divided by ||h|| (``normalizer="norm"``,
    the setting of the ROSS paper) or by ||h - mu|| with mu the mean training feature
    (``normalizer="train_mean"``, the original fDBD paper; pass ``train_mean``).
    """

    name, pass_level, needs_features = "fdbd", True, True
    value_range = (0.0, float("inf"))

    def __init__(self, normalizer: str = "norm", train_mean: torch.Tensor | None = None):
        if normalizer not in ("norm", "train_mean"):
            raise ValueError(f"fDBD normalizer must be 'norm' or 'train_mean', got {normalizer!r}")
        if normalizer == "train_mean" and train_mean is None:
            raise ValueError("fDBD normalizer='train_mean' needs train_mean (the mean training feature); "
                             "compute it with ross_ood.scores.feature_mean(model, train_data)")
        self.normalizer = normalizer
        self.train_mean = None if train_mean is None else torch.as_tensor(train_mean, dtype=torch.float32).flatten()

    def params(self):
        p = {"normalizer": self.normalizer}
        if self.train_mean is not None:
            # a checksum of the mean keys calibration without storing the vector
            p["train_mean_sum"] = round(float(self.train_mean.double().sum()), 10)
        return p

    def from_outputs(self, out, model):
        if out.features is None:
            raise ValueError("fDBD needs penultimate features")
        lin = model.linear_layer()
        w = lin.weight  # (K, D)
        z = out.logits
        c = z.argmax(1)  # (B,)
        zc = z.gather(1, c[:, None])  # (B, 1)
        diff_w = w[c][:, None, :] - w[None, :, :]  # (B, K, D)
        dist = diff_w.norm(dim=2)  # (B, K); zero at j = c
        num = (zc - z).abs()  # zero at j = c
        ratio = torch.where(dist > 0, num / dist.clamp_min(1e-12), torch.zeros_like(num))
        total = ratio.sum(1)
        h = out.features
        if self.normalizer == "norm":
            denom = h.norm(dim=1)
        else:
            denom = (h - self.train_mean.to(h.device, h.dtype)).norm(dim=1)
        return total / denom.clamp_min(1e-12)


def _input_grad(fn: Callable[[torch.Tensor], torch.Tensor], x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Score values and their input gradient, keeping ``x``'s graph when it has one."""
    with torch.enable_grad():
        if x.requires_grad:
            s = fn(x)
            (g,) = torch.autograd.grad(s.sum(), x, retain_graph=True)
            return s, g
        xd = x.detach().requires_grad_(True)
        s = fn(xd)
        (g,) = torch.autograd.grad(s.sum(), xd)
        return s.detach(), g


class ODIN(Score):
    """ODIN (Liang et al., ICLR 2018): MSP at temperature T of a pre-processed input.

    x~ = x - eps * sign(-grad_x log max softmax(z(x)/T)); score = max softmax(z(x~)/T).
    ``eps`` is in normalised units, i.e. eps * std_c per channel in pixel space (as the ROSS
    spec states; OpenOOD divides the step by std, which makes its eps pixel units).
    The sign is treated as a constant for differentiation, so the score is differentiable.
    """

    name, value_range = "odin", (0.0, 1.0)

    def __init__(self, temperature: float = 1000.0, eps: float = 0.0014):
        if not temperature > 0:
            raise ValueError(f"ODIN temperature must be > 0, got {temperature}")
        if eps < 0:
            raise ValueError(f"ODIN eps must be >= 0, got {eps}")
        self.temperature, self.eps = float(temperature), float(eps)

    def params(self):
        return {"temperature": self.temperature, "eps": self.eps}

    def __call__(self, model, x):
        t = self.temperature
        _, g = _input_grad(lambda v: F.log_softmax(model(v) / t, dim=1).max(1).values, x)
        x_t = x + self.eps * model.std * g.sign()
        return (model(x_t) / t).softmax(1).max(1).values


class PRO(Score):
    """Perturbation-rectified OOD score (Chen et al., CVPR 2024) around any base score.

    k steps x <- x - delta * sign(grad_x s(x)) (delta in normalised units), and the score is
    the minimum of s over the trajectory, start included.
    """

    def __init__(self, base: Score, steps: int = 5, delta: float = 0.001):
        if isinstance(base, PRO):
            raise ValueError("PRO cannot wrap PRO")
        if int(steps) < 0:
            raise ValueError(f"PRO steps must be >= 0, got {steps}")
        if delta < 0:
            raise ValueError(f"PRO delta must be >= 0, got {delta}")
        self.base, self.steps, self.delta = base, int(steps), float(delta)
        self.name = f"pro-{base.name}"
        self.needs_features = base.needs_features
        self.value_range = base.value_range

    def params(self):
        return {"steps": self.steps, "delta": self.delta, "base": self.base.spec()}

    def __call__(self, model, x):
        x_t = x
        values = []
        for _ in range(self.steps):
            s, g = _input_grad(lambda v: self.base(model, v), x_t)
            values.append(s)
            x_t = x_t - self.delta * model.std * g.sign()
        values.append(self.base(model, x_t))
        return torch.stack(values, 0).min(0).values


# ------------------------------------------------------------------ feature-space scores
class FeatureStats:
    """Penultimate features ``h`` (N, D) and labels (N,) of a model's ID *training* images: the
    statistics KNN, Mahalanobis, ViM and ReAct fit on (``fit_feature_stats``). ``fingerprint``
    (a hash of both) keys every calibration made with them."""

    def __init__(self, features: torch.Tensor, labels: torch.Tensor, source: str = "", model: str | None = None):
        import hashlib
        f = torch.as_tensor(features).detach().float().cpu()
        y = torch.as_tensor(labels).detach().long().cpu()
        if f.dim() != 2 or f.shape[0] < 2:
            raise ValueError(f"feature statistics need training features of shape (N >= 2, D), got {tuple(f.shape)}")
        if y.shape != (f.shape[0],):
            raise ValueError(f"feature statistics: {y.numel()} labels for {f.shape[0]} features")
        if not bool(torch.isfinite(f).all()):
            raise ValueError("feature statistics: the training features contain NaN or Inf")
        self.features, self.labels, self.source, self.model = f.contiguous(), y, source, model
        h = hashlib.sha256(f.numpy().tobytes())
        h.update(y.numpy().tobytes())
        self.fingerprint = h.hexdigest()[:16]

    def __len__(self) -> int:
        return self.features.shape[0]

    def __repr__(self) -> str:
        return f"FeatureStats({len(self)} x {self.features.shape[1]}, {self.source or 'unnamed'}, {self.fingerprint})"


@torch.no_grad()
def fit_feature_stats(model: ModelWrapper, data, labels: torch.Tensor | None = None, batch_size: int = 256,
                      source: str = "") -> FeatureStats:
    """The ``FeatureStats`` of ``model`` on its ID training data: a tensor (N, C, H, W) with
    ``labels``, or an iterable of (x, y) batches (a DataLoader). Clean images, eval mode."""
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("fit_feature_stats: give the labels of the training images (Mahalanobis needs classes)")
        batches = ((data[i:i + batch_size], torch.as_tensor(labels)[i:i + batch_size])
                   for i in range(0, len(data), batch_size))
    else:
        batches = data
    feats, ys = [], []
    model.eval()
    for b in batches:
        if not (isinstance(b, (tuple, list)) and len(b) >= 2):
            raise ValueError("fit_feature_stats: each batch must be (images, labels): the class means need labels")
        x = model.prepare(b[0], name="training images")
        feats.append(model.outputs(x).features.float().cpu())
        ys.append(torch.as_tensor(b[1]).long().cpu())
    if not feats:
        raise ValueError("fit_feature_stats got no training data")
    from ross_ood.model import model_fingerprint
    return FeatureStats(torch.cat(feats), torch.cat(ys), source, model_fingerprint(model))


def _need_stats(name: str, stats) -> FeatureStats:
    if not isinstance(stats, FeatureStats):
        raise ValueError(f"score {name!r} needs the ID training statistics: pass stats=ross_ood.fit_feature_stats("
                         "model, train_data) (the command line fits them on the benchmark's training set)")
    return stats


def _linear(model: ModelWrapper, h: torch.Tensor) -> torch.Tensor:
    """The last linear layer applied to (modified) penultimate features."""
    lin = model.linear_layer()
    return F.linear(h, lin.weight.to(h.dtype), None if lin.bias is None else lin.bias.to(h.dtype))


class _StatsScore(Score):
    """A pass-level score of the features (and logits) with fitted training statistics. Used on
    another model than the one its statistics were fitted on, it refuses to score."""

    pass_level, needs_features = True, True
    _checked: int | None = None  # id() of the last model found to match the statistics

    def _check_model(self, model: ModelWrapper) -> None:
        if self.stats.model is None or self._checked == id(model):
            return
        from ross_ood.model import model_fingerprint
        have = model_fingerprint(model)
        if have != self.stats.model:
            raise ValueError(f"{self.name}: its training statistics were fitted on model {self.stats.model!r}, "
                             f"not on this one ({have!r}); fit them on this model (fit_feature_stats)")
        self._checked = id(model)

    def from_outputs(self, out, model):
        self._check_model(model)
        return self._from_outputs(out, model)

    def params(self):
        return {**self._own_params(), **({"stats": self.stats.fingerprint} if self.stats is not None else {})}

    def _own_params(self) -> dict:
        return {}


class KNN(_StatsScore):
    """Deep nearest neighbours (Sun, Ming, Zhu & Li, ICML 2022): minus the L2 distance from the
    normalised feature h / ||h|| to its ``k``-th nearest normalised training feature."""

    name = "knn"
    value_range = (-2.0, 0.0)

    def __init__(self, k: int = 50, stats: FeatureStats | None = None):
        self.stats = _need_stats(self.name, stats)
        if isinstance(k, bool) or int(k) != k or not 1 <= int(k) <= len(self.stats):
            raise ValueError(f"KNN k must be an integer in [1, {len(self.stats)}] (training features), got {k!r}")
        self.k = int(k)
        self.bank = F.normalize(self.stats.features, dim=1)

    def _own_params(self):
        return {"k": self.k}

    def _from_outputs(self, out, model):
        h = F.normalize(out.features, dim=1)
        bank = self.bank.to(h.device, h.dtype)
        # squared distances of unit vectors, 2 - 2 cos; the k smallest by topk (differentiable)
        d2 = (2 - 2 * h @ bank.T).clamp_min(0)
        kth = d2.topk(self.k, dim=1, largest=False).values[:, -1]
        return -kth.clamp_min(1e-12).sqrt()


class Mahalanobis(_StatsScore):
    """Mahalanobis distance score without input pre-processing (Lee, Lee, Lee & Shin, NeurIPS
    2018; OpenOOD's MDS): class means mu_c and one shared covariance S of the training features;
    score = -min_c (h - mu_c)^T S^+ (h - mu_c) (S^+ the pseudo-inverse)."""

    name = "mahalanobis"
    value_range = (float("-inf"), 0.0)

    def __init__(self, stats: FeatureStats | None = None):
        self.stats = _need_stats(self.name, stats)
        f, y = self.stats.features.double(), self.stats.labels
        classes = torch.unique(y)
        self.means = torch.stack([f[y == c].mean(0) for c in classes])  # (K, D), classes in label order
        centred = f - self.means[torch.searchsorted(classes, y)]
        cov = centred.T @ centred / len(f)
        self.precision = torch.linalg.pinv(cov, hermitian=True).float()
        self.means = self.means.float()

    def _from_outputs(self, out, model):
        h = out.features
        diff = h[:, None, :] - self.means.to(h.device, h.dtype)[None]  # (B, K, D)
        d = torch.einsum("bkd,de,bke->bk", diff, self.precision.to(h.device, h.dtype), diff)
        return -d.min(1).values


def vim_dim(d: int) -> int:
    """ViM's principal-subspace dimension for D-dimensional features, the rule of Wang et al.'s
    code: 1000 for D >= 2048, 512 for D >= 768, else D // 2 (32 for the CIFAR ResNets' 64)."""
    return 1000 if d >= 2048 else 512 if d >= 768 else d // 2


class ViM(_StatsScore):
    """Virtual-logit matching (Wang, Li, Feng & Zhang, CVPR 2022): with the origin
    o = -W^+ b, the principal subspace of the training features' (uncentred about o) covariance of
    dimension ``dim`` (``vim_dim``), the residual r(h) = ||(h - o) R|| onto its complement R and
    alpha = mean max-logit / mean r over the training set: score = logsumexp(z) - alpha * r(h)."""

    name = "vim"

    def __init__(self, dim: int | None = None, stats: FeatureStats | None = None, model: ModelWrapper | None = None,
                 alpha: float | None = None, origin: torch.Tensor | None = None):
        self.stats = _need_stats(self.name, stats)
        f = self.stats.features.double()
        d = f.shape[1]
        self.dim = vim_dim(d) if dim is None else int(dim)
        if not 1 <= self.dim < d:
            raise ValueError(f"ViM dim must be in [1, {d - 1}] for {d}-d features, got {dim!r}")
        if model is None and (alpha is None or origin is None):
            raise ValueError("ViM needs model= (its last linear layer gives the origin and alpha)")
        if model is not None:
            lin = model.linear_layer()
            w = lin.weight.detach().double().cpu()
            b = torch.zeros(w.shape[0], dtype=torch.float64) if lin.bias is None else lin.bias.detach().double().cpu()
            origin = -torch.linalg.pinv(w) @ b
        self.origin = torch.as_tensor(origin, dtype=torch.float64)
        c = f - self.origin
        vals, vecs = torch.linalg.eigh(c.T @ c / len(c))  # ascending eigenvalues
        self.null = vecs[:, : d - self.dim].contiguous()  # the complement of the top-dim subspace
        if alpha is None:
            logits = (f @ w.T + b)
            alpha = float(logits.max(1).values.mean() / (c @ self.null).norm(dim=1).mean())
        self.alpha = float(alpha)
        self.origin, self.null = self.origin.float(), self.null.float()

    def _own_params(self):
        return {"dim": self.dim, "alpha": round(self.alpha, 10)}

    def _from_outputs(self, out, model):
        h = out.features
        r = ((h - self.origin.to(h.device, h.dtype)) @ self.null.to(h.device, h.dtype)).norm(dim=1)
        return torch.logsumexp(out.logits, dim=1) - self.alpha * r


class ReAct(_StatsScore):
    """ReAct (Sun, Guo & Li, NeurIPS 2021): energy of the logits recomputed from the features
    clipped at c, the ``percentile``-th percentile of all training activations."""

    name = "react"

    def __init__(self, percentile: float = 90.0, stats: FeatureStats | None = None):
        self.stats = _need_stats(self.name, stats)
        if not 0 < float(percentile) < 100:
            raise ValueError(f"ReAct percentile must be in (0, 100), got {percentile!r}")
        self.percentile = float(percentile)
        import numpy as np
        self.clip = float(np.percentile(self.stats.features.numpy().ravel(), self.percentile))

    def _own_params(self):
        return {"percentile": self.percentile}

    def _from_outputs(self, out, model):
        return torch.logsumexp(_linear(model, out.features.clamp(max=self.clip)), dim=1)


def _top_share(h: torch.Tensor, percentile: float) -> tuple[torch.Tensor, torch.Tensor]:
    """(h with all but its top n - round(n p / 100) entries per row zeroed, exp(sum h / sum kept)):
    the pruning and the scale of ASH-S and SCALE (as their authors' code, on the pooled features)."""
    n = h.shape[1]
    k = max(1, n - int(round(n * percentile / 100.0)))
    v, i = h.topk(k, dim=1)
    kept = torch.zeros_like(h).scatter(1, i, v)
    scale = torch.exp(h.sum(1) / kept.sum(1).clamp_min(1e-12))
    return kept, scale


class ASH(Score):
    """ASH-S, activation shaping (Djurisic, Bozanic, Ashok & Liu, ICLR 2023): keep each
    feature vector's top (100 - ``percentile``)% entries, scale them by exp(sum h / sum kept), and
    take the energy of the logits recomputed from the shaped features. No training statistics."""

    name, pass_level, needs_features = "ash", True, True

    def __init__(self, percentile: float = 90.0):
        if not 0 < float(percentile) < 100:
            raise ValueError(f"{self.name} percentile must be in (0, 100), got {percentile!r}")
        self.percentile = float(percentile)

    def params(self):
        return {"percentile": self.percentile}

    def from_outputs(self, out, model):
        kept, scale = _top_share(out.features, self.percentile)
        return torch.logsumexp(_linear(model, kept * scale[:, None]), dim=1)


class SCALE(ASH):
    """SCALE (Xu, Chen, Franchi & Yao, ICLR 2024): ASH-S's scale exp(sum h / sum of the top
    (100 - ``percentile``)% entries) applied to the whole, unpruned feature vector; energy of the
    recomputed logits. No training statistics."""

    name = "scale"

    def __init__(self, percentile: float = 85.0):
        super().__init__(percentile)

    def from_outputs(self, out, model):
        _, scale = _top_share(out.features, self.percentile)
        return torch.logsumexp(_linear(model, out.features * scale[:, None]), dim=1)


_REGISTRY: dict[str, type[Score]] = {
    "msp": MSP, "maxlogit": MaxLogit, "energy": Energy, "gen": GEN, "odin": ODIN, "fdbd": FDBD,
    "knn": KNN, "mahalanobis": Mahalanobis, "vim": ViM, "react": ReAct, "ash": ASH, "scale": SCALE,
}
#: scores fitted on ID training statistics (``FeatureStats``; ViM also needs the model)
STATS_SCORES = ("knn", "mahalanobis", "vim", "react")
SCORE_NAMES = tuple(_REGISTRY) + tuple(f"pro-{n}" for n in _REGISTRY if n != "odin")


def is_score_name(name: str) -> bool:
    """Whether ``name`` is a known score name (without building it: some need statistics)."""
    return isinstance(name, str) and name.strip().lower() in SCORE_NAMES


def get_score(name: str | Score, **params) -> Score:
    """A score by name (``msp``, ``maxlogit``, ``energy``, ``gen``, ``odin``, ``fdbd``,
    ``pro-<name>``), with its parameters as keyword arguments. A ``Score`` passes through."""
    if isinstance(name, Score):
        if params:
            raise ValueError("parameters cannot be given with a Score object")
        return name
    if not isinstance(name, str):
        raise TypeError(f"score name must be a string, got {type(name).__name__}")
    key = name.strip().lower()
    if key.startswith("pro-"):
        pro_keys = {"steps", "delta"}
        pro_params = {k: v for k, v in params.items() if k in pro_keys}
        base = get_score(key[4:], **{k: v for k, v in params.items() if k not in pro_keys})
        return PRO(base, **pro_params)
    if key not in _REGISTRY:
        raise ValueError(f"unknown score name {name!r}; known: {', '.join(SCORE_NAMES)}")
    try:
        return _REGISTRY[key](**params)
    except TypeError as e:
        raise ValueError(f"bad parameters for score {key!r}: {e}") from None


def score_from_spec(spec: dict) -> Score:
    """Inverse of ``Score.spec()`` (used when loading a saved detector)."""
    spec = dict(spec)
    name = spec.pop("name")
    if name.startswith("pro-"):
        base = score_from_spec(spec.pop("base"))
        return PRO(base, **spec)
    spec.pop("train_mean_sum", None)
    if name in STATS_SCORES:
        raise ValueError(f"a saved {name} score needs its training statistics again: build it with "
                         "get_score(name, stats=...) and pass it as base=")
    if name == "fdbd" and spec.get("normalizer") == "train_mean":
        raise ValueError("a saved fDBD with normalizer='train_mean' needs its train_mean again: "
                         "build the score yourself and pass it as base=")
    return get_score(name, **spec)


def base_score(name: str | Score, model: ModelWrapper, x: torch.Tensor, *, check: bool = True,
               **params) -> torch.Tensor:
    """Score a batch with a base score, higher = in-distribution.

    Parameters
    ----------
    name : str or Score
        ``msp``, ``maxlogit``, ``energy`` (``temperature``), ``gen`` (``gamma``, ``m``), ``odin``
        (``temperature``, ``eps`` in normalised units), ``fdbd`` (``normalizer``,
        ``train_mean``), ``pro-<score>`` (``steps``, ``delta``), or a ``Score`` object.
    model : ModelWrapper
        The wrapped classifier (``ross_ood.wrap``).
    x : torch.Tensor
        Images (B, C, H, W) in [0, 1]; float64 is cast to the model's type.
    check : bool
        Validate ``x`` (shape, finite pixels in [0, 1]) first.
    **params
        The score's parameters (see ``name``).

    Returns
    -------
    torch.Tensor
        (B,) scores, differentiable in ``x``.
    """
    score = get_score(name, **params)
    if not isinstance(model, ModelWrapper):
        raise TypeError("model must be a ross_ood ModelWrapper: use ross_ood.wrap(net, mean, std)")
    if check:
        model.check(x)
    return score(model, x.to(model.device, model.mean.dtype))


@torch.no_grad()
def feature_mean(model: ModelWrapper, batches) -> torch.Tensor:
    """Mean penultimate feature over an iterable of pixel-space batches (for fDBD train_mean)."""
    total, count = None, 0
    for b in batches:
        x = b[0] if isinstance(b, (tuple, list)) else b
        h = model.outputs(x.to(model.device)).features.double()
        total = h.sum(0) if total is None else total + h.sum(0)
        count += h.shape[0]
    if count == 0:
        raise ValueError("feature_mean got no data")
    return (total / count).float().cpu()
