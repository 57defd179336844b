"""OOD metrics with OpenOOD v1.5 conventions (``openood/evaluators/metrics.py``).

OOD is the positive class and scores are higher = ID, so the curves are computed on
``-score``. Everything is float64 through scikit-learn: torchmetrics' AUROC applies a
sigmoid to scores outside [0, 1], which saturates in float32 and destroys the ranking.
"""
from __future__ import annotations

import numpy as np
from sklearn import metrics as skm

__all__ = ["ood_metrics", "accuracy", "mean_over_sets", "METRIC_NAMES"]

METRIC_NAMES = ("auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out")


def _as_scores(v, name: str) -> np.ndarray:
    if hasattr(v, "detach"):
        v = v.detach().cpu().double().numpy()
    a = np.asarray(v, dtype=np.float64)
    if a.ndim != 1:
        raise ValueError(f"{name} must be 1-D (one score per input), got shape {a.shape}")
    if a.size == 0:
        raise ValueError(f"{name} is empty")
    if not np.isfinite(a).all():
        raise ValueError(f"{name} contains {int((~np.isfinite(a)).sum())} non-finite values")
    return a


def ood_metrics(id_scores, ood_scores, recall: float = 0.95) -> dict[str, float]:
    """AUROC, FPR@95 (two conventions), AUPR-In and AUPR-Out as fractions in [0, 1].

    Parameters
    ----------
    id_scores, ood_scores : array-like or tensor, 1-D
        Scores of the in-distribution and the OOD inputs, higher = ID. Non-finite values,
        empty inputs and arrays that are not 1-D are refused.
    recall : float
        The OOD (``fpr95``) or ID (``fpr95_id``) recall at which the FPR is read (0.95).

    Returns
    -------
    dict
        The five metrics as fractions, OOD the positive class:

    - ``auroc``: ``roc_auc_score(is_ood, -score)`` (ties count one half).
    - ``fpr95``: share of ID inputs flagged OOD at the threshold that catches ``recall`` of
      the OOD inputs: ``fpr[argmax(tpr >= recall)]`` on ``roc_curve(is_ood, -score)`` (OpenOOD).
    - ``fpr95_id``: share of OOD inputs accepted at the threshold that accepts ``recall`` of
      the ID inputs (the older convention of Liang et al. / Liu et al.).
    - ``aupr_in``, ``aupr_out``: trapezoid ``auc(recall, precision)`` with ID / OOD positive.
    """
    s_id = _as_scores(id_scores, "id_scores")
    s_ood = _as_scores(ood_scores, "ood_scores")
    conf = np.concatenate([s_id, s_ood])
    is_ood = np.concatenate([np.zeros(s_id.size, int), np.ones(s_ood.size, int)])
    # drop_intermediate=False: sklearn's default (and so OpenOOD's) drops collinear ROC points,
    # which can skip the first point reaching the recall and overstate FPR@95 on tied scores
    fpr, tpr, _ = skm.roc_curve(is_ood, -conf, drop_intermediate=False)
    fpr95 = float(fpr[np.argmax(tpr >= recall)])
    fpr_id, tpr_id, _ = skm.roc_curve(1 - is_ood, conf, drop_intermediate=False)
    fpr95_id = float(fpr_id[np.argmax(tpr_id >= recall)])
    p_in, r_in, _ = skm.precision_recall_curve(1 - is_ood, conf)
    p_out, r_out, _ = skm.precision_recall_curve(is_ood, -conf)
    return {"auroc": float(skm.auc(fpr, tpr)), "fpr95": fpr95, "fpr95_id": fpr95_id,
            "aupr_in": float(skm.auc(r_in, p_in)), "aupr_out": float(skm.auc(r_out, p_out))}


def accuracy(pred, labels) -> float:
    """Share of correct predictions (fraction)."""
    p = np.asarray(pred.cpu() if hasattr(pred, "cpu") else pred).ravel()
    y = np.asarray(labels.cpu() if hasattr(labels, "cpu") else labels).ravel()
    if p.size != y.size:
        raise ValueError(f"{p.size} predictions for {y.size} labels")
    if p.size == 0:
        raise ValueError("accuracy of an empty set")
    return float((p == y).mean())


def mean_over_sets(records: list[dict], fields=METRIC_NAMES, label: str = "mean", group: str = "all") -> list[dict]:
    """One record per group of ``records`` that differ only in ``ood_set`` / ``group``, with
    the mean of ``fields`` over the group and ``ood_set = label``."""
    skip = set(fields) | {"ood_set", "group"}
    groups: dict[str, list[dict]] = {}
    for r in records:
        key = repr(sorted((k, repr(v)) for k, v in r.items() if k not in skip))
        groups.setdefault(key, []).append(r)
    return [{**{k: v for k, v in rs[0].items() if k not in skip}, "ood_set": label, "group": group,
             **{f: float(np.mean([r[f] for r in rs])) for f in fields}} for rs in groups.values()]
