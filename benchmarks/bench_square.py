"""The gradient-free leg beside the gradient legs: strength on masked gradients, and cost.

    python benchmarks/bench_square.py [--limit 100] [--detectors masked_energy,energy] [--eps 8]
        [--queries 500] [--model resnet20] [--device cpu]

On the real CIFAR-10 test set (near-OOD: CIFAR-100 and Tiny ImageNet, ``--limit`` images per set),
runs ``attack_benchmark`` twice per detector and eps, without a cache: the gradient legs alone
(``transfer`` + ``adaptive``: PGD, APGD, EOT-PGD; the default budget without Square) and the
gradient-free leg alone (``square``, ``--queries`` per input), PGD-Min and PGD-Max, early stopping
on (as in every run). It prints, per leg: network forward and backward passes per attacked image
(counted by hooks on the network, not by a formula), wall seconds per attacked image, the
PGD-Both AUROC (mean over the sets), and the paired difference
square - gradient and (worst over both) - gradient over the same images.

Detectors: any name of ``ross eval``; ``masked_energy``, ``nograd_energy``, ``staircase_energy``
(Energy's values with masked gradients) come from ``benchmarks/masked_plugin.py``, loaded here.
Target (issue 45): on a masked detector the gradient-free leg's PGD-Both AUROC is at least 30
points below the gradient legs' at 8/255 with at least 100 images per set.
"""
from __future__ import annotations

import argparse
import dataclasses
import sys
import time
from pathlib import Path

import numpy as np
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "src"))
sys.path.insert(0, str(ROOT))

from benchmarks.bench_attack import PassCounter  # noqa: E402
from ross_ood.engine.adversarial import AttackBudget, attack_benchmark  # noqa: E402
from ross_ood.metrics import auroc_by_ranks, paired_auroc_difference  # noqa: E402
from ross_ood.store import BlockCache  # noqa: E402


def _pair(scores, clean, det, eps, sets, legs):
    """PGD-Both (id scores, {set: scores}): per input the worst over ``legs``."""
    def worst(side, s):
        c = np.stack([scores[(det, eps, side, s, leg)] for leg in legs])
        return c.min(0) if side == "min" else c.max(0)
    return worst("min", "id_test"), {s: worst("max", s) for s in sets}


def _auroc(pair) -> float:
    return float(np.mean([auroc_by_ranks(pair[0], v) for v in pair[1].values()]))


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--limit", type=int, default=100, help="images per set (ID test and each near-OOD set)")
    ap.add_argument("--detectors", default="masked_energy,energy")
    ap.add_argument("--eps", default="8", help="budgets in 1/255, comma-separated")
    ap.add_argument("--queries", type=int, default=AttackBudget().square_queries)
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--sigma", type=float, default=0.12, help="smoothing noise of smoothed detectors (pixel)")
    ap.add_argument("-N", "--n-samples", type=int, default=25)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--data-root", default=None)
    ap.add_argument("--bootstrap", type=int, default=1000)
    args = ap.parse_args(argv)

    from ross_ood.cli.jobs.common import clean_run
    from ross_ood.cli.plugins import load_plugin
    from ross_ood.cli.settings import AttackSettings
    load_plugin(str(ROOT / "benchmarks" / "masked_plugin.py"))
    st = AttackSettings(data_root=args.data_root, out="runs/bench-square", limit=args.limit, detectors=args.detectors,
                        eps=args.eps, model=args.model, sigma=args.sigma, noise_space="pixel", n_samples=args.n_samples,
                        ood_sets=["near"], progress=False, bootstrap=args.bootstrap, device=args.device)
    run = clean_run(st)
    sets = list(run.bench.ood)
    attacked = len(run.bench.id) + sum(len(run.bench.ood[s]) for s in sets)
    print(f"model {run.model_name}, {args.limit} images per set (ID test + {', '.join(sets)}): {attacked} attacked "
          f"images per detector and eps (PGD-Min on ID, PGD-Max on OOD); device {args.device}, torch threads "
          f"{torch.get_num_threads()}\n")
    legs = {"gradient": (["transfer", "adaptive"], dataclasses.replace(AttackBudget(), square_queries=0)),
            "square": (["square"], AttackBudget(square_queries=args.queries))}
    print("| detector | eps | leg | fwd / image | bwd / image | s / image | PGD-Both AUROC | minus gradient legs, paired [95%] |")
    print("|---|---|---|---|---|---|---|---|")
    clean = {n: {s: np.asarray(v["score"], np.float64) for s, v in per.items()} for n, per in run.result.scores.items()}
    for name, det in run.dets.items():
        for eps in st.eps_values:
            scores = {}
            cost = {}
            for leg, (targets, budget) in legs.items():
                counter = PassCounter(run.model.net)
                t0 = time.time()
                res = attack_benchmark(run.model, run.bench, {name: det}, {name: run.result.scores[name]},
                                       eps_list=[eps], objectives=["min", "max"], targets=targets, budget=budget,
                                       cache=BlockCache(None), n_resamples=0)
                cost[leg] = (counter.forward / attacked, counter.backward / attacked, (time.time() - t0) / attacked)
                counter.close()
                for k, v in res.scores.items():
                    scores[k] = v
            pairs = {"gradient": _pair(scores, clean, name, eps, sets, ["transfer", "adaptive"]),
                     "square": _pair(scores, clean, name, eps, sets, ["square"]),
                     "all legs": _pair(scores, clean, name, eps, sets, ["transfer", "adaptive", "square"])}
            for leg, pair in pairs.items():
                diff = ""
                if leg != "gradient":
                    d = paired_auroc_difference(pair, pairs["gradient"], args.bootstrap, seed=0)["mean"]
                    diff = f"{100 * d['diff']:+.2f} [{100 * d['lo']:+.2f}, {100 * d['hi']:+.2f}]"
                fwd, bwd, sec = cost.get(leg, (sum(c[0] for c in cost.values()), sum(c[1] for c in cost.values()),
                                               sum(c[2] for c in cost.values())))
                print(f"| {name} | {round(eps * 255, 2):g}/255 | {leg} | {fwd:.0f} | {bwd:.0f} | {sec:.3f} | "
                      f"{100 * _auroc(pair):.2f} | {diff} |", flush=True)


if __name__ == "__main__":
    main()
