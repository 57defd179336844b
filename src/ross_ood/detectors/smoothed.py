"""Smoothed detectors: median smoothing and ROSS, each implemented once.

Both read the (B, N) matrix of base scores of N Gaussian-noised copies of each input. The
API computes it from images (``features``); the command-line pipeline computes it once per
base score, caches it and passes it to ``fit_features`` / ``score_features``. Attacks take
their differentiable surrogates (``surrogate``) and certificates their bounds
(``certified_bounds``) from the same classes.
"""
from __future__ import annotations

import warnings
from typing import Callable, Sequence

import numpy as np
import torch

import ross_ood.certify as certify
from ross_ood.detectors.base import Detector, FeatureUnit, NotFittedError, register
from ross_ood.model import ModelWrapper
from ross_ood.noise import content_keys
from ross_ood.scores import Score
from ross_ood.smoothing import (
    Smoothing,
    calibrate_tau,
    lower_quantile,
    median_stats,
    noisy_scores,
    quantile_index,
    ross_gate,
    soft_median,
)
from ross_ood.validate import check_certify_args, check_fraction, check_number, check_ross_noise

__all__ = ["MedianSmoothing", "QuantileSmoothing", "ROSS", "SURROGATES", "DEFAULT_Q", "JUDGE_SALT"]

#: the statistics an adaptive attack on a smoothed detector can climb
SURROGATES = ("median", "mean", "softmedian", "ross")
#: the noise stream of the attack judge (``MedianSmoothing.judge``): apart from the evaluation's
#: (salt 0) and from the attack's gradient draws (salts 1, 2, ...)
JUDGE_SALT = 1 << 30
#: the default percentile q of ``QuantileSmoothing`` (``quantile-<score>``)
DEFAULT_Q = 0.25


@register
class MedianSmoothing(Detector):
    """Median of the base score over ``n_samples`` Gaussian-noised copies of the input.

    Parameters
    ----------
    model : ModelWrapper
        The wrapped classifier (``ross_ood.wrap``); images in [0, 1].
    base : str or Score
        Base score name (``ross_ood.SCORE_NAMES``) or a ``Score`` object.
    n_samples : int
        Noisy copies N per input (odd N avoids the lower-middle convention of even N).
    sigma : float
        Noise standard deviation, >= 0, in ``noise_space`` units: pixel units of [0, 1]
        images (``"pixel"``; noisy copies clipped to [0, 1]), or multiples of the model's
        per-channel std (``"normalized"``; sigma * std_c, unclipped, as the ROSS paper).
    noise_space : {"pixel", "normalized"}
        See ``sigma``.
    seed : int
        Keys the noise: draw j of an image depends only on (seed, the image's pixels or the
        key passed with it, j), never on batching, order or process count.
    chunk_size : int
        Noisy images per forward pass (bounds memory; does not change the numbers).
    base_params : dict, optional
        Parameters of the base score.
    accept_rate : float
        Share of the ID validation data that ``predict`` accepts as ID.
    batch_size : int
        Images per batch in ``fit``.
    noise_device : {"cpu", "model"}
        Where noise is drawn: the CPU (same numbers on every device) or the model's device.
    """

    kind = "median"

    def __init__(self, model: ModelWrapper, *, base: str | Score = "fdbd", n_samples: int = 25,
                 sigma: float = 0.05, noise_space: str = "pixel", seed: int = 0, chunk_size: int = 128,
                 base_params: dict | None = None, accept_rate: float = 0.95, batch_size: int = 128,
                 noise_device: str = "cpu"):
        super().__init__(model, base=base, base_params=base_params, accept_rate=accept_rate, batch_size=batch_size)
        self.n_samples, self.sigma, self.noise_space = n_samples, sigma, noise_space
        self.seed, self.chunk_size, self.noise_device = seed, chunk_size, noise_device
        self._validate()

    def percentile(self) -> float:
        """The percentile of the noisy scores that this detector reports and certifies."""
        return 0.5

    def smoothing(self, n_samples: int | None = None) -> Smoothing:
        """The noise settings (validated), optionally with another number of copies."""
        return Smoothing(self.n_samples if n_samples is None else n_samples, self.sigma, self.noise_space,
                         self.seed, self.chunk_size, self.noise_device)

    def _validate(self) -> None:
        super()._validate()
        self.smoothing()

    def config(self) -> dict:
        sm = self.smoothing()
        return {**super().config(), **sm.key()}

    @classmethod
    def from_config(cls, model, base, cfg):
        return cls(model, base=base, accept_rate=cfg["accept_rate"], **_smoothing_args(cfg))

    def unit(self) -> FeatureUnit:
        return FeatureUnit(self.base, self.smoothing())

    def _features(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> torch.Tensor:
        """The (B, N) matrix of noisy base scores."""
        return self.noisy(x, keys)

    def _feature_columns(self) -> int:
        return int(self.n_samples)

    def noisy(self, x: torch.Tensor, keys=None, n_samples: int | None = None, salt: int = 0,
              draws: torch.Tensor | None = None) -> torch.Tensor:
        """Base scores of noisy copies (B, N); ``salt`` picks an independent noise stream,
        ``draws`` (B, M) only those copies (see ``smoothing.noisy_scores``)."""
        return noisy_scores(self.model, x, [self.base], self.smoothing(n_samples), keys, salt,
                            draws)[self.base.name]

    def _score(self, feats: torch.Tensor) -> torch.Tensor:
        return lower_quantile(feats, self.percentile())

    def _surrogate(self, what: str, attack_n: int | None = None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """``f(x, draw)`` over ``attack_n`` noisy copies drawn afresh for every draw:
        ``median`` (this detector's own order statistic of the noisy scores: the median for
        median smoothing and ROSS (not the gate), the q-quantile for ``QuantileSmoothing``;
        see ``_order_statistic``), ``mean`` and ``softmedian`` (smooth surrogates whose gradient
        reaches every copy; the soft version is centred on the detector's percentile),
        ``base`` (the unsmoothed score), and for ROSS ``ross`` (the gated score itself, with
        the fitted tau)."""
        if what == "base":
            return super()._surrogate(what)
        allowed = SURROGATES if isinstance(self, ROSS) else SURROGATES[:3]
        if what not in allowed:
            raise ValueError(f"{type(self).__name__} has no attack surrogate {what!r}; it has "
                             f"{', '.join(('base',) + allowed)}")
        if what == "median":
            return self._order_statistic(attack_n)
        stat = {"mean": lambda s: s.double().mean(1),
                "softmedian": lambda s: soft_median(s.double(), q=self.percentile()), "ross": self._score}[what]
        return lambda x, draw: stat(self.noisy(x, n_samples=attack_n, salt=1 + draw))

    def judge(self, judge_n: int | None = None) -> Callable[[torch.Tensor, Sequence[int]], torch.Tensor]:
        """The attack's judge ``f(x, keys) -> (B,)``: this detector's own score (``_score``: the
        median, the q-quantile or the ROSS gate) of ``judge_n`` noisy copies (default: the
        detector's N) drawn on *common random numbers*: noise keyed by ``keys``, the keys of the
        clean inputs, in a stream of its own (``JUDGE_SALT``). Every iterate of one input is
        judged on the same noise, so two iterates are compared by their inputs, not by their
        draws; and the judge's noise is independent of the evaluation's (keyed by the
        adversarial image, salt 0), so selecting on it does not overfit the reported score."""
        def f(x: torch.Tensor, keys: Sequence[int]) -> torch.Tensor:
            with torch.no_grad():
                return self._score(self.noisy(x, list(keys), judge_n, JUDGE_SALT)).double()
        return f

    def _order_statistic(self, attack_n: int | None) -> Callable[[torch.Tensor, int], torch.Tensor]:
        """The ``percentile()`` order statistic of ``attack_n`` noisy copies (the median for
        median smoothing and ROSS, the q-quantile for quantile smoothing), as ``f(x, draw)``.

        Its gradient reaches exactly one copy, the one at that rank. So with gradients on, all
        copies are scored without autograd, and only the selected copy of each input is
        scored again with it (the same noisy image: noise is keyed by (image, copy)). Value
        and gradient are those of autograd through ``lower_quantile`` of all copies (up to
        float rounding of a different batch), for 1 backward pass per input instead of
        ``attack_n``, and 1 extra forward."""
        k = quantile_index(self.smoothing(attack_n).n_samples, self.percentile())

        def f(x: torch.Tensor, draw: int) -> torch.Tensor:
            keys = content_keys(x)
            with torch.no_grad():
                val = self.noisy(x, keys, attack_n, 1 + draw).double().kthvalue(k + 1, dim=1)
            if not (torch.is_grad_enabled() and x.requires_grad):
                return val.values
            return self.noisy(x, keys, attack_n, 1 + draw, draws=val.indices[:, None])[:, 0].double()
        return f

    def certified_bounds(self, samples, radius: float, alpha: float = 0.001,
                         grid: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """Certified (lower, upper) bounds of the score at L2 radius ``radius`` (pixel units)
        from (B, n) noise samples at the clean input (percentile smoothing; ``certify``)."""
        radius, alpha, grid = self._check_certifiable(radius, alpha, grid)
        return certify.median_bounds(self._samples(samples), radius, float(self.sigma), alpha, p=self.percentile(),
                                     value_range=self.base.value_range)

    def _check_certifiable(self, radius, alpha, grid) -> tuple[float, float, int]:
        self._check_fresh()
        if self.noise_space != "pixel" or not self.sigma > 0:
            raise ValueError("certificates need noise_space='pixel' and sigma > 0 (L2 radii are in pixel units); "
                             f"got noise_space={self.noise_space!r}, sigma={self.sigma}")
        return check_certify_args(radius, alpha, grid)

    def _samples(self, samples) -> np.ndarray:
        """(B, n) noise samples at the clean inputs as float64: any n (certificates want many
        more copies than scoring), finite; the detector's own ``features`` output is accepted."""
        s = torch.as_tensor(samples.detach() if isinstance(samples, torch.Tensor) else samples)
        if s.dim() != 2 or s.shape[0] == 0 or s.shape[1] == 0:
            raise ValueError(f"samples must have shape (B, n): n noisy base scores per input; got {tuple(s.shape)}")
        if not bool(torch.isfinite(s).all()):
            raise ValueError(f"samples contain {int((~torch.isfinite(s)).sum())} non-finite values (NaN or Inf)")
        return s.cpu().double().numpy()


@register
class QuantileSmoothing(MedianSmoothing):
    """The q-quantile of the base score over ``n_samples`` noisy copies: a stability-rewarding
    score that percentile smoothing certifies (see docs/certification.md, section 5b).

    h_q = m - (m - h_q): below the median, the score pays for the spread of the lower tail of
    the noisy scores, so among inputs with the same median the stable ones (small spread)
    score higher, the effect ROSS's gate is after. Unlike the gate it is itself a percentile,
    so its certificate is one order statistic on each side (``certify.median_bounds`` at
    p = q), with no bound on the spread needed and nothing that explodes.

    Parameters
    ----------
    q : float
        The percentile, in (0, 1); 0.5 is median smoothing.
    model, base, n_samples, sigma, noise_space, seed, chunk_size, base_params, accept_rate, batch_size, noise_device
        As for ``MedianSmoothing``.
    """

    kind = "quantile"

    def __init__(self, model: ModelWrapper, *, q: float = DEFAULT_Q, **kwargs):
        self.q = q
        super().__init__(model, **kwargs)

    def _validate(self) -> None:
        super()._validate()
        check_fraction("q", self.q)

    def config(self) -> dict:
        return {**super().config(), "q": float(self.q)}

    @classmethod
    def from_config(cls, model, base, cfg):
        return cls(model, base=base, accept_rate=cfg["accept_rate"], q=cfg["q"], **_smoothing_args(cfg))

    def percentile(self) -> float:
        return float(self.q)


class _Components(dict):
    """The statistics of ``ROSS.components``; the old key ``mad`` still works, with a warning."""

    def __getitem__(self, key):
        if key == "mad":
            warnings.warn("components()['mad'] is deprecated: it is -D, the mean absolute deviation from the "
                          "median (not a median absolute deviation); use 'neg_mean_abs_dev'", DeprecationWarning,
                          stacklevel=2)
            key = "neg_mean_abs_dev"
        return super().__getitem__(key)


@register
class ROSS(MedianSmoothing):
    """ROSS (Stoica, Hekal & Lomuscio, CVPR Findings 2026): median smoothing plus a gate.

    With s_i the base score of N noisy copies, m = median, D = mean |s_i - m|, CoV = D / m,
    and tau the ``tau_quantile`` quantile of m on the ID validation data (set by ``fit``)::

        S = min(m, tau) + max(m - tau, 0) * (1 + lam / (D + 1e-12))

    Below tau S is the smoothed score; above, stable inputs (small D) are pushed further up.

    Parameters
    ----------
    model, base, n_samples, sigma, noise_space, seed, chunk_size, base_params, batch_size, noise_device
        As for ``MedianSmoothing``.
    lam : float
        Gate strength lambda, >= 0, in the base score's units (the boost is lam / D, D being
        in those units): set it per base score.
    tau_quantile : float
        Quantile of the ID validation medians that sets tau (0.05 in the paper: 95% of ID
        validation inputs lie above tau and are eligible for the boost).
    accept_rate : float
        Share of the ID validation data that ``predict`` accepts as ID (its threshold is the
        ``1 - accept_rate`` quantile of their ROSS scores; independent of tau).
    """

    kind = "ross"
    needs_fit = True

    def __init__(self, model: ModelWrapper, *, base: str | Score = "fdbd", n_samples: int = 25,
                 sigma: float = 0.05, lam: float = 0.01, noise_space: str = "pixel", seed: int = 0,
                 chunk_size: int = 128, base_params: dict | None = None, accept_rate: float = 0.95,
                 batch_size: int = 128, tau_quantile: float = 0.05, noise_device: str = "cpu"):
        self.lam, self.tau_quantile = lam, tau_quantile
        super().__init__(model, base=base, n_samples=n_samples, sigma=sigma, noise_space=noise_space, seed=seed,
                         chunk_size=chunk_size, base_params=base_params, accept_rate=accept_rate,
                         batch_size=batch_size, noise_device=noise_device)
        self.tau_: float | None = None

    def _validate(self) -> None:
        super()._validate()
        check_number("lam", self.lam)
        check_fraction("tau_quantile", self.tau_quantile)
        check_ross_noise(self.n_samples, self.sigma)

    def config(self) -> dict:
        return {**super().config(), "lam": float(self.lam), "tau_quantile": float(self.tau_quantile)}

    @classmethod
    def from_config(cls, model, base, cfg):
        return cls(model, base=base, accept_rate=cfg["accept_rate"], lam=cfg["lam"],
                   tau_quantile=cfg["tau_quantile"], **_smoothing_args(cfg))

    def _state(self) -> dict:
        return {"threshold_": self.threshold_, "tau_": self.tau_}

    def _fit(self, feats: torch.Tensor) -> None:
        self.tau_ = calibrate_tau(median_stats(feats)["median"], float(self.tau_quantile))
        super()._fit(feats)

    def gate(self, m, d):
        """The ROSS score from medians and D (tensors, or arrays: returns the same kind)."""
        if self.tau_ is None:
            raise NotFittedError("ROSS is not fitted: call .fit(id_validation_data) first")
        if isinstance(m, torch.Tensor):
            return ross_gate(m, d, self.tau_, float(self.lam))
        m_t, d_t = torch.as_tensor(np.asarray(m, np.float64)), torch.as_tensor(np.asarray(d, np.float64))
        return ross_gate(m_t, d_t, self.tau_, float(self.lam)).numpy()

    def _score(self, feats: torch.Tensor) -> torch.Tensor:
        st = median_stats(feats)
        return self.gate(st["median"], st["D"])

    def components_features(self, feats) -> dict[str, torch.Tensor]:
        """median, neg_mean_abs_dev (= -D), cov (= -CoV) and ross from a (B, N) matrix."""
        self._check_fresh()
        st = median_stats(self.check_features(feats))
        return _Components(median=st["median"], neg_mean_abs_dev=-st["D"], cov=-st["cov"],
                           ross=self.gate(st["median"], st["D"]))

    def components(self, x: torch.Tensor, keys: Sequence[int] | None = None) -> dict[str, torch.Tensor]:
        """All four statistics (B,) each, higher = ID: ``median``, ``neg_mean_abs_dev``
        (-D; ``mad`` is its deprecated name), ``cov`` (-CoV) and ``ross``."""
        self._check_fresh()
        x = self.model.prepare(x)
        with torch.set_grad_enabled(x.requires_grad):
            return self.components_features(self._features(x, keys))

    def certified_bounds(self, samples, radius: float, alpha: float = 0.001,
                         grid: int = 200) -> tuple[np.ndarray, np.ndarray]:
        """Certified (lower, upper) bounds of S: S(m_lo, D_hi) and S(m_hi, D_lo), through
        ``gate``, the same function that scores (see ``certify.ross_bounds``)."""
        radius, alpha, grid = self._check_certifiable(radius, alpha, grid)
        b = certify.ross_bounds(self._samples(samples), radius, float(self.sigma), self.gate, alpha, grid,
                                self.base.value_range)
        return b["lo"], b["hi"]


def _smoothing_args(cfg: dict) -> dict:
    return {"n_samples": cfg["n_samples"], "sigma": cfg["sigma"], "noise_space": cfg["noise_space"],
            "seed": cfg["seed"], "noise_device": cfg.get("noise_device", "cpu")}
