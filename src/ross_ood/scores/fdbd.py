"""fDBD: feature distance to the decision boundaries.

fDBD(x) = mean over c' != c of |z_c - z_c'| / ||W_c - W_c'|| divided by ||h - mu|| (the
``normalizer``: mu = 0 or the mean training feature). Liu & Qin, "Fast Decision Boundary based
Out-of-Distribution Detector", ICML 2024; reference: github.com/litianliu/fDBD-OOD."""
from __future__ import annotations

import torch

from ross_ood.model import ModelWrapper
from ross_ood.scores.base import Score

__all__ = ['FDBD', 'feature_mean', 'class_distances']

_DISTANCES: dict = {}


def class_distances(w: torch.Tensor) -> torch.Tensor:
    """``||W_i - W_j||`` for every pair of classes, (K, K), computed once per weight tensor and
    version (a weight changed in place is recomputed), row block by row block: an input's fDBD then
    gathers its predicted class's row instead of building a (B, K, D) difference (655 MB for 128
    inputs at 1,000 classes and 1,280 features). Not differentiable in W: fDBD's gradient in the
    input never goes through W."""
    import weakref
    key = (w._version, w.data_ptr(), tuple(w.shape), w.dtype, str(w.device))
    hit = _DISTANCES.get(id(w))
    if hit is not None and hit[0]() is w and hit[1] == key:  # the same live tensor, unchanged
        return hit[2]
    with torch.no_grad():
        wd = w.detach()
        step = max(1, (1 << 24) // max(1, wd.numel()))  # rows per block: at most ~16 M differences at once
        dist = torch.cat([(wd[i:i + step, None, :] - wd[None, :, :]).norm(dim=2) for i in range(0, len(wd), step)])
    if len(_DISTANCES) > 8:  # a few networks at a time; never grows without bound
        _DISTANCES.clear()
    _DISTANCES[id(w)] = (weakref.ref(w), key, dist)
    return dist


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
        z = out.logits
        c = z.argmax(1)  # (B,)
        zc = z.gather(1, c[:, None])  # (B, 1)
        dist = class_distances(lin.weight)[c]  # (B, K); zero at j = c
        num = (zc - z).abs()  # zero at j = c
        ratio = torch.where(dist > 0, num / dist.clamp_min(1e-12), torch.zeros_like(num))
        total = ratio.sum(1)
        h = out.features
        if self.normalizer == "norm":
            denom = h.norm(dim=1)
        else:
            denom = (h - self.train_mean.to(h.device, h.dtype)).norm(dim=1)
        return total / denom.clamp_min(1e-12)


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
