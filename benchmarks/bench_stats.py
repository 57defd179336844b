"""Cost of the training statistics of KNN, Mahalanobis, ViM and ReAct: fitting them on a
benchmark's training set, building each score from them, and scoring a batch.

    python benchmarks/bench_stats.py [--model resnet20-original] [--benchmark cifar10] [--limit N] [--threads 2]

Prints a table: wall seconds and peak resident memory (VmHWM) after each step. Target (issue
26): fitting the statistics of one model on the whole training set in <= 2 minutes on 2 CPU
cores, memory bounded (KNN scores in chunks against the (N, D) bank; no N x N matrix).
"""
from __future__ import annotations

import argparse
import time

import torch


def _peak_mb() -> float:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--model", default="resnet20-original")
    ap.add_argument("--benchmark", default="cifar10")
    ap.add_argument("--limit", type=int, default=None, help="training images (default: all)")
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    import ross_ood
    from ross_ood.data import BENCHMARKS, ZipImageSet, default_data_root
    from ross_ood.data.image import SubsetView, stratified_subset
    from ross_ood.engine.train import load_images
    from ross_ood.models import load_model
    root = default_data_root(args.data_root)
    model = load_model(args.model, root)
    rows = []
    t0 = time.perf_counter()
    train = ZipImageSet(root / BENCHMARKS[args.benchmark].train)
    if args.limit:
        train = SubsetView(train, stratified_subset(len(train), args.limit, train.labels, 0))
    train.prepare(model.channels, model.input_size)
    x, y = load_images(train)
    rows.append((f"decode {len(x)} training images", time.perf_counter() - t0, _peak_mb()))
    t0 = time.perf_counter()
    stats = ross_ood.fit_feature_stats(model, x, y)
    rows.append((f"features of {len(x)} images (fit_feature_stats)", time.perf_counter() - t0, _peak_mb()))
    del x
    probe = torch.rand(512, 3, 32, 32, generator=torch.Generator().manual_seed(0))
    for name in ("knn", "mahalanobis", "vim", "react"):
        t0 = time.perf_counter()
        score = ross_ood.get_score(name, stats=stats, **({"model": model} if name == "vim" else {}))
        built = time.perf_counter() - t0
        rows.append((f"build {name}", built, _peak_mb()))
        t0 = time.perf_counter()
        with torch.no_grad():
            score(model, probe)
        rows.append((f"score 512 images with {name}", time.perf_counter() - t0, _peak_mb()))
    print(f"{args.model} on {args.benchmark}'s training set, {args.threads} threads\n")
    print("| step | wall s | peak RSS MB |\n|---|---|---|")
    for name, s, mb in rows:
        print(f"| {name} | {s:.2f} | {mb:.0f} |")
    fit = rows[0][1] + rows[1][1] + sum(r[1] for r in rows[2::2])
    print(f"\nfitting in all (decode + features + build the four): {fit:.1f} s")


if __name__ == "__main__":
    main()
