"""Scores fitted on ID training statistics: KNN, Mahalanobis, ViM, ReAct (``FeatureStats``).

- KNN = -(distance of the normalised feature to its k-th nearest training feature). Sun et al.,
  "Out-of-Distribution Detection with Deep Nearest Neighbors", ICML 2022; reference:
  github.com/deeplearning-wisc/knn-ood.
- Mahalanobis = -min_c (h - mu_c)^T Sigma^-1 (h - mu_c), class means and a shared covariance. Lee et
  al., "A Simple Unified Framework for Detecting Out-of-Distribution Samples and Adversarial
  Attacks", NeurIPS 2018; reference: github.com/pokaxpoka/deep_Mahalanobis_detector.
- ViM = Energy - alpha ||h_residual||, the residual off the principal subspace of the training
  features. Wang et al., "ViM: Out-Of-Distribution with Virtual-logit Matching", CVPR 2022;
  reference: github.com/haoqiwang/vim.
- ReAct = Energy of the logits of features clipped at a training percentile. Sun, Guo & Li,
  "ReAct: Out-of-distribution Detection With Rectified Activations", NeurIPS 2021; reference:
  github.com/deeplearning-wisc/react."""
from __future__ import annotations

import torch
import torch.nn.functional as F

from ross_ood.model import ModelWrapper
from ross_ood.scores.base import Score

__all__ = ['FeatureStats', 'fit_feature_stats', 'KNN', 'Mahalanobis', 'ViM', 'ReAct', 'vim_dim']


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
                      source: str = "", progress: bool | None = None) -> FeatureStats:
    """The ``FeatureStats`` of ``model`` on its ID training data: a tensor (N, C, H, W) with
    ``labels``, or an iterable of (x, y) batches (a DataLoader). Clean images, eval mode.
    ``progress``: a bar with the time left (None: when stderr is a terminal; ``ross_ood.progress``)."""
    from ross_ood.progress import bars, count_images
    from ross_ood.progress import progress as bar
    if isinstance(data, torch.Tensor):
        if labels is None:
            raise ValueError("fit_feature_stats: give the labels of the training images (Mahalanobis needs classes)")
        batches = ((data[i:i + batch_size], torch.as_tensor(labels)[i:i + batch_size])
                   for i in range(0, len(data), batch_size))
    else:
        batches = data
    feats, ys = [], []
    model.eval()
    with bar(bars(progress), "feature stats", count_images(data)) as update, torch.no_grad():
        for b in batches:
            if not (isinstance(b, (tuple, list)) and len(b) >= 2):
                raise ValueError("fit_feature_stats: each batch must be (images, labels): the class means need labels")
            x = model.prepare(b[0], name="training images")
            feats.append(model.outputs(x).features.float().cpu())
            ys.append(torch.as_tensor(b[1]).long().cpu())
            if update:
                update(len(x))
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
        if len(classes) == len(f) or not bool(centred.abs().max() > 0):
            raise ValueError(f"Mahalanobis needs classes with at least 2 training images to estimate its shared "
                             f"covariance; the statistics ({self.stats.source or 'given'}) have {len(f)} image(s) "
                             f"in {len(classes)} class(es), every one alone in its class, so the covariance would be "
                             "zero and every score equal")
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
