"""ROSS cost on a real network: time per image vs N plain forwards, and peak memory vs N.

    python benchmarks/bench_ross.py [--model resnet20] [--images 256] [--device cpu]
    python benchmarks/bench_ross.py --model mobilenet-v2-imagenet --images 16 --batch 4 --chunk 50   # 224 px

Prints a table. Targets (issue 2): ROSS time / (N x one plain forward) <= 1.10, and peak
memory at N = 100 <= 1.1 x peak at N = 25 (the noisy batch is evaluated in chunks).
Each memory measurement runs in a fresh subprocess; the peak resident set (VmHWM) is reset
through /proc/self/clear_refs just before scoring, so the figure is the peak while scoring
(on CUDA, torch.cuda.max_memory_allocated is used instead).
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time

import torch


def _setup(args):
    from ross_ood.data import default_data_root
    from ross_ood.models import load_model
    model = load_model(args.model, default_data_root(args.data_root), device=args.device)
    g = torch.Generator().manual_seed(0)
    size = model.input_size or 32  # random images of the network's own size (224 for the ImageNet model)
    x = torch.rand(args.images, model.channels, size, size, generator=g).to(args.device)
    return model, x


def _sync(device):
    if str(device).startswith("cuda"):
        torch.cuda.synchronize()


def time_ratio(args):
    import ross_ood
    model, x = _setup(args)
    rows = []
    for n in args.n:
        det = ross_ood.ROSS(model, base=args.base, n_samples=n, sigma=0.05, chunk_size=args.chunk,
                            batch_size=args.batch, noise_device=args.noise_device)
        det.fit(x[:32])
        # plain forward at the same batch size as the ROSS chunks, with the same features hook;
        # plain and ROSS alternate, best of --repeats each (other jobs on the machine slow both alike)
        xs = x
        plain = ross = float("inf")
        with torch.no_grad():
            model.outputs(xs[: args.chunk])  # warm-up
            det.score(x[: args.batch])
            for _ in range(args.repeats):
                _sync(args.device)
                t0 = time.perf_counter()
                reps = 0
                while reps * args.images < n * args.images:  # N passes over the images
                    for i in range(0, args.images, args.chunk):
                        ross_ood.base_score(args.base, model, xs[i:i + args.chunk], check=False)
                    reps += 1
                _sync(args.device)
                plain = min(plain, (time.perf_counter() - t0) / (n * args.images))
                t0 = time.perf_counter()
                for i in range(0, args.images, args.batch):
                    det.score(x[i:i + args.batch])
                _sync(args.device)
                ross = min(ross, (time.perf_counter() - t0) / args.images)
        rows.append((n, plain * 1e3, ross * 1e3, ross / (n * plain)))
    return rows


def peak_memory(args, n):
    import ross_ood
    model, x = _setup(args)
    det = ross_ood.ROSS(model, base=args.base, n_samples=n, sigma=0.05, chunk_size=args.chunk,
                        batch_size=args.batch, noise_device=args.noise_device).fit(x[:8])
    if str(args.device).startswith("cuda"):
        torch.cuda.reset_peak_memory_stats()
    base = _vm("VmRSS")
    with open("/proc/self/clear_refs", "w") as f:  # resets VmHWM to the current RSS (Linux >= 4.0)
        f.write("5")
    for i in range(0, args.images, args.batch):
        det.score(x[i:i + args.batch])
    if str(args.device).startswith("cuda"):
        return torch.cuda.max_memory_allocated() / 2**20, 0.0
    peak = _vm("VmHWM")
    return peak, peak - base


def _vm(field: str) -> float:
    """A memory figure of this process from /proc/self/status, in MiB."""
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"{field} not in /proc/self/status")


def main():
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--model", default="resnet20")
    p.add_argument("--base", default="fdbd")
    p.add_argument("--data-root", default=None)
    p.add_argument("--device", default="cpu")
    p.add_argument("--noise-device", default="cpu", choices=["cpu", "model"],
                   help="draw the noise on the CPU (default) or on the model's device")
    p.add_argument("--images", type=int, default=128)
    p.add_argument("--batch", type=int, default=32, help="images per ROSS batch")
    p.add_argument("--chunk", type=int, default=128, help="noisy images per forward pass")
    p.add_argument("--n", type=int, nargs="+", default=[25, 100])
    p.add_argument("--repeats", type=int, default=3, help="alternating plain / ROSS timings, best of each")
    p.add_argument("--memory-child", type=int, default=None, help=argparse.SUPPRESS)
    p.add_argument("--memory-only", action="store_true", help="only the peak-memory table")
    args = p.parse_args()
    if args.memory_child is not None:
        print(json.dumps(peak_memory(args, args.memory_child)))
        return
    print(f"model {args.model}, base {args.base}, device {args.device}, noise on {args.noise_device}, "
          f"{args.images} images, "
          f"batch {args.batch}, chunk {args.chunk}, torch threads {torch.get_num_threads()}")
    print()
    if not args.memory_only:
        print("| N | plain forward ms/img | ROSS ms/img | ROSS / (N x plain) |")
        print("|---|---|---|---|")
        for n, plain, ross, ratio in time_ratio(args):
            print(f"| {n} | {plain:.3f} | {ross:.2f} | {ratio:.3f} |")
        print()
    print("| N | peak memory while scoring MiB (process RSS, or CUDA allocated) | above the RSS before scoring MiB |")
    print("|---|---|---|")
    peaks = {}
    for n in args.n:
        cmd = [sys.executable, __file__, "--memory-child", str(n)] + [
            a for a in sys.argv[1:] if a != "--memory-only"]
        out = subprocess.run(cmd, capture_output=True, text=True, check=True, env=os.environ).stdout
        peak, inc = json.loads(out.strip().splitlines()[-1])
        peaks[n] = peak
        print(f"| {n} | {peak:.1f} | {inc:.1f} |")
    if len(peaks) >= 2:
        lo, hi = min(peaks), max(peaks)
        print(f"\npeak(N={hi}) / peak(N={lo}) = {peaks[hi] / peaks[lo]:.3f}")


if __name__ == "__main__":
    main()
