"""Certified bounds for median-smoothed scores and ROSS (percentile smoothing).

Chiang et al. (NeurIPS 2020), "Detection as Regression: Certified Object Detection by Median
Smoothing": with h_p(x) the p-th percentile of s(x + delta), delta ~ N(0, sigma^2 I) in
pixel space, every x' with ||x' - x||_2 <= eps satisfies

    h_{p-}(x) <= h_p(x') <= h_{p+}(x),   p+- = Phi(Phi^-1(p) +- eps / sigma).

The percentiles at x are bounded from n noise samples with confidence 1 - alpha: one
percentile by binomial order statistics, many at once by the DKW band. ROSS's score
S(m, D) rises with the median m and falls with D = E|s - m| = int_0^1 |h_p - m| dp, so its
certified lower bound is S(m_lo, D_hi) and its upper bound S(m_hi, D_lo); the D bounds come
from simultaneous percentile bounds integrated over a grid of p (see docs/certification.md).
Where n is too small for the requested eps and alpha, a bound is -inf / +inf: the
certificate abstains explicitly.
"""
from __future__ import annotations

import math
from typing import Callable

import numpy as np

from ross_ood.metrics import ood_metrics, ood_records

__all__ = ["shifted_percentile", "upper_index", "lower_index", "dkw_eps", "median_bounds", "percentile_band",
           "d_bounds", "ross_bounds", "worst_case_metrics", "rank_abstentions",
           "certified_input_bounds", "records_from_bounds"]


def shifted_percentile(p: float, eps: float, sigma: float, sign: int) -> float:
    """p+ (sign = +1) or p- (sign = -1) = Phi(Phi^-1(p) + sign * eps / sigma)."""
    from scipy import stats
    if sigma <= 0:
        raise ValueError(f"certification needs sigma > 0, got {sigma}")
    if eps < 0:
        raise ValueError(f"radius eps must be >= 0, got {eps}")
    return float(stats.norm.cdf(stats.norm.ppf(p) + sign * eps / sigma))


def upper_index(n: int, q: float, alpha: float) -> int | None:
    """Smallest 1-based k with P(Binomial(n, q) >= k) <= alpha: then the order statistic
    s_(k) >= h_q with probability >= 1 - alpha. None (abstain) when no k <= n qualifies."""
    from scipy import stats
    # P(Bin >= k) = sf(k - 1); sf is decreasing in k, so the first k is found by search
    k = int(stats.binom.isf(alpha, n, q)) + 1  # a candidate near the answer
    k = max(1, min(k, n + 1))
    while k > 1 and stats.binom.sf(k - 2, n, q) <= alpha:
        k -= 1
    while k <= n and stats.binom.sf(k - 1, n, q) > alpha:
        k += 1
    return k if k <= n else None


def lower_index(n: int, q: float, alpha: float) -> int | None:
    """Largest 1-based k with P(Binomial(n, q) <= k - 1) <= alpha: then s_(k) <= h_q with
    probability >= 1 - alpha. None (abstain) when no k >= 1 qualifies."""
    from scipy import stats
    k = int(stats.binom.ppf(alpha, n, q))  # a candidate near the answer
    k = max(0, min(k, n))
    while k < n and stats.binom.cdf(k, n, q) <= alpha:
        k += 1
    while k >= 1 and stats.binom.cdf(k - 1, n, q) > alpha:
        k -= 1
    return k if k >= 1 else None


def dkw_eps(n: int, alpha: float) -> float:
    """Half-width of the Dvoretzky-Kiefer-Wolfowitz band (Massart's constant):
    P(sup_y |F_n(y) - F(y)| > e) <= 2 exp(-2 n e^2) = alpha."""
    return math.sqrt(math.log(2 / alpha) / (2 * n))


def _take(sorted_s: np.ndarray, k: int | None, fill: float) -> np.ndarray:
    if k is None:
        return np.full(sorted_s.shape[0], fill)
    return sorted_s[:, k - 1].astype(np.float64)


def median_bounds(samples: np.ndarray, eps: float, sigma: float, alpha: float = 0.001, p: float = 0.5,
                  value_range: tuple = (-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray]:
    """Certified (lower, upper) bounds of the p-th percentile of the smoothed score at any
    x' within L2 radius eps of x, from (B, n) noise samples at x. Each bound holds with
    probability >= 1 - alpha / 2 (so both together with >= 1 - alpha). Where n is too small
    the bound abstains to the end of the score's ``value_range`` (-inf / +inf if unbounded)."""
    s = np.sort(np.asarray(samples, dtype=np.float64), axis=1)
    n = s.shape[1]
    lo = _take(s, lower_index(n, shifted_percentile(p, eps, sigma, -1), alpha / 2), value_range[0])
    hi = _take(s, upper_index(n, shifted_percentile(p, eps, sigma, +1), alpha / 2), value_range[1])
    return lo, hi


def percentile_band(sorted_s: np.ndarray, qs: np.ndarray, band: float) -> tuple[np.ndarray, np.ndarray]:
    """Simultaneous bounds of h_q for every q in ``qs`` given a DKW band half-width:
    h_q >= s_(ceil(n (q - band))) and h_q <= s_(ceil(n (q + band))). Shapes (B, len(qs))."""
    b, n = sorted_s.shape
    lo = np.full((b, len(qs)), -np.inf)
    hi = np.full((b, len(qs)), np.inf)
    for j, q in enumerate(qs):
        kl = math.ceil(n * (q - band) - 1e-12)
        ku = math.ceil(n * (q + band) - 1e-12)
        if kl >= 1:
            lo[:, j] = sorted_s[:, kl - 1]
        if 1 <= ku <= n:
            hi[:, j] = sorted_s[:, ku - 1]
    return lo, hi


def d_bounds(samples: np.ndarray, eps: float, sigma: float, alpha: float, m_lo: np.ndarray, m_hi: np.ndarray,
             grid: int = 200, value_range: tuple = (-np.inf, np.inf)) -> tuple[np.ndarray, np.ndarray]:
    """Certified bounds of D(x') = int_0^1 |h_p(x') - m(x')| dp, given m(x') in [m_lo, m_hi].

    On a grid 0 = p_0 < ... < p_G = 1, h_p(x') is monotone in p, so on [p_i, p_{i+1}]
    L(p_i) <= h_p(x') <= U(p_{i+1}) with L(p) = h_{p-}(x) and U(p) = h_{p+}(x) bounded from
    a DKW band at confidence 1 - alpha, and clipped to the score's ``value_range``
    (an unbounded score has an unbounded D_hi: no finite sample bounds a heavy tail). Per interval
    |h_p - m| <= max(U(p_{i+1}) - m_lo, m_hi - L(p_i)) and
    |h_p - m| >= max(0, L(p_i) - m_hi, m_lo - U(p_{i+1})).
    """
    s = np.sort(np.asarray(samples, dtype=np.float64), axis=1)
    n = s.shape[1]
    edges = np.linspace(0.0, 1.0, grid + 1)
    band = dkw_eps(n, alpha)
    # percentiles at x that bound h_p(x') at the interval edges (p = 0 / 1 map to 0 / 1)
    p_minus = np.array([0.0 if q <= 0 else (1.0 if q >= 1 else shifted_percentile(q, eps, sigma, -1))
                        for q in edges])
    p_plus = np.array([0.0 if q <= 0 else (1.0 if q >= 1 else shifted_percentile(q, eps, sigma, +1))
                       for q in edges])
    low_edge, _ = percentile_band(s, p_minus, band)  # L(p_i) <= h_{p_i}(x')
    _, high_edge = percentile_band(s, p_plus, band)  # U(p_i) >= h_{p_i}(x')
    low_edge = np.maximum(low_edge, value_range[0])
    high_edge = np.minimum(high_edge, value_range[1])
    width = np.diff(edges)
    lo_i, hi_next = low_edge[:, :-1], high_edge[:, 1:]
    with np.errstate(invalid="ignore"):
        upper = np.maximum(hi_next - m_lo[:, None], m_hi[:, None] - lo_i)
        lower = np.maximum.reduce([np.zeros_like(lo_i), lo_i - m_hi[:, None], m_lo[:, None] - hi_next])
    lower = np.nan_to_num(lower, nan=0.0, posinf=0.0, neginf=0.0)
    upper = np.where(np.isnan(upper), np.inf, upper)
    return (lower * width).sum(1), (upper * width).sum(1)


def ross_bounds(samples: np.ndarray, eps: float, sigma: float, gate: Callable, alpha: float = 0.001,
                grid: int = 200, value_range: tuple = (-np.inf, np.inf)) -> dict[str, np.ndarray]:
    """Certified bounds of a gated score S = gate(m, D) that rises with m and falls with D
    (ROSS: ``ROSS.gate``, the function that scores) at radius eps. Half of alpha goes to the
    median, half to the DKW band of D (union bound: total failure <= alpha).
    With D_hi = inf the lower bound is S(m_lo, inf) = m_lo, still valid since S >= m."""
    m_lo, m_hi = median_bounds(samples, eps, sigma, alpha / 2, value_range=value_range)
    d_lo, d_hi = d_bounds(samples, eps, sigma, alpha / 2, m_lo, m_hi, grid, value_range)
    return {"m_lo": m_lo, "m_hi": m_hi, "d_lo": d_lo, "d_hi": d_hi, "lo": gate(m_lo, d_hi), "hi": gate(m_hi, d_lo)}


def rank_abstentions(id_lower: np.ndarray, ood_upper: dict) -> tuple[np.ndarray, dict]:
    """ID lower bounds and OOD upper bounds (name -> array) with abstentions (-inf for ID,
    +inf for OOD) replaced by finite values below / above every finite bound, so that they
    rank as the worst possible scores in rank-based metrics."""
    a = np.asarray(id_lower, float)
    bs = {k: np.asarray(v, float) for k, v in ood_upper.items()}
    finite = np.concatenate([a[np.isfinite(a)], *(b[np.isfinite(b)] for b in bs.values())])
    lo_fill = (finite.min() - 1.0) if finite.size else -1.0
    hi_fill = (finite.max() + 1.0) if finite.size else 1.0

    def fill(v):
        return np.where(np.isneginf(v), lo_fill, np.where(np.isposinf(v), hi_fill, v))
    return fill(a), {k: fill(b) for k, b in bs.items()}


def worst_case_metrics(id_lower: np.ndarray, ood_upper: np.ndarray) -> dict[str, float]:
    """Certified metrics: ID certified lower bounds against OOD certified upper bounds.
    Abstentions (-inf for ID, +inf for OOD) rank as the worst possible scores."""
    a, b = rank_abstentions(id_lower, {"ood": ood_upper})
    return ood_metrics(a, b["ood"])


def _abstain_share(bound: np.ndarray, limit: float, upper: bool) -> float:
    return float(np.mean(~np.isfinite(bound) | ((bound >= limit) if upper else (bound <= limit))))


def certified_input_bounds(det, samples: dict, groups: dict, radii, alpha: float, grid: int) -> dict:
    """Per-input numbers that every certified metric is computed from: ``{radius: {set: array}}``
    with radius ``"clean"`` (the smoothed scores) and each L2 radius (the certified lower bound of
    each ``id_test`` input, the certified upper bound of each OOD input; -inf / +inf where the
    certificate abstains). ``samples`` maps set name -> (B, n) noise samples."""
    out = {"clean": {"id_test": det.score_features(samples["id_test"]).double().numpy(),
                     **{o: det.score_features(samples[o]).double().numpy() for o in groups}}}
    for radius in radii:
        out[radius] = {"id_test": np.asarray(det.certified_bounds(samples["id_test"], radius, alpha, grid)[0], float),
                       **{o: np.asarray(det.certified_bounds(samples[o], radius, alpha, grid)[1], float)
                          for o in groups}}
    return out


def records_from_bounds(bounds: dict, groups: dict, value_range, extra: dict, n_resamples: int = 1000,
                        seed: int = 0) -> list[dict]:
    """Per-OOD-set and mean records from ``certified_input_bounds``'s numbers (a whole run's, or
    the concatenated parts' of ``ross combine``): clean metrics, then certified metrics at every
    radius, abstentions ranked worst; ``value_range`` is the base score's (an abstaining bound
    sits at its end). Every record carries bootstrap intervals over the images (``metrics.ood_records``)."""
    records = []
    for radius, per in bounds.items():
        if radius == "clean":
            id_s, ood = per["id_test"], {o: per[o] for o in groups}
            abst = {o: (0.0, 0.0) for o in groups}
        else:
            id_lo = per["id_test"]
            abst = {o: (_abstain_share(id_lo, value_range[0], False), _abstain_share(per[o], value_range[1], True))
                    for o in groups}
            id_s, ood = rank_abstentions(id_lo, {o: per[o] for o in groups})
        recs = ood_records(id_s, ood, groups, {"mean": ("all", list(groups))}, {**extra, "radius": radius},
                           n_resamples, seed)
        for r in recs:
            names = [r["ood_set"]] if r["ood_set"] in groups else list(groups)
            r["abstain_id"], r["abstain_ood"] = (float(np.mean([abst[o][i] for o in names])) for i in (0, 1))
        records += recs
    return records

