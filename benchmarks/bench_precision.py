"""fp32 vs bf16 autocast: speed of the network's passes, what precision ``auto`` chooses and why,
agreement, and the whole attack's seconds per attacked image per budget.

    python benchmarks/bench_precision.py [--model resnet20-noise012] [--threads 1] [--batch 64]
                                         [--attack-limit 4] [--budgets quick,default]

1. The machine: CPU, torch's dispatch level, the bf16 ISA flags, threads, and the environment
   variables that cap the instruction set (``ATEN_CPU_CAPABILITY=avx2 ONEDNN_MAX_CPU_ISA=AVX2``
   make a CPU with AVX-512 BF16 run the kernels of a CPU without it).
2. Speed: ms per image, best of ``--repeats``, of a forward pass (no_grad) and a forward+backward
   pass (the input gradient of the summed MSP, what an attack step needs) on random [0, 1]
   images of the model's shape, through ``ModelWrapper`` at ``precision.network_precision``.
3. ``auto``: ``precision.resolve_precision("auto", model)`` measured afresh (its own cache file),
   the choice, its reason and what the measurement cost.
4. Agreement on ``--images`` real CIFAR-10 test images: share of equal predicted classes, the
   largest absolute MSP difference, the share of same input-gradient signs.
5. With ``--attack-limit K`` (> 0): the attack of median-Energy (N 25, sigma 0.12) on
   ``--attack-model`` at 2/255, PGD-Min on K ID test images and PGD-Max on K Tiny ImageNet images
   (early stopping as by default), per budget in ``--budgets`` and precision (``auto``, ``fp32``;
   ``--with-bf16`` adds forced bf16, very slow where bf16 is emulated): seconds per attacked image
   and auto's time as a multiple of fp32's. Whole attacks in both precisions with paired intervals
   on strength: ``benchmarks/bench_strength.py --configs new-fp32,new-bf16``.
"""
from __future__ import annotations

import argparse
import dataclasses
import os
import sys
import tempfile
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


def _attack_table(args, root) -> None:
    from ross_ood.cli.jobs.common import clean_run
    from ross_ood.cli.settings import AttackSettings
    from ross_ood.engine.adversarial import attack_benchmark
    from ross_ood.engine.report import BUDGET_PRESETS
    from ross_ood.store import BlockCache
    st = AttackSettings(data_root=str(root), out="runs/bench-precision", limit=args.attack_limit,
                        detectors=["median-energy"], eps=["2"], model=args.attack_model, sigma=0.12,
                        noise_space="pixel", n_samples=25, ood_sets=["tin"], progress=False, bootstrap=0,
                        device=args.device)
    run = clean_run(st)
    attacked = len(run.bench.id) + sum(len(v) for v in run.bench.ood.values())
    print(f"\nattack: median-Energy (N 25, sigma 0.12) on {run.model_name}, 2/255, PGD-Min on {len(run.bench.id)} ID "
          f"test + PGD-Max on {attacked - len(run.bench.id)} Tiny ImageNet images, all targets, early stopping\n")
    print("| budget | precision asked | ran | s / attacked image | vs fp32 |\n|---|---|---|---|---|")
    precisions = ["fp32", "auto"] + (["bf16"] if args.with_bf16 else [])
    for name in args.budgets.split(","):
        fp32 = None
        for p in precisions:
            budget = dataclasses.replace(BUDGET_PRESETS[name], precision=p)
            t0 = time.perf_counter()
            res = attack_benchmark(run.model, run.bench, run.dets, run.result.scores, eps_list=st.eps_values,
                                   objectives=["min", "max"], budget=budget, cache=BlockCache(None), n_resamples=0)
            sec = (time.perf_counter() - t0) / attacked
            fp32 = fp32 or sec
            print(f"| {name} | {p} | {res.budget.precision} | {sec:.2f} | {sec / fp32:.2f}x |", flush=True)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20-noise012")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--batch", type=int, default=64)
    ap.add_argument("--images", type=int, default=256)
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--attack-limit", type=int, default=0, help="images per set of the whole-attack table (0: none)")
    ap.add_argument("--attack-model", default="resnet20-noise012-e54-adv4-tinoe")
    ap.add_argument("--budgets", default="quick,default")
    ap.add_argument("--with-bf16", action="store_true", help="the attack table also forces bf16")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)
    from ross_ood import precision as P
    from ross_ood.data import ZipImageSet, default_data_root
    from ross_ood.data.image import SubsetView
    from ross_ood.models import load_model
    from ross_ood.scores import get_score
    root = default_data_root(args.data_root)
    model = load_model(args.model, root, device=args.device)
    msp = get_score("msp")
    info = P.cpu_info()
    caps = {k: os.environ[k] for k in ("ATEN_CPU_CAPABILITY", "ONEDNN_MAX_CPU_ISA") if k in os.environ}
    print(f"CPU {info['cpu']}, torch dispatch {info['cpu_capability']}, bf16 ISA "
          f"{', '.join(info['cpu_bf16']) or 'none'}{'; capped by ' + str(caps) if caps else ''}; "
          f"torch {torch.__version__}, {args.threads} thread(s)")
    print(f"model {args.model}, device {args.device}, batch {args.batch}, best of {args.repeats}\n")
    precisions = ["fp32", "bf16"] + (["fp16"] if torch.device(args.device).type == "cuda" else [])
    x = torch.rand(args.batch, 3, 32, 32, generator=torch.Generator().manual_seed(0)).to(args.device)
    print("| precision | fwd ms/img | fwd+bwd ms/img | fwd speed-up | fwd+bwd speed-up |\n|---|---|---|---|---|")
    base = None
    for p in precisions:
        def fwd():
            with torch.no_grad(), P.network_precision(model, p):
                model(x)

        def fwd_bwd():
            xr = x.clone().requires_grad_(True)
            with P.network_precision(model, p):
                s = msp(model, xr)
            torch.autograd.grad(s.sum(), xr)
        t = [_best(f, args.repeats) / args.batch * 1e3 for f in (fwd, fwd_bwd)]
        base = base or t
        print(f"| {p} | {t[0]:.3f} | {t[1]:.3f} | {base[0] / t[0]:.2f}x | {base[1] / t[1]:.2f}x |")
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["ROSS_PRECISION_CACHE"] = str(Path(tmp) / "precision.json")  # measured afresh
        t0 = time.perf_counter()
        choice = P.resolve_precision("auto", model)
        cost = time.perf_counter() - t0
    os.environ.pop("ROSS_PRECISION_CACHE")
    print(f"\nprecision auto -> {choice.precision}: {choice.reason} (margin: bf16 at most {P.BF16_MARGIN:g} of fp32's "
          f"time); the measurement took {cost:.2f} s and is cached per machine and network")
    ds = ZipImageSet(Path(root) / "cifar10" / "test.zip").prepare(3, 32)
    sub = SubsetView(ds, list(range(0, len(ds), max(1, len(ds) // args.images)))[:args.images])
    xs = torch.stack([sub[i][0] for i in range(len(sub))]).to(args.device)
    out = {}
    for p in precisions:
        xr = xs.clone().requires_grad_(True)
        with P.network_precision(model, p):
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
    if args.attack_limit:
        _attack_table(args, root)


if __name__ == "__main__":
    main()
