"""Scores of the logits: MSP, MaxLogit, Energy, GEN (one forward pass each).

- MSP = max_c p_c. Hendrycks & Gimpel, "A Baseline for Detecting Misclassified and
  Out-of-Distribution Examples", ICLR 2017; reference: github.com/hendrycks/error-detection,
  OpenOOD ``openood/postprocessors/base_postprocessor.py``.
- MaxLogit = max_c z_c. Hendrycks et al., "Scaling Out-of-Distribution Detection for Real-World
  Settings", ICML 2022; reference: OpenOOD ``openood/postprocessors/mls_postprocessor.py``.
- Energy = T log sum_c exp(z_c / T). Liu et al., "Energy-based Out-of-distribution Detection",
  NeurIPS 2020; reference: github.com/wetliu/energy_ood, OpenOOD ``ebo_postprocessor.py``.
- GEN = -sum over the top-M p of p^g (1 - p)^g. Liu et al., "GEN: Pushing the Limits of
  Softmax-Based Out-of-Distribution Detection", CVPR 2023; reference: OpenOOD ``gen_postprocessor.py``."""
from __future__ import annotations

import torch

from ross_ood.scores.base import Score

__all__ = ['MSP', 'MaxLogit', 'Energy', 'GEN']


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
