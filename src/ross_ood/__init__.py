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
"""
from ross_ood._version import __version__  # noqa: E402
from ross_ood.detectors import (
                        ROSS,
                        BaseScoreDetector,
                        Detector,
                        MedianSmoothing,
                        NotFittedError,
                        QuantileSmoothing,
                        StaleFitError,
                        load_detector,
)

# the engine's user-facing calls (imported last: the engine builds on everything above)
from ross_ood.engine.adversarial import AttackBudget  # noqa: E402
from ross_ood.engine.report import Attack, RobustnessReport, robustness_report  # noqa: E402
from ross_ood.metrics import accuracy, ood_metrics
from ross_ood.model import ModelWrapper, wrap
from ross_ood.scores import SCORE_NAMES, FeatureStats, Score, base_score, fit_feature_stats, get_score, register_score

__all__ = ["ROSS", "MedianSmoothing", "QuantileSmoothing", "BaseScoreDetector", "Detector", "NotFittedError",
           "StaleFitError", "load_detector", "ood_metrics", "accuracy", "wrap", "ModelWrapper", "base_score",
           "get_score", "SCORE_NAMES", "FeatureStats", "fit_feature_stats", "Score", "register_score",
           "robustness_report", "RobustnessReport", "Attack", "AttackBudget", "__version__"]
