"""fp32 vs bf16 autocast (issue 18): speed and agreement of the network's passes.

    python benchmarks/bench_precision.py [--model resnet20-noise012] [--threads 1] [--batch 128] [--images 256]

Speed: ms per image, best of ``--repeats``, for a forward pass (no_grad) and a forward+backward
pass (the input gradient of the summed MSP, what an attack step needs), on random [0, 1] images
of the model's shape, through ``ModelWrapper`` at ``precision.network_precision`` (the network at
that precision, logits and MSP in float32: what attacks do).
Agreement on ``--images`` real CIFAR-10 test images: share of equal predicted classes, the
largest absolute MSP difference, and the share of pixels whose input-gradient sign (of MSP) is
the same in both precisions. Whole attacks in both precisions, on the same images with paired
intervals: ``benchmarks/bench_strength.py --configs new-fp32,new-bf16``.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _best(fn, repeats):
    fn()
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20-noise012")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=128)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ross_ood.data import ZipImageSet, default_data_root
    from ross_ood.data.image import SubsetView
    from ross_ood.models import load_model
    from ross_ood.precision import network_precision
    from ross_ood.scores import get_score
    root = default_data_root(args.data_root)
    model = load_model(args.model, root, device=args.device)
    msp = get_score("msp")
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.device(args.device).type == "cuda" else [])
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(args.device)
    print(f"model {args.model}, device {args.device}, torch {torch.__version__}, {args.threads} thread(s), "
          f"batch {args.batch}, best of {args.repeats}\n")
    print("| precision | fwd ms/img | fwd+bwd ms/img | fwd speed-up | fwd+bwd speed-up |\n|---|---|---|---|---|")
    base = None
    for p in precisions:
        def fwd():
            with torch.no_grad(), network_precision(model, p):
                model(x)

        def fwd_bwd():
            xr = x.clone().requires_grad_(True)
            with network_precision(model, p):
                s = msp(model, xr)
            torch.autograd.grad(s.sum(), xr)
        t = [_best(f, args.repeats) / args.batch * 1e3 for f in (fwd, fwd_bwd)]
        base = base or t
        print(f"| {p} | {t[0]:.3f} | {t[1]:.3f} | {base[0] / t[0]:.2f}x | {base[1] / t[1]:.2f}x |")
    ds = ZipImageSet(Path(root) / "cifar10" / "test.zip").prepare(3, 32)
    sub = SubsetView(ds, list(range(0, len(ds), max(1, len(ds) // args.images)))[:args.images])
    xs = torch.stack([sub[i][0] for i in range(len(sub))]).to(args.device)
    out = {}
    for p in precisions:
        xr = xs.clone().requires_grad_(True)
        with network_precision(model, p):
            logits = model(xr)
            s = msp(model, xr)
        (g,) = torch.autograd.grad(s.sum(), xr)
        out[p] = (logits.argmax(1), s.detach(), g.sign())
    print(f"\nagreement with fp32 on {len(xs)} CIFAR-10 test images\n")
    print("| precision | same predicted class | max abs MSP difference | same input-gradient sign |\n|---|---|---|---|")
    for p in precisions[1:]:
        cls = (out[p][0] == out["fp32"][0]).float().mean().item()
        dm = (out[p][1] - out["fp32"][1]).abs().max().item()
        sg = (out[p][2] == out["fp32"][2]).float().mean().item()
        print(f"| {p} | {100 * cls:.2f}% | {dm:.4f} | {100 * sg:.2f}% |")


if __name__ == "__main__":
    main()
