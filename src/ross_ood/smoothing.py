"""Smoothing: chunked noisy scoring, the statistics of noisy scores, the ROSS gate, tau.

This module holds the formulas once; the detector classes (``detectors``) call them, and
every command goes through the detector classes.

By default noise is drawn on the CPU in float32 and moved to the model's device, so CPU and
GPU runs see the same noise. ``noise_device="model"`` draws it on the model's device with
one device generator per pair instead: for large images on a GPU the CPU draw would cost
more than the forward passes. It is still keyed the same way (batch-, chunk- and
process-independent; see ``noise``), but a GPU's generator gives other numbers.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import numpy as np
import torch

from ross_ood.model import ModelWrapper
from ross_ood.noise import channel_scale, content_keys, draw_noise
from ross_ood.scores import Score
from ross_ood.scores.base import score_outputs, score_values
from ross_ood.validate import NOISE_DEVICES, SPACES, check_choice, check_int, check_number

__all__ = ["Smoothing", "noisy_scores", "median_stats", "quantile_index", "lower_quantile", "soft_median", "ross_gate",
           "calibrate_tau"]


@dataclass(frozen=True)
class Smoothing:
    """How noisy copies are drawn: ``n_samples`` copies at noise level ``sigma`` (in
    ``noise_space`` units), keyed by ``seed``, evaluated ``chunk_size`` at a time."""

    n_samples: int = 25
    sigma: float = 0.05
    noise_space: str = "pixel"
    seed: int = 0
    chunk_size: int = 128
    noise_device: str = "cpu"

    def __post_init__(self):
        object.__setattr__(self, "n_samples", check_int("n_samples", self.n_samples))
        object.__setattr__(self, "sigma", check_number("sigma", self.sigma))
        object.__setattr__(self, "chunk_size", check_int("chunk_size", self.chunk_size))
        object.__setattr__(self, "seed", check_int("seed", self.seed, minimum=0))
        check_choice("noise_space", self.noise_space, SPACES)
        if self.sigma > 1:
            unit = "the [0, 1] pixel range" if self.noise_space == "pixel" else "each channel's std"
            raise ValueError(f"sigma {self.sigma:g} is in units of {unit} (0.12 is 30.6/255 in pixel space), so "
                             f"{self.sigma:g} would drown the image: give at most 1 (a 0-255 value divided by 255: "
                             f"{self.sigma / 255:.4g})")
        check_choice("noise_device", self.noise_device, NOISE_DEVICES)

    def key(self) -> dict:
        """What determines the noise (chunk_size does not; noise_device only off the CPU)."""
        k = {"n_samples": self.n_samples, "sigma": self.sigma, "noise_space": self.noise_space, "seed": self.seed}
        if self.noise_device != "cpu":
            k["noise_device"] = self.noise_device
        return k


def noisy_scores(model: ModelWrapper, x: torch.Tensor, scores: Sequence[Score], smoothing: Smoothing,
                 keys: Sequence[int] | None = None, salt: int = 0,
                 draws: torch.Tensor | None = None) -> dict[str, torch.Tensor]:
    """Scores of ``smoothing.n_samples`` noisy copies of every input: ``{score.name: (B, N)}``.

    The ``B * N`` noisy images are evaluated ``chunk_size`` at a time, so peak memory does
    not grow with N. Pass-level scores share one forward pass per chunk. In ``pixel`` space
    the noisy images are clipped to [0, 1]; in ``normalized`` space they are not (as the
    ROSS authors). Differentiable in ``x`` when called with gradients enabled. ``salt``
    selects an independent noise stream (attacks use one per EOT draw). ``draws`` (B, M)
    integers in [0, N) picks which copies to score per input (default: all N): column c of
    the result is then the copy ``draws[:, c]`` of the full matrix, the same noisy image.
    """
    sm, b, n = smoothing, x.shape[0], smoothing.n_samples
    gen_device = "cpu" if sm.noise_device == "cpu" else x.device
    if keys is None:
        keys = content_keys(x)
    elif len(keys) != b:
        raise ValueError(f"got {len(keys)} keys for {b} inputs")
    names = [s.name for s in scores]
    if len(set(names)) != len(names):
        raise ValueError(f"duplicate score names {names}")
    scale = channel_scale(model.std, sm.sigma, sm.noise_space).to(x.device, x.dtype)
    if draws is None:
        pairs_i, pairs_j = np.repeat(np.arange(b), n), np.tile(np.arange(n), b)
    else:
        draws = np.asarray(torch.as_tensor(draws).cpu(), np.int64)
        if draws.ndim != 2 or len(draws) != b or draws.size and not (0 <= draws.min() and draws.max() < n):
            raise ValueError(f"draws must be (B, M) = ({b}, M) integers in [0, {n}), got shape {draws.shape}")
        n = draws.shape[1]
        pairs_i, pairs_j = np.repeat(np.arange(b), n), draws.reshape(-1)
    shared = [s for s in scores if s.pass_level]
    own = [s for s in scores if not s.pass_level]
    need_feats = any(s.needs_features for s in shared)
    parts: dict[str, list[torch.Tensor]] = {s.name: [] for s in scores}
    for start in range(0, b * n, sm.chunk_size):
        ii, jj = pairs_i[start:start + sm.chunk_size], pairs_j[start:start + sm.chunk_size]
        eps = draw_noise([keys[i] for i in ii], jj.tolist(), x.shape[1:], sm.seed, salt, gen_device)
        xn = x[torch.as_tensor(ii, device=x.device)] + eps.to(x.device, x.dtype) * scale
        if sm.noise_space == "pixel":
            xn = xn.clamp(0.0, 1.0)
        if shared:
            out = model.outputs(xn, features=need_feats)
            for s in shared:
                parts[s.name].append(score_outputs(s, out, model))
        for s in own:
            parts[s.name].append(score_values(s, model, xn))
    return {k: torch.cat(v).view(b, n) for k, v in parts.items()}


def median_stats(s: torch.Tensor) -> dict[str, torch.Tensor]:
    """Median m (lower middle value for even N, as ``torch.median``), D = mean |s_i - m|,
    and CoV = D / m of a (B, N) matrix of noisy scores, computed in float64."""
    if s.dim() != 2 or s.shape[1] < 1:
        raise ValueError(f"noisy scores must have shape (B, N) with N >= 1, got {tuple(s.shape)}")
    s = s.double()
    m = s.median(dim=1).values
    d = (s - m[:, None]).abs().mean(1)
    # CoV = D / m as the paper; m = 0 would divide by zero, so it divides by 1e-12 there
    cov = d / torch.where(m == 0, torch.full_like(m, 1e-12), m)
    return {"median": m, "D": d, "cov": cov}


def quantile_index(n: int, q: float) -> int:
    """0-based rank of the empirical q-quantile of n values: floor(q (n - 1)), the "lower"
    convention (q = 1/2 gives ``torch.median``'s lower middle value)."""
    return int(np.floor(q * (n - 1) + 1e-9))


def lower_quantile(s: torch.Tensor, q: float) -> torch.Tensor:
    """The empirical q-quantile of each row of a (B, N) matrix (``quantile_index``), float64,
    differentiable (its gradient reaches the one sample at that rank)."""
    if s.dim() != 2 or s.shape[1] < 1:
        raise ValueError(f"noisy scores must have shape (B, N) with N >= 1, got {tuple(s.shape)}")
    return s.double().kthvalue(quantile_index(s.shape[1], q) + 1, dim=1).values


def soft_median(s: torch.Tensor, width: float = 0.1, q: float = 0.5) -> torch.Tensor:
    """A soft quantile of a (B, N) matrix: the sorted values averaged with Gaussian weights
    centred on the rank of the q-quantile (standard deviation ``width`` x N ranks). Unlike the
    order statistic, whose gradient reaches one sample, its gradient spreads over the samples near it."""
    n = s.shape[1]
    ranks = torch.arange(n, dtype=s.dtype, device=s.device)
    w = torch.exp(-0.5 * ((ranks - q * (n - 1)) / max(width * n, 0.5)) ** 2)
    return (s.sort(dim=1).values * (w / w.sum())).sum(1)


def ross_gate(m: torch.Tensor, d: torch.Tensor, tau: float, lam: float) -> torch.Tensor:
    """S = min(m, tau) + max(m - tau, 0) * (1 + lam / (D + 1e-12)).

    Also the gate of the certified bounds: m = -inf / +inf and D = +inf (abstentions) give
    -inf / +inf / no boost, never NaN."""
    tau_t = torch.as_tensor(tau, dtype=m.dtype, device=m.device)
    return torch.minimum(m, tau_t) + (m - tau_t).clamp_min(0) * (1 + lam / (d + 1e-12))


def calibrate_tau(values, quantile: float = 0.05) -> float:
    """The ``quantile`` of ``values`` (numpy linear interpolation, float64)."""
    v = np.asarray(values.detach().cpu() if isinstance(values, torch.Tensor) else values, dtype=np.float64).ravel()
    if v.size == 0:
        raise ValueError("cannot calibrate on empty ID validation data")
    if not np.isfinite(v).all():
        raise ValueError(f"ID validation scores contain {int((~np.isfinite(v)).sum())} non-finite values")
    if not 0 < quantile < 1:
        raise ValueError(f"quantile must be in (0, 1), got {quantile}")
    return float(np.quantile(v, quantile))
