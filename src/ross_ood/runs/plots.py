"""Figures (matplotlib, Agg backend): score histograms, ROC curves, AUROC vs eps, sweep
curves and certified AUROC vs radius. Every figure has labelled axes, a legend and, where
it applies, the eps / noise space in its title."""
from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["plot_certified", "plot_histograms", "plot_roc", "plot_attack_curves", "plot_sweep"]


def _plt():
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    return plt


def _save(fig, path):
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    # fixed metadata so that the same results give byte-identical PNG files
    fig.savefig(path, dpi=110, metadata={"Software": None})
    _plt().close(fig)


def plot_certified(means: list, path, title: str) -> None:
    """Certified AUROC (%) vs L2 radius per detector and sigma; clean AUROC dashed."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    keys = list(dict.fromkeys((r["detector"], r["sigma"]) for r in means))
    for k, (det, sig) in enumerate(keys):
        rs = sorted((r for r in means if r["detector"] == det and r["sigma"] == sig and r["radius"] != "clean"),
                    key=lambda r: r["radius"])
        clean = next(r for r in means if r["detector"] == det and r["sigma"] == sig and r["radius"] == "clean")
        color = f"C{k % 10}"
        ax.plot([r["radius"] for r in rs], [100 * r["auroc"] for r in rs], "o-", color=color,
                label=f"{det}, σ={sig:g} (certified)")
        ax.axhline(100 * clean["auroc"], color=color, ls="--", lw=1, label=f"{det}, σ={sig:g} (clean)")
    ax.set_xlabel("L2 radius ε (pixel units, images in [0, 1])")
    ax.set_ylabel("AUROC (%), mean over OOD sets")
    ax.set_title(title)
    ax.set_ylim(0, 100)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)


def plot_histograms(per_set: dict, path, title: str, xlabel: str) -> None:
    """Histograms of one statistic: ``per_set`` maps set name -> 1-D scores (ID first)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.0))
    allv = np.concatenate([np.asarray(v, float) for v in per_set.values()])
    lo, hi = np.percentile(allv, [0.5, 99.5])
    bins = np.linspace(lo, hi if hi > lo else lo + 1, 60)
    for k, (name, v) in enumerate(per_set.items()):
        ax.hist(np.clip(v, bins[0], bins[-1]), bins=bins, density=True, histtype="stepfilled" if k == 0 else "step",
                alpha=0.35 if k == 0 else 1.0, lw=1.5, label=f"{name} (n={len(v)})", color=f"C{k % 10}")
    ax.set_xlabel(xlabel)
    ax.set_ylabel("density")
    ax.set_title(title)
    ax.legend(fontsize=8)
    _save(fig, path)


def plot_roc(curves: dict, path, title: str) -> None:
    """ROC curves with OOD positive: ``curves`` maps label -> (id_scores, ood_scores)."""
    from sklearn.metrics import roc_auc_score, roc_curve
    plt = _plt()
    fig, ax = plt.subplots(figsize=(5.2, 4.6))
    for k, (label, (s_id, s_ood)) in enumerate(curves.items()):
        y = np.r_[np.zeros(len(s_id)), np.ones(len(s_ood))]
        conf = -np.r_[s_id, s_ood]
        fpr, tpr, _ = roc_curve(y, conf)
        ax.plot(100 * fpr, 100 * tpr, color=f"C{k % 10}", label=f"{label} (AUROC {100 * roc_auc_score(y, conf):.1f})")
    ax.plot([0, 100], [0, 100], color="grey", ls=":", lw=1)
    ax.set_xlabel("ID flagged as OOD, FPR (%)")
    ax.set_ylabel("OOD caught, TPR (%)")
    ax.set_title(title)
    ax.legend(fontsize=7, loc="lower right")
    _save(fig, path)


def plot_attack_curves(means: list, clean: dict, path, title: str, target: str) -> None:
    """AUROC (%) vs eps (in /255) per detector, one panel per objective run (PGD-Min, -Max, -Both)."""
    plt = _plt()
    objs = [o for o in ("min", "max", "both") if any(r["objective"] == o for r in means)] or ["min", "max"]
    fig, axes = plt.subplots(1, len(objs), figsize=(5 * len(objs), 4.0), sharey=True, squeeze=False)
    axes = axes[0]
    dets = list(dict.fromkeys(r["detector"] for r in means))
    for ax, obj in zip(axes, objs):
        for k, det in enumerate(dets):
            rs = sorted((r for r in means if r["detector"] == det and r["objective"] == obj and r["target"] == target),
                        key=lambda r: r["eps"])
            if not rs:
                continue
            xs = [0.0] + [255 * r["eps"] for r in rs]
            ys = [100 * clean[det]] + [100 * r["auroc"] for r in rs]
            smoothed = det.startswith(("ross", "median"))
            ax.plot(xs, ys, marker="o", color=f"C{k % 10}", label=det, ls="-" if smoothed else "--")
        ax.set_xlabel("L∞ budget ε (×1/255)")
        ax.set_title({"min": "PGD-Min (ID attacked)", "max": "PGD-Max (OOD attacked)",
                      "both": "PGD-Both (ID and OOD attacked)"}[obj])
        ax.grid(alpha=0.3)
    axes[0].set_ylabel("AUROC (%), mean over OOD sets")
    axes[0].set_ylim(0, 100)
    axes[-1].legend(fontsize=7)
    fig.suptitle(title)
    _save(fig, path)


def plot_sweep(rows: list, param: str, path, title: str) -> None:
    """AUROC (%) vs a swept parameter per detector and condition (clean / attacked)."""
    plt = _plt()
    fig, ax = plt.subplots(figsize=(6.4, 4.2))
    keys = list(dict.fromkeys((r["detector"], r["condition"]) for r in rows))
    for k, (det, cond) in enumerate(keys):
        rs = sorted((r for r in rows if r["detector"] == det and r["condition"] == cond), key=lambda r: r[param])
        ax.plot([r[param] for r in rs], [100 * r["auroc"] for r in rs], "o-" if cond == "clean" else "s--",
                color=f"C{k % 10}", label=f"{det} ({cond})")
    ax.set_xlabel(param if param != "lam" else "λ (base-score units)")
    ax.set_ylabel("AUROC (%), mean over OOD sets")
    if param in ("n_samples",):
        ax.set_xscale("log")
    ax.set_title(title)
    ax.grid(alpha=0.3)
    ax.legend(fontsize=7)
    _save(fig, path)
