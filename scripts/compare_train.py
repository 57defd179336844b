#!/usr/bin/env python3
"""Two training runs of issue 54's pilots, paired on the same check images: the per-epoch PGD-10
accuracy under noise (``val_pgd_correct``, the catastrophic-overfitting guard's per-image outcomes)
and the clean / noisy validation accuracy, epoch by epoch, with the paired difference and its 95%
percentile bootstrap interval (scipy.stats.bootstrap, paired, 10,000 resamples, seed 0).

    python scripts/compare_train.py results/train/A.pieces.json results/train/B.pieces.json

Runs whose checks differ (images, seed, radius, noise) are refused: their outcomes do not pair.
"""
from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

import numpy as np
from scipy import stats

#: the settings that decide which images the check attacks and how
CHECK_KEYS = ("benchmark", "adv_check", "seed", "adv_eps", "sigma")


def _load(path: str) -> dict:
    doc = json.loads(Path(path).read_text())
    hist = doc.get("history") or []
    if not hist or "val_pgd_correct" not in hist[0]:
        raise SystemExit(f"{path}: no per-image PGD outcomes (a run with adv_check > 0, trained by this version)")
    return doc


def paired_difference(a: np.ndarray, b: np.ndarray) -> tuple[float, float, float]:
    """mean(a) - mean(b) on the same images, with its 95% paired percentile bootstrap interval."""
    d = float(a.mean() - b.mean())
    if np.array_equal(a, b):
        return d, d, d
    res = stats.bootstrap((a, b), lambda x, y, axis=-1: x.mean(axis) - y.mean(axis), paired=True, vectorized=True,
                          n_resamples=10_000, method="percentile", random_state=np.random.default_rng(0))
    return d, float(res.confidence_interval.low), float(res.confidence_interval.high)


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    args = ap.parse_args(argv)
    a, b = _load(args.a), _load(args.b)
    sa, sb = a.get("settings", {}), b.get("settings", {})
    diff = [k for k in CHECK_KEYS if sa.get(k) != sb.get(k)]
    if diff:
        raise SystemExit("the runs' checks differ in " + ", ".join(f"{k} ({sa.get(k)!r} vs {sb.get(k)!r})" for k in diff)
                         + ": their outcomes do not pair")
    na, nb = Path(args.a).name.split(".")[0], Path(args.b).name.split(".")[0]
    print(f"A = {na}, B = {nb}; PGD-10 at {sa.get('adv_eps')}/255 under sigma {sa.get('sigma')} on the same "
          f"{len(a['history'][0]['val_pgd_correct'])} validation images; percentages\n")
    print("| epoch | A val / noisy / PGD | B val / noisy / PGD | PGD A - B [95%] | A s | B s |")
    print("|---|---|---|---|---|---|")
    for ha, hb in zip(a["history"], b["history"]):
        ca = np.frombuffer(ha["val_pgd_correct"].encode(), np.uint8) - ord("0")
        cb = np.frombuffer(hb["val_pgd_correct"].encode(), np.uint8) - ord("0")
        if ca.size != cb.size:
            raise SystemExit(f"epoch {ha['epoch']}: {ca.size} vs {cb.size} check images")
        d, lo, hi = paired_difference(ca.astype(float), cb.astype(float))
        print(f"| {ha['epoch']} | {100 * ha['val_acc']:.2f} / {100 * ha['val_acc_noisy']:.2f} / {100 * ca.mean():.2f} | "
              f"{100 * hb['val_acc']:.2f} / {100 * hb['val_acc_noisy']:.2f} / {100 * cb.mean():.2f} | "
              f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {ha['wall_s']:.0f} | {hb['wall_s']:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
