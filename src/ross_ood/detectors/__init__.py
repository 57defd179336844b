"""Detectors: a plain base score, median smoothing, and ROSS (one implementation each).

Uniform interface (pytorch-ood / scikit-learn style): ``fit(id_validation)`` returns the
detector; ``score(x)`` gives (B,) scores, higher = ID; ``predict(x)`` gives a boolean
"is OOD" per input at the threshold that accepts ``accept_rate`` of the ID validation data.
``fit_features`` / ``score_features`` do the same from precomputed feature arrays (what the
command-line pipeline shares and caches). A detector object of your own (``score(x)``, optionally ``fit``, ``surrogate``, ``spec``) becomes
one with ``as_detector(obj, model)`` (``custom``). Names used on the command line:
``<score>`` (plain), ``median-<score>``, ``quantile-<score>``, ``ross-<score>``.
"""
from __future__ import annotations

from ross_ood.detectors.base import (
    BaseScoreDetector,
    Detector,
    FeatureUnit,
    NotFittedError,
    StaleFitError,
    iter_batches,
)
from ross_ood.detectors.custom import ObjectDetector, as_detector
from ross_ood.detectors.smoothed import DEFAULT_Q, ROSS, SURROGATES, MedianSmoothing, QuantileSmoothing
from ross_ood.model import ModelWrapper
from ross_ood.scores import Score, get_score

__all__ = ["Detector", "BaseScoreDetector", "MedianSmoothing", "QuantileSmoothing", "ROSS", "NotFittedError",
           "StaleFitError", "FeatureUnit", "iter_batches", "load_detector", "parse_detector_name", "make_detector",
           "KINDS", "SURROGATES", "DEFAULT_Q", "ObjectDetector", "as_detector"]

#: detector name prefix -> class
KINDS = {"base": BaseScoreDetector, "median": MedianSmoothing, "quantile": QuantileSmoothing, "ross": ROSS}


def parse_detector_name(name: str) -> tuple[str, str]:
    """``'ross-fdbd'`` -> ``('ross', 'fdbd')``; ``'pro-fdbd'`` -> ``('base', 'pro-fdbd')``.
    The base score name is checked (an unknown one is an error naming the known ones)."""
    key = name.strip().lower()
    kind, base = "base", key
    for prefix in ("ross-", "median-", "quantile-"):
        if key.startswith(prefix):
            kind, base = prefix[:-1], key[len(prefix):]
    from ross_ood.scores import is_score_name, score_names
    if not is_score_name(base):
        raise ValueError(f"unknown detector {name!r}: a detector is a base score ({', '.join(score_names())}) or "
                         "one under smoothing, median-<score>, quantile-<score> or ross-<score> "
                         "(e.g. median-energy, ross-fdbd)")
    return kind, base


def make_detector(name: str, model: ModelWrapper, *, base: Score | None = None, lam: float = 0.01,
                  tau_quantile: float = 0.05, accept_rate: float = 0.95, q: float = DEFAULT_Q,
                  **smoothing) -> Detector:
    """The detector ``name`` (``msp``, ``median-energy``, ``quantile-msp``, ``ross-fdbd``, ...) on
    ``model``; ``q`` is the percentile of ``quantile-`` detectors;
    ``smoothing`` holds ``n_samples``, ``sigma``, ``noise_space``, ``seed``, ``chunk_size``,
    ``noise_device`` for smoothed detectors; ``base`` overrides the score built from the name."""
    kind, base_name = parse_detector_name(name)
    score = base if base is not None else get_score(base_name)
    if kind == "base":
        return BaseScoreDetector(model, base=score, accept_rate=accept_rate)
    if kind == "median":
        return MedianSmoothing(model, base=score, accept_rate=accept_rate, **smoothing)
    if kind == "quantile":
        return QuantileSmoothing(model, base=score, accept_rate=accept_rate, q=q, **smoothing)
    return ROSS(model, base=score, accept_rate=accept_rate, lam=lam, tau_quantile=tau_quantile, **smoothing)


def load_detector(path, model: ModelWrapper, base: Score | None = None) -> Detector:
    """Load any saved detector (see ``Detector.load``)."""
    return Detector.load(path, model, base)
