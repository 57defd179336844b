"""Cost at 224 px and 1,000 classes (the imagenet benchmark's MobileNetV2): the network's passes,
and the whole attack's seconds per attacked image per budget and detector.

    OMP_NUM_THREADS=1 python benchmarks/bench_imagenet.py [--threads 1] [--limit 1]
        [--detectors msp,median-energy] [--budgets quick,default] [--eps 2] [--device cpu]

1. The machine (CPU, torch dispatch level, bf16 ISA flags, threads).
2. ms per image of a forward pass (no_grad, batch 25: one image's noisy copies at N 25) and of
   a forward + backward pass (the input gradient of the summed log-sum-exp, batch 8), fp32 and
   bf16, best of 3; and what precision ``auto`` picks here.
3. With ``--limit K`` (> 0; needs the packed archives, ``scripts/pack_imagenet.py``): the attack
   pipeline of ``ross attack`` (all targets: transfer, adaptive with its gradient-free leg, worst;
   PGD-Min on K ID test images and PGD-Max on K images of each OOD set, early stopping as by
   default, precision auto) per detector and budget: seconds per attacked image, forward and
   backward passes per attacked image (counted by hooks on the network), and the CPU hours a
   row at 50 / 200 images per set would take at that rate (ID + 2 OOD sets).
The ROSS-vs-plain time ratio and peak memory at N 25 / 100: ``benchmarks/bench_ross.py --model
mobilenet-v2-imagenet --images 16 --batch 4 --chunk 50``.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))
sys.path.insert(0, str(Path(__file__).resolve().parent))
from bench_precision import _best  # noqa: E402  (best of 3 after a warm-up)


class _Counter:
    """Images through the network's forward, and images whose backward pass ran."""

    def __init__(self, net):
        self.fwd = self.bwd = 0
        net.register_forward_hook(self._hook)

    def _hook(self, _m, _i, out):
        self.fwd += out.shape[0]
        if out.requires_grad:
            out.register_hook(lambda g, n=out.shape[0]: self._back(n))

    def _back(self, n):
        self.bwd += n


def _attack_table(args) -> None:
    from ross_ood.cli.jobs.common import clean_run
    from ross_ood.cli.settings import AttackSettings
    from ross_ood.engine.adversarial import attack_benchmark
    from ross_ood.engine.report import BUDGET_PRESETS
    from ross_ood.store import BlockCache
    for det in args.detectors.split(","):
        st = AttackSettings(data_root=args.data_root, out="runs/bench-imagenet", limit=args.limit, detectors=[det],
                            eps=[args.eps], benchmark="imagenet", n_samples=25, sigma=args.sigma,
                            noise_space="pixel", progress=False, bootstrap=0, device=args.device)
        run = clean_run(st)
        counter = _Counter(run.model.net)
        attacked = len(run.bench.id) + sum(len(v) for v in run.bench.ood.values())
        for name in args.budgets.split(","):
            budget = dataclasses.replace(BUDGET_PRESETS[name], precision=args.precision)
            counter.fwd = counter.bwd = 0
            t0 = time.perf_counter()
            res = attack_benchmark(run.model, run.bench, run.dets, run.result.scores, eps_list=st.eps_values,
                                   objectives=["min", "max"], budget=budget, cache=BlockCache(None), n_resamples=0)
            sec = (time.perf_counter() - t0) / attacked
            per_row = {n: sec * 3 * n / 3600 for n in (50, 200)}
            print(f"| {det} | {name} | {res.budget.precision} | {sec:.1f} | {counter.fwd / attacked:.0f} | "
                  f"{counter.bwd / attacked:.0f} | {per_row[50]:.1f} | {per_row[200]:.1f} |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--limit", type=int, default=0, help="images per set of the attack table (0: none)")
    ap.add_argument("--detectors", default="msp,median-energy")
    ap.add_argument("--budgets", default="quick,default")
    ap.add_argument("--precision", default="auto")
    ap.add_argument("--eps", default="2")
    ap.add_argument("--sigma", type=float, default=0.25, help="smoothing noise (pixel units) of smoothed detectors")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ross_ood import precision as P
    from ross_ood.models import load_model
    model = load_model("mobilenet-v2-imagenet", device=args.device)
    info = P.cpu_info()
    print(f"CPU {info['cpu']}, torch dispatch {info['cpu_capability']}, bf16 ISA "
          f"{', '.join(info['cpu_bf16']) or 'none'}; torch {torch.__version__}, {args.threads} thread(s), "
          f"device {args.device}\n")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(25, 3, 224, 224, generator=g).to(args.device)
    print("| precision | forward ms/img (batch 25) | forward+backward ms/img (batch 8) |\n|---|---|---|")
    for p in ("fp32", "bf16"):
        def fwd():
            with torch.no_grad(), P.network_precision(model, p):
                model(x)

        def fwd_bwd():
            xr = x[:8].clone().requires_grad_(True)
            with P.network_precision(model, p):
                s = model(xr).float().logsumexp(1).sum()
            torch.autograd.grad(s, xr)
        print(f"| {p} | {_best(fwd, 3) / 25 * 1e3:.1f} | {_best(fwd_bwd, 3) / 8 * 1e3:.1f} |", flush=True)
    choice = P.resolve_precision("auto", model)
    print(f"\nprecision auto -> {choice.precision}: {choice.reason}")
    if args.limit:
        print(f"\nattack at {args.eps}/255 (pixel), PGD-Min on {args.limit} ID test image(s) and PGD-Max on {args.limit} "
              "of each OOD set, all targets; smoothed detectors N 25, sigma "
              f"{args.sigma} (pixel)\n")
        print("| detector | budget | precision | s / attacked image | forward / image | backward / image | "
              "CPU h per row at 50 / set | at 200 / set |\n|---|---|---|---|---|---|---|---|")
        _attack_table(args)


if __name__ == "__main__":
    main()
