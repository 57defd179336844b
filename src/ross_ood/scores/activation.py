"""Scores of reshaped activations: ASH and SCALE.

- ASH-S: keep the top (100 - p)% of the penultimate activations, rescale them by exp(sum all /
  sum kept), score by Energy. Djurisic et al., "Extremely Simple Activation Shaping for
  Out-of-Distribution Detection", ICLR 2023; reference: github.com/andrijazz/ash.
- SCALE: the same rescaling without pruning. Xu et al., "Scaling for Training Time and Post-hoc
  Out-of-distribution Detection Enhancement", ICLR 2024; reference: github.com/kai422/SCALE."""
from __future__ import annotations

import torch

from ross_ood.scores.base import Score
from ross_ood.scores.stats import _linear

__all__ = ['ASH', 'SCALE']


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
