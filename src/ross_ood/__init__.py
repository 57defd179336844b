"""ross-ood: robust out-of-distribution detection by synergistic smoothing (ROSS).

Public API::

    model = ross_ood.wrap(net, mean, std)               # takes images in [0, 1]
    det = ross_ood.ROSS(model, base="fdbd", n_samples=25, sigma=0.05, lam=0.01,
                        noise_space="pixel", seed=0).fit(id_val)
    det.score(x); det.components(x); det.predict(x)
    ross_ood.base_score("energy", model, x)
    stats = ross_ood.fit_feature_stats(model, train_x, train_y)   # KNN, Mahalanobis, ViM, ReAct
    ross_ood.MedianSmoothing(model, base=ross_ood.get_score("knn", stats=stats), sigma=0.12)
    ross_ood.ood_metrics(id_scores, ood_scores)
    ross_ood.robustness_report(det, x_id, {"ood": x_ood}, eps=[2 / 255])

The names load on first use (PEP 562): ``import ross_ood`` costs no more than the modules a
program touches, and ``ross --help`` starts without torch.
"""
from __future__ import annotations

import importlib

from ross_ood._lazy import submodules
from ross_ood._version import __version__

#: public name -> the module that defines it
_WHERE = {
    **dict.fromkeys(["ROSS", "BaseScoreDetector", "Detector", "MedianSmoothing", "NotFittedError", "QuantileSmoothing",
                     "StaleFitError", "load_detector"], "ross_ood.detectors"),
    "AttackBudget": "ross_ood.engine.adversarial",
    "register_attack": "ross_ood.attacks.registry",
    **dict.fromkeys(["Attack", "RobustnessReport", "robustness_report"], "ross_ood.engine.report"),
    **dict.fromkeys(["accuracy", "ood_metrics"], "ross_ood.metrics"),
    **dict.fromkeys(["ModelWrapper", "wrap"], "ross_ood.model"),
    **dict.fromkeys(["SCORE_NAMES", "FeatureStats", "Score", "base_score", "fit_feature_stats", "get_score",
                     "register_score", "score_names"], "ross_ood.scores"),
    "as_detector": "ross_ood.detectors.custom",
}

__all__ = ["ROSS", "MedianSmoothing", "QuantileSmoothing", "BaseScoreDetector", "Detector", "NotFittedError",
           "StaleFitError", "load_detector", "ood_metrics", "accuracy", "wrap", "ModelWrapper", "base_score",
           "get_score", "SCORE_NAMES", "score_names", "FeatureStats", "fit_feature_stats", "Score", "register_score",
           "as_detector", "register_attack",
           "robustness_report", "RobustnessReport", "Attack", "AttackBudget", "__version__"]


_submodule = submodules(__name__)


def __getattr__(name: str):
    where = _WHERE.get(name)
    if where is None:  # a subpackage or module: ross_ood.precision, ross_ood.engine.report, ...
        return _submodule(name)
    value = getattr(importlib.import_module(where), name)
    globals()[name] = value  # later lookups skip this function
    return value


def __dir__():
    return sorted(set(globals()) | set(__all__))
