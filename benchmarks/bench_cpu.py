"""CPU execution of the attack's inner loop: what layout, batch size and mode cost.

    python benchmarks/bench_cpu.py [--model resnet20] [--threads 1] [--batches 64,128,512]

The adaptive attacks spend their time in forward+backward passes of the network on batches
of noisy copies (EOT: attack batch x attack_n images) and in forward-only passes (the
order-statistic surrogate, early-stopping checks, scoring). For each batch size this times,
on random [0, 1] images of the model's shape, ms per image for:
- ``fwd (no_grad)``: forward under ``torch.no_grad`` (scoring, checks, certification);
- ``fwd (inference_mode)``: forward under ``torch.inference_mode``;
- ``fwd+bwd``: forward, then the input gradient of the summed logits (what an attack step does);
each with three layouts: all contiguous, channels-last input (what ``ModelWrapper`` feeds
the network on the CPU), and channels-last input and weights.
Each cell is the best of ``--repeats`` timings (the machine is shared and noisy; the
minimum is the least disturbed). Prints a Markdown table.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))


def _time(fn, images: int, repeats: int) -> float:
    fn()  # warm-up (allocator, oneDNN primitive cache)
    best = float("inf")
    for _ in range(repeats):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best / images * 1e3


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default="resnet20")
    ap.add_argument("--threads", default="1", help="comma-separated torch thread counts")
    ap.add_argument("--batches", default="64,128,256,512")
    ap.add_argument("--repeats", type=int, default=3)
    ap.add_argument("--data-root", default=None)
    args = ap.parse_args(argv)

    from ross_ood.data import default_data_root
    from ross_ood.models import load_model
    model = load_model(args.model, default_data_root(args.data_root), device="cpu")
    net = model.net
    g = torch.Generator().manual_seed(0)
    print(f"model {args.model}, torch {torch.__version__}, best of {args.repeats}; ms per image\n")
    head = ["threads", "batch", "layout", "fwd (no_grad)", "fwd (inference_mode)", "fwd+bwd"]
    print("| " + " | ".join(head) + " |\n|" + "---|" * len(head))
    layouts = {"contiguous": (False, torch.contiguous_format),
               "channels-last input (the wrapper's default)": (True, torch.contiguous_format),
               "channels-last input and weights": (True, torch.channels_last)}
    for threads in [int(t) for t in args.threads.split(",")]:
        torch.set_num_threads(threads)
        for b in [int(v) for v in args.batches.split(",")]:
            x = torch.rand(b, 3, 32, 32, generator=g)
            for layout, (cl_input, weights) in layouts.items():
                model.channels_last = cl_input
                net.to(memory_format=weights)

                def fwd():
                    with torch.no_grad():
                        model(x)

                def fwd_inf():
                    with torch.inference_mode():
                        model(x)

                def fwd_bwd():
                    xr = x.clone().requires_grad_(True)
                    torch.autograd.grad(model(xr).sum(), xr)

                cells = [_time(f, b, args.repeats) for f in (fwd, fwd_inf, fwd_bwd)]
                print(f"| {threads} | {b} | {layout} | " + " | ".join(f"{c:.3f}" for c in cells) + " |")
            net.to(memory_format=torch.contiguous_format)
            model.channels_last = True


if __name__ == "__main__":
    main()
