"""OOD metrics with OpenOOD v1.5 conventions (``openood/evaluators/metrics.py``).

OOD is the positive class and scores are higher = ID, so the curves are computed on
``-score``. Everything is float64 through scikit-learn: torchmetrics' AUROC applies a
sigmoid to scores outside [0, 1], which saturates in float32 and destroys the ranking.
"""
from __future__ import annotations

import numpy as np

__all__ = ["group_means", "check_bootstrap_size", "ood_metrics", "accuracy", "METRIC_NAMES", "CI_FIELDS", "ood_records",
           "bootstrap_intervals", "auroc_by_ranks", "fpr_at_recall", "paired_auroc_difference"]

METRIC_NAMES = ("auroc", "fpr95", "fpr95_id", "aupr_in", "aupr_out")
#: the bootstrap interval of AUROC and FPR@95 that every record carries
CI_FIELDS = ("auroc_lo", "auroc_hi", "fpr95_lo", "fpr95_hi")


def check_bootstrap_size(name: str, n: int, n_resamples: int) -> None:
    """A bootstrap interval resamples a set's images: one image has no spread to resample."""
    if n_resamples and n < 2:
        raise ValueError(f"{name} has {n} image{'s' if n != 1 else ''}: the bootstrap intervals need at least 2 per "
                         "set (give more images, or no intervals: n_resamples=0, --bootstrap 0)")


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
    from sklearn import metrics as skm
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


# ------------------------------------------------------------------ intervals
# The bootstrap needs AUROC and FPR@95 of a thousand resamples at once, along an axis; sklearn's
# curves take one sample at a time, so these two are written here as array formulas and
# tested against ``ood_metrics`` (tests/test_metrics.py).
def auroc_by_ranks(id_scores: np.ndarray, ood_scores: np.ndarray) -> np.ndarray:
    """AUROC with OOD positive on -score, along the last axis: the Mann-Whitney U of the ID
    scores over the OOD scores / (n_id n_ood), ties counting one half (= ``ood_metrics``)."""
    from scipy import stats
    n1, n2 = id_scores.shape[-1], ood_scores.shape[-1]
    r = stats.rankdata(np.concatenate([id_scores, ood_scores], axis=-1), axis=-1)
    return (r[..., :n1].sum(-1) - n1 * (n1 + 1) / 2) / (n1 * n2)


class _ResampledAuroc:
    """``auroc_by_ranks`` of bootstrap resamples of fixed ID and OOD score arrays, each resample
    given by how often it draws every image (counts): U = sum over OOD j of count_j x (the counted
    ID images above t_j + half those equal to it). The ID scores are sorted once, so a resample
    costs a cumulative sum, not a sort; every term is a multiple of one half, so the result equals
    the rank formula's to the last bit (tests/test_metrics.py)."""

    def __init__(self, id_scores: np.ndarray, ood_scores: np.ndarray):
        self.order = np.argsort(id_scores, kind="stable")
        s = id_scores[self.order]
        self.lo = np.searchsorted(s, ood_scores, "left")  # ID images below t_j: sorted positions < lo
        self.hi = np.searchsorted(s, ood_scores, "right")  # at or below t_j: positions < hi
        self.n1, self.n2 = id_scores.size, ood_scores.size

    def __call__(self, c_id: np.ndarray, c_ood: np.ndarray) -> np.ndarray:
        """AUROC (m,) of m resamples: ``c_id`` (m, n_id) and ``c_ood`` (m, n_ood) draw counts."""
        cs = np.zeros((c_id.shape[0], self.n1 + 1), np.int64)
        np.cumsum(c_id[:, self.order], axis=1, out=cs[:, 1:])
        at_or_below, below = cs[:, self.hi], cs[:, self.lo]
        u = ((cs[:, -1:] - at_or_below) + 0.5 * (at_or_below - below)) * c_ood
        return u.sum(1) / (self.n1 * self.n2)


def _counts(idx: np.ndarray, n: int) -> np.ndarray:
    """(m, n) how often each of n items is drawn by each row of the index draws ``idx`` (m, k)."""
    m = idx.shape[0]
    return np.bincount((idx + n * np.arange(m)[:, None]).ravel(), minlength=m * n).reshape(m, n)


def fpr_at_recall(id_scores: np.ndarray, ood_scores: np.ndarray, recall: float = 0.95) -> np.ndarray:
    """FPR@95 (OpenOOD) along the last axis: the share of ID scores at or below the k-th
    smallest OOD score, k the least count with k / n_ood >= recall (the first ROC point
    catching ``recall`` of the OOD inputs)."""
    n = ood_scores.shape[-1]
    k = int(np.argmax(np.arange(1, n + 1) / n >= recall))
    v = np.partition(ood_scores, k, axis=-1)[..., k]
    return (id_scores <= v[..., None]).mean(-1)


def bootstrap_intervals(id_scores, ood: dict, means: dict, n_resamples: int = 1000, confidence: float = 0.95,
                        seed: int = 0) -> dict[str, tuple]:
    """Percentile bootstrap intervals of AUROC and FPR@95 for every OOD set of ``ood``
    (name -> scores) and for the means over the sets listed in ``means`` (label -> names).

    The images of every set (ID and each OOD set) are resampled with replacement, jointly
    for one resample (``scipy.stats.bootstrap``, seeded): the ID set is shared, so a mean's
    interval reflects that. Returns name or label -> (auroc_lo, auroc_hi, fpr95_lo, fpr95_hi).
    """
    from scipy import stats
    names = list(ood)
    data = [_as_scores(id_scores, "id_scores")] + [_as_scores(ood[k], f"scores of {k}") for k in names]
    for name, d in zip(["the ID set", *(f"OOD set {k!r}" for k in names)], data):
        check_bootstrap_size(name, d.size, n_resamples)
    mean_idx = [[names.index(k) for k in m] for m in means.values()]

    def statistic(x, *ys, axis=-1):
        per = np.stack([np.stack([auroc_by_ranks(x, y), fpr_at_recall(x, y)]) for y in ys])  # (sets, 2, ...)
        return np.concatenate([*per, *(per[idx].mean(0) for idx in mean_idx)])  # (2 (sets + means), ...)

    res = stats.bootstrap(data, statistic, n_resamples=n_resamples, confidence_level=confidence,
                          method="percentile", vectorized=True, random_state=np.random.default_rng(seed), batch=100)
    lo, hi = res.confidence_interval.low, res.confidence_interval.high
    labels = names + list(means)
    return {lab: (float(lo[2 * i]), float(hi[2 * i]), float(lo[2 * i + 1]), float(hi[2 * i + 1]))
            for i, lab in enumerate(labels)}


def ood_records(id_scores, ood: dict, groups: dict, means: dict, extra: dict, n_resamples: int = 1000,
                seed: int = 0) -> list[dict]:
    """Records for one ID score array against several OOD sets: per set the metrics, their
    bootstrap intervals (``CI_FIELDS``, none when ``n_resamples`` is 0) and the image counts;
    then one record per mean (label -> (group, set names)) with the metrics averaged over its
    sets and the bootstrap interval of that average. ``extra`` starts every record."""
    per = {k: ood_metrics(id_scores, v) for k, v in ood.items()}
    n_id = int(np.size(id_scores))
    ci = (bootstrap_intervals(id_scores, ood, {lab: m[1] for lab, m in means.items()}, n_resamples, seed=seed)
          if n_resamples else {})
    out = [{**extra, "ood_set": k, "group": groups[k], **per[k], **dict(zip(CI_FIELDS, ci.get(k, ()))),
            "n_id": n_id, "n_ood": int(np.size(ood[k]))} for k in ood]
    for lab, (group, names) in means.items():
        out.append({**extra, "ood_set": lab, "group": group,
                    **{f: float(np.mean([per[k][f] for k in names])) for f in METRIC_NAMES},
                    **dict(zip(CI_FIELDS, ci.get(lab, ()))), "n_id": n_id,
                    "n_ood": int(sum(np.size(ood[k]) for k in names))})
    return out


def paired_auroc_difference(a: tuple, b: tuple, n_resamples: int = 1000, confidence: float = 0.95,
                            seed: int = 0, groups: dict | None = None) -> dict[str, dict]:
    """AUROC(a) - AUROC(b) for two score sets *on the same images*, with a paired bootstrap
    interval: each resample draws the images of every set once (ID, and each OOD set) and
    applies that draw to both a and b, so what the two share (the images) cancels and only
    their difference varies. Much narrower than two separate intervals when the scores are
    correlated, as two detectors or two attacks on the same images are.

    ``a`` and ``b`` are ``(id_scores, {ood set: scores})`` with the same sets and sizes, row i
    of a set being the same image in both. Returns, per OOD set and for ``"mean"`` (the mean
    over the sets, resampled jointly), ``{"diff", "lo", "hi", "n_id", "n_ood"}`` in AUROC
    fractions; ``groups`` (label -> set names, e.g. near / far) adds the mean over each group. scipy's ``bootstrap(paired=True)`` needs one common sample size, which an ID set
    and OOD sets of other sizes do not have; hence this formula over ``auroc_by_ranks``."""
    id_a, ood_a = a
    id_b, ood_b = b
    ia, ib = _as_scores(id_a, "id scores of a"), _as_scores(id_b, "id scores of b")
    if ia.size != ib.size or set(ood_a) != set(ood_b):
        raise ValueError(f"paired comparison needs the same images: a has {ia.size} ID scores and sets "
                         f"{sorted(ood_a)}, b has {ib.size} and {sorted(ood_b)}")
    names = list(ood_a)
    oa = {k: _as_scores(ood_a[k], f"scores of {k} in a") for k in names}
    ob = {k: _as_scores(ood_b[k], f"scores of {k} in b") for k in names}
    for k in names:
        if oa[k].size != ob[k].size:
            raise ValueError(f"paired comparison needs the same images: set {k} has {oa[k].size} scores in a "
                             f"and {ob[k].size} in b")
    if n_resamples < 1:
        raise ValueError(f"n_resamples must be an integer >= 1, got {n_resamples!r}")
    rng = np.random.default_rng(seed)
    diffs = {k: [] for k in names}
    fa = {k: _ResampledAuroc(ia, oa[k]) for k in names}
    fb = {k: _ResampledAuroc(ib, ob[k]) for k in names}
    for start in range(0, n_resamples, 100):
        m = min(100, n_resamples - start)
        c_id = _counts(rng.integers(0, ia.size, (m, ia.size)), ia.size)
        for k in names:
            c_o = _counts(rng.integers(0, oa[k].size, (m, oa[k].size)), oa[k].size)
            diffs[k].append(fa[k](c_id, c_o) - fb[k](c_id, c_o))
    q = [(1 - confidence) / 2 * 100, (1 + confidence) / 2 * 100]
    out = {}
    for k in names:
        d = np.concatenate(diffs[k])
        point = auroc_by_ranks(ia, oa[k]) - auroc_by_ranks(ib, ob[k])
        lo, hi = np.percentile(d, q)
        out[k] = {"diff": float(point), "lo": float(lo), "hi": float(hi), "n_id": int(ia.size), "n_ood": int(oa[k].size)}
    for label, members in {**(groups or {}), "mean": names}.items():
        dm = np.mean([np.concatenate(diffs[k]) for k in members], axis=0)
        lo, hi = np.percentile(dm, q)
        out[label] = {"diff": float(np.mean([out[k]["diff"] for k in members])), "lo": float(lo), "hi": float(hi),
                      "n_id": int(ia.size), "n_ood": int(sum(oa[k].size for k in members))}
    return out


def group_means(groups: dict) -> dict:
    """``near-mean``, ``far-mean`` (where such sets exist) and ``all-mean`` over OOD sets."""
    out = {}
    for g in ("near", "far", "all"):
        chosen = [s for s, sg in groups.items() if g in (sg, "all")]
        if chosen:
            out[f"{g}-mean"] = (g, chosen)
    return out
