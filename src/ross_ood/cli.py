"""The ``ross`` command line: ``ross eval``, ``ross attack``, ``ross certify``.

Flags override a ``--config`` YAML file, which overrides the defaults (see ``config``). The
resolved configuration is saved beside the results.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import torch

from .config import ATTACK_DEFAULTS, CERTIFY_DEFAULTS, EVAL_DEFAULTS, SWEEP_DEFAULTS, resolve_config
from .jobs import run_attack_cmd, run_certify, run_eval, run_sweep

__all__ = ["main", "build_parser"]

# ----------------------------------------------------------------------- parser
def _add_common(p: argparse.ArgumentParser, defaults: dict) -> None:
    S = argparse.SUPPRESS
    p.add_argument("--config", help="YAML file of settings (keys = these flags' names with underscores)")
    p.add_argument("--benchmark", default=S, help=f"benchmark name (default {defaults['benchmark']}); "
                   "cifar10, mnist, openood-cifar10, openood-cifar100, openood-imagenet200")
    p.add_argument("--model", default=S, help="zoo model name (default: the benchmark's)")
    p.add_argument("--checkpoint", default=S, help="weights file for the model (default: the zoo's file)")
    p.add_argument("--data-root", dest="data_root", default=S,
                   help="data root (default: $ROSS_DATA, else ../shared/data, else ~/.cache/ross-ood)")
    p.add_argument("--detectors", default=S, help=f"comma-separated (default {defaults['detectors']}); plain "
                   "scores msp,maxlogit,energy,gen,odin,fdbd,pro-<score>; smoothed median-<score>, ross-<score>")
    p.add_argument("--limit", type=int, default=S, help="seeded random subset of at most this many images per "
                   "set (class-stratified)")
    p.add_argument("--seed", type=int, default=S, help="seed of noise and subsets (default 0)")
    p.add_argument("--split-seed", dest="split_seed", type=int, default=S,
                   help="seed of the carved ID validation split (default 0)")
    p.add_argument("--out", default=S, help=f"output folder (default {defaults['out']})")
    p.add_argument("--n-samples", "-N", dest="n_samples", type=int, default=S, help="noisy copies N (default 25)")
    p.add_argument("--sigma", type=float, default=S, help="noise std in the noise space's units (default 0.05)")
    p.add_argument("--lam", default=S, help="ROSS lambda: a number, or per base score e.g. fdbd=0.01,msp=0.001")
    p.add_argument("--noise-space", dest="noise_space", choices=["pixel", "normalized"], default=S,
                   help="pixel (default; clipped to [0,1]) or normalized (sigma*std per channel, as the paper)")
    p.add_argument("--batch-size", dest="batch_size", type=int, default=S, help="images per batch (default 128)")
    p.add_argument("--chunk-size", dest="chunk_size", type=int, default=S,
                   help="noisy images per forward pass (default 128; bounds memory)")
    p.add_argument("--block-size", dest="block_size", type=int, default=S,
                   help="images per cached, resumable block (default 512)")
    p.add_argument("--device", default=S, help="auto (default), cpu, cuda, cuda:1, ...")
    p.add_argument("--noise-device", dest="noise_device", choices=["cpu", "model"], default=S,
                   help="where the smoothing noise is drawn: cpu (default; identical noise on any device) or "
                        "model (on the model's device: faster for large images on a GPU, other numbers there)")
    p.add_argument("--ood", action="append", default=S, metavar="NAME=PATH",
                   help="extra OOD set: a .zip, a folder, an IDX file, synthetic:gaussian|uniform (repeatable)")
    p.add_argument("--only-extra", dest="only_extra", action="store_true", default=S,
                   help="use only the --ood sets, not the benchmark's")
    p.add_argument("--workers", type=int, default=S, help="data-loading worker processes (default 0)")
    p.add_argument("--no-progress", dest="progress", action="store_false", default=S, help="no progress bars")


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="ross", description="Robust OOD detection by synergistic smoothing (ROSS).")
    sub = p.add_subparsers(dest="command", required=True)
    pe = sub.add_parser("eval", help="clean OOD evaluation of detectors on a benchmark",
                        description="Evaluate detectors on a benchmark; prints the table and writes "
                                    "OUT/results.{json,csv,md}, OUT/scores.npz, OUT/config.yaml. Resumable: "
                                    "finished blocks are cached under OUT/cache.")
    _add_common(pe, EVAL_DEFAULTS)
    pe.set_defaults(func=lambda a: _print_result(run_eval(resolve_config(EVAL_DEFAULTS, a))))

    pa = sub.add_parser("attack", help="robustness of detectors under L-inf attacks (PGD-Min / PGD-Max)",
                        description="PGD-Min attacks the ID test set, PGD-Max each OOD set. Targets: transfer "
                                    "(the paper's protocol on the base score), adaptive (APGD/EOT on the "
                                    "detector's own score, incl. the ROSS gate), worst (per-input worst case). "
                                    "Writes OUT/results.{json,csv,md}; adversarial inputs are cached under "
                                    "OUT/cache and a killed run resumes.")
    _add_common(pa, ATTACK_DEFAULTS)
    S = argparse.SUPPRESS
    pa.add_argument("--eps", default=S, help="L-inf budgets in 1/255 units, comma-separated (default 2,4,8,16); "
                    "'8/255' and fractions like '0.03/1' also work")
    pa.add_argument("--eps-space", dest="eps_space", choices=["pixel", "normalized"], default=S,
                    help="pixel (default; clipped to [0,1]) or normalized (eps*std per channel, no clipping)")
    pa.add_argument("--objective", default=S, help="min,max (default both)")
    pa.add_argument("--target", default=S, help="transfer,adaptive,worst (default all)")
    pa.add_argument("--transfer-steps", dest="transfer_steps", type=int, default=S, help="default 40 (paper)")
    pa.add_argument("--adaptive-steps", dest="adaptive_steps", type=int, default=S, help="default 40")
    pa.add_argument("--restarts", type=int, default=S, help="adaptive restarts (default 2)")
    pa.add_argument("--eot", type=int, default=S, help="EOT draws per step (default 1)")
    pa.add_argument("--attack-n", dest="attack_n", type=int, default=S,
                    help="noisy copies per EOT draw in adaptive attacks on smoothed detectors (default 8)")
    pa.add_argument("--surrogates", default=S, help="attacked statistics of smoothed detectors: median, mean, "
                    "softmedian, ross (the gated score; ROSS only); default median,mean,ross")
    pa.add_argument("--attack-batch", dest="attack_batch", type=int, default=S, help="images per attack batch")
    pa.set_defaults(func=lambda a: _print_result(run_attack_cmd(resolve_config(ATTACK_DEFAULTS, a))))

    pc = sub.add_parser("certify", help="certified AUROC / FPR@95 vs L2 radius for smoothed detectors",
                        description="Percentile-smoothing certificates (Chiang et al. 2020) for median-<score> and "
                                    "ross-<score> detectors at several sigma (pixel space), from n_cert noise "
                                    "samples per input; writes OUT/results.{json,csv,md} and "
                                    "OUT/certified_auroc.png. Resumable like eval.")
    _add_common(pc, CERTIFY_DEFAULTS)
    pc.add_argument("--sigmas", default=S, help="noise levels in pixel units (default 0.12,0.25)")
    pc.add_argument("--models", default=S, help="one zoo model per sigma, comma-separated (default: --model "
                    "for all), e.g. resnet20-noise012,resnet20-noise025")
    pc.add_argument("--n-cert", dest="n_cert", type=int, default=S, help="noise samples per input (default 1000)")
    pc.add_argument("--alpha", type=float, default=S, help="failure probability per input (default 0.001)")
    pc.add_argument("--radii", default=S, help="L2 radii in pixel units (default 0,0.05,0.1,0.2,0.3,0.5)")
    pc.add_argument("--grid", type=int, default=S, help="percentile grid for the D bounds (default 200)")
    pc.set_defaults(func=lambda a: _print_result(run_certify(resolve_config(CERTIFY_DEFAULTS, a))))

    psw = sub.add_parser("sweep", help="the paper's ablations: lambda, N and sigma sweeps, clean and attacked",
                         description="Sweeps of smoothed detectors (ross-<score>, median-<score>) over lambda, N and "
                                     "sigma, clean and under the transfer attack (the paper's protocol). Writes "
                                     "OUT/results.{json,csv,md}.")
    _add_common(psw, SWEEP_DEFAULTS)
    psw.add_argument("--params", default=S, help="which sweeps: lam,n_samples,sigma (default all)")
    psw.add_argument("--lams", default=S, help="lambda values (default 0.005,0.01,0.02,0.05)")
    psw.add_argument("--ns", default=S, help="N values (default 5,10,25,50,100)")
    psw.add_argument("--sweep-sigmas", dest="sweep_sigmas", default=S, help="sigma values (default "
                     "0.025,0.05,0.1,0.25, in the noise space's units)")
    psw.add_argument("--attack-eps", dest="attack_eps", default=S, help="transfer-attack budgets in 1/255 "
                     "(default 8; '' for clean only)")
    psw.add_argument("--eps-space", dest="eps_space", choices=["pixel", "normalized"], default=S,
                     help="eps space of the attack (default normalized, as the paper)")
    psw.add_argument("--objective", default=S, help="min,max (default both)")
    psw.add_argument("--transfer-steps", dest="transfer_steps", type=int, default=S, help="default 40 (paper)")
    psw.add_argument("--attack-batch", dest="attack_batch", type=int, default=S, help="images per attack batch")
    psw.set_defaults(func=lambda a: _print_result(run_sweep(resolve_config(SWEEP_DEFAULTS, a))))

    prp = sub.add_parser("report", help="report.md with tables and figures from stored results (no recomputation)",
                         description="Reads DIR/results.json and DIR/*/results.json (eval, attack, sweep, certify) "
                                     "and writes DIR/report.md and DIR/figures/*.png.")
    prp.add_argument("dir", help="a results folder")
    prp.add_argument("--no-figures", dest="figures", action="store_false", help="tables only")
    prp.set_defaults(func=_cmd_report)

    prr = sub.add_parser("reproduce", help="the paper's tables from one command (presets offline, openood)",
                         description="offline: reduced-scale tables on the data root's offline benchmark (eval x 3 "
                                     "seeds, attack, sweeps, certificates), then one report (about an hour on 2 CPU "
                                     "cores). openood: the full CIFAR-10 / CIFAR-100 / ImageNet-200 tables with "
                                     "OpenOOD v1.5 data and checkpoints (3 seeds, mean ± std).")
    prr.add_argument("preset", choices=["offline", "openood"])
    prr.add_argument("--out", default="runs/reproduce", help="output folder (default runs/reproduce)")
    prr.add_argument("--data-root", dest="data_root", default=None, help="data root (as for eval)")
    prr.add_argument("--checkpoints", default=None, help="openood: folder of OpenOOD v1.5 checkpoint folders")
    prr.add_argument("--device", default="auto")
    prr.add_argument("--quick", action="store_true", help="tiny subsets: a smoke test of the whole pipeline")
    prr.add_argument("--no-progress", dest="progress", action="store_false")
    prr.set_defaults(func=_cmd_reproduce)
    return p


def _cmd_report(args) -> None:
    from .report import write_report
    print(f"wrote {write_report(args.dir, figures=args.figures)}")


def _cmd_reproduce(args) -> None:
    from .reproduce import run_reproduce
    path = run_reproduce(args.preset, args.out, args.data_root, args.device, args.checkpoints, args.quick,
                         args.progress, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {path}")


def _print_result(doc: dict | None) -> None:
    if doc is None:
        return
    out = Path(doc["config"]["out"])
    print((out / "results.md").read_text())
    print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'results.md'} "
          f"({doc['wall_time_s']:.1f} s)")


def main(argv=None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError) as e:
        print(f"ross {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        if torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
