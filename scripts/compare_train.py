#!/usr/bin/env python3
"""Two training runs of issue 54's pilots, paired on the same check images: the per-epoch PGD-10
accuracy under noise (``val_pgd_correct``, the catastrophic-overfitting guard's per-image outcomes)
and the clean / noisy validation accuracy, epoch by epoch, with the paired difference and its 95%
percentile bootstrap interval (scipy.stats.bootstrap, paired, 10,000 resamples, seed 0).

    python scripts/compare_train.py results/train/A.pieces.json results/train/B.pieces.json [--pair 1:2,2:4]

Epoch k of A pairs with epoch k of B, or as --pair says (A's epoch : B's epoch, e.g. to pair a costlier
run's epochs with the cheaper run's epochs of about the same training time). The seconds are each run's
training time up to that epoch, summed over its pieces. Runs whose checks differ (images, seed, radius,
noise) are refused: their outcomes do not pair.
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


def cumulative_seconds(doc: dict) -> dict[int, float]:
    """Training seconds from the start of the schedule to the end of each epoch: an epoch's ``wall_s``
    counts from the start of its piece, so the pieces before it are added."""
    hist = {h["epoch"]: h for h in doc["history"]}
    out, before = {}, 0.0
    for p in doc.get("pieces") or [{"first_epoch": 1, "last_epoch": len(hist), "wall_s": 0.0}]:
        for e in range(p["first_epoch"], p["last_epoch"] + 1):
            out[e] = before + hist[e]["wall_s"]
        before += p["wall_s"]
    return out


def parse_pairs(text: str | None, a: dict, b: dict) -> list[tuple[dict, dict]]:
    """The epochs to pair: the same epoch numbers (default), or ``A:B,A:B`` pairs."""
    ha, hb = {h["epoch"]: h for h in a["history"]}, {h["epoch"]: h for h in b["history"]}
    if text is None:
        return [(ha[e], hb[e]) for e in sorted(ha) if e in hb]
    pairs = []
    for item in text.split(","):
        try:
            ea, eb = (int(v) for v in item.split(":"))
        except ValueError:
            raise SystemExit(f"--pair {text!r}: give A_EPOCH:B_EPOCH pairs, e.g. 1:2,2:4") from None
        missing = [f"{n} has no epoch {e}" for n, e, h in (("A", ea, ha), ("B", eb, hb)) if e not in h]
        if missing:
            raise SystemExit(f"--pair {item}: " + "; ".join(missing))
        pairs.append((ha[ea], hb[eb]))
    return pairs


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("a")
    ap.add_argument("b")
    ap.add_argument("--pair", help="A_EPOCH:B_EPOCH,... (default: the same epochs)")
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
    sec_a, sec_b = cumulative_seconds(a), cumulative_seconds(b)
    print("| epoch A : B | A val / noisy / PGD | B val / noisy / PGD | PGD A - B [95%] | A s | B s |")
    print("|---|---|---|---|---|---|")
    for ha, hb in parse_pairs(args.pair, a, b):
        ca = np.frombuffer(ha["val_pgd_correct"].encode(), np.uint8) - ord("0")
        cb = np.frombuffer(hb["val_pgd_correct"].encode(), np.uint8) - ord("0")
        if ca.size != cb.size:
            raise SystemExit(f"epoch {ha['epoch']}: {ca.size} vs {cb.size} check images")
        d, lo, hi = paired_difference(ca.astype(float), cb.astype(float))
        print(f"| {ha['epoch']} : {hb['epoch']} | {100 * ha['val_acc']:.2f} / {100 * ha['val_acc_noisy']:.2f} / {100 * ca.mean():.2f} | "
              f"{100 * hb['val_acc']:.2f} / {100 * hb['val_acc_noisy']:.2f} / {100 * cb.mean():.2f} | "
              f"{100 * d:+.2f} [{100 * lo:+.2f}, {100 * hi:+.2f}] | {sec_a[ha['epoch']]:.0f} | "
              f"{sec_b[hb['epoch']]:.0f} |")


if __name__ == "__main__":
    sys.exit(main())
