"""What one epoch of adversarial training costs, per network and recipe: the planning table of a
long schedule run in pieces (issue 54).

    python benchmarks/bench_train.py [--archs resnet20,resnet56,wrn-16-4] [--recipes fast,pgd2]
                                     [--steps 3] [--batch 256] [--precisions fp32,bf16] [--threads 1]

Times ``engine.train.train_epoch`` itself (the code ``ross train`` runs) on ``--steps`` batches of
random 32-px images with as many random outlier images (attacked too, as ``adv_outliers``), under
Gaussian noise sigma 0.12, at 8/255: ``fast`` is one signed step of 1.25 eps from a random start
(Wong et al. 2020), ``pgdK`` K steps of 2.5 eps / K. The first batch is a warm-up and not counted.
Per row: seconds per step, seconds per epoch of the 50,000 CIFAR-10 training images (steps x
50,000 / batch), CPU hours for 30 epochs, and the per-epoch guard against catastrophic overfitting
(PGD-10 on ``--check`` validation images, ``engine.train.pgd_accuracy``) on top. Say which CPU a
time comes from: the first lines print it.
"""
from __future__ import annotations

import argparse
import math
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

EPOCH_IMAGES = 50_000


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--archs", default="resnet20,resnet56,wrn-16-4")
    ap.add_argument("--recipes", default="fast,pgd2")
    ap.add_argument("--precisions", default="fp32,bf16")
    ap.add_argument("--steps", type=int, default=3)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--check", type=int, default=100, help="validation images of the per-epoch PGD-10 guard (timed)")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--epochs", type=int, default=30, help="epochs of the planned schedule")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ross_ood.engine.train import TrainConfig, pgd_accuracy, train_epoch
    from ross_ood.models import ARCHS, load_model
    from ross_ood.precision import cpu_info
    info = cpu_info()
    print(f"CPU: {info}; torch {torch.__version__}, {torch.get_num_threads()} thread(s)")
    print(f"{args.steps} timed steps of batch {args.batch} (+ as many attacked outliers), sigma 0.12, 8/255\n")
    print("| network | parameters | recipe | precision | s / step | s / epoch | CPU h / "
          f"{args.epochs} epochs | guard s / epoch |")
    print("|---|---|---|---|---|---|---|---|")
    g = torch.Generator().manual_seed(0)
    n = (args.steps + 1) * args.batch
    x, xo = torch.rand(n, 3, 32, 32, generator=g), torch.rand(n, 3, 32, 32, generator=g)
    y = torch.randint(0, 10, (n,), generator=g)
    for arch in args.archs.split(","):
        if arch not in ARCHS:
            raise SystemExit(f"unknown network {arch!r}; known: {', '.join(ARCHS)}")
        params = sum(p.numel() for p in ARCHS[arch]().parameters())
        for recipe in args.recipes.split(","):
            steps = 1 if recipe == "fast" else int(recipe.removeprefix("pgd"))
            for prec in args.precisions.split(","):
                model = load_model(arch, pretrained=False)
                cfg = TrainConfig(sigma=0.12, epochs=args.epochs, lr=0.05, batch_size=args.batch, precision=prec,
                                  outliers="bench", adv_eps=8 / 255, adv_steps=steps, adv_outliers=True)
                opt = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, nesterov=True)
                warm = x[:args.batch], y[:args.batch]
                train_epoch(model, *warm, opt, cfg, 0, outlier_images=xo[:args.batch])
                t0 = time.perf_counter()
                train_epoch(model, x[args.batch:], y[args.batch:], opt, cfg, 1, outlier_images=xo[args.batch:])
                per_step = (time.perf_counter() - t0) / args.steps
                t0 = time.perf_counter()
                pgd_accuracy(model, x[:args.check], y[:args.check], cfg, seed=0)
                guard = (time.perf_counter() - t0) * 500 / args.check
                epoch = per_step * math.ceil(EPOCH_IMAGES / args.batch)
                print(f"| {arch} | {params / 1e6:.2f} M | {recipe} | {prec} | {per_step:.2f} | {epoch:.0f} | "
                      f"{args.epochs * (epoch + guard) / 3600:.1f} | {guard:.0f} (500 images) |", flush=True)


if __name__ == "__main__":
    main()
