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
from ross_ood.metrics import accuracy, ood_metrics
from ross_ood.model import ModelWrapper, wrap
from ross_ood.scores import SCORE_NAMES, FeatureStats, base_score, fit_feature_stats, get_score

__version__ = "0.1.0"

__all__ = ["ROSS", "MedianSmoothing", "QuantileSmoothing", "BaseScoreDetector", "Detector", "NotFittedError",
           "StaleFitError", "load_detector", "ood_metrics", "accuracy", "wrap", "ModelWrapper", "base_score",
           "get_score", "SCORE_NAMES", "FeatureStats", "fit_feature_stats", "__version__"]
