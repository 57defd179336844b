"""The ``ross`` command line: ``eval``, ``attack``, ``certify``, ``sweep``, ``train``, ``report``, ``leaderboard``,
``compare``, ``diagnose``, ``combine``, ``reproduce``.

The flags of the four jobs are generated from their typed settings (``settings``): one flag
per field, help texts with the defaults. Flags override a ``--config`` YAML file, which
overrides the defaults; the resolved settings are validated before any work starts (the
same validators as the API) and saved beside the results.
"""
from __future__ import annotations

import argparse
import sys
from dataclasses import MISSING, fields
from pathlib import Path

__all__ = ["main", "build_parser", "resolve_settings"]

_DESCRIPTIONS = {
    "eval": ("clean OOD evaluation of detectors on a benchmark",
             "Evaluate detectors on a benchmark; prints the table and writes OUT/results.{json,csv,md}, "
             "OUT/scores.npz, OUT/config.yaml. Resumable: finished blocks are cached under OUT/cache."),
    "attack": ("robustness of detectors under L-inf attacks (PGD-Min / PGD-Max)",
               "PGD-Min attacks the ID test set, PGD-Max each OOD set. Targets: transfer (the paper's protocol on "
               "the base score), adaptive (APGD/EOT on the detector's own score, incl. the ROSS gate), worst "
               "(per-input worst case). Adversarial inputs are cached under OUT/cache and a killed run resumes."),
    "certify": ("certified AUROC / FPR@95 vs L2 radius for smoothed detectors",
                "Percentile-smoothing certificates (Chiang et al. 2020) for median-<score>, quantile-<score> and "
                "ross-<score> detectors at several sigma (pixel space), from n_samples noise samples per input; writes "
                "OUT/results.{json,csv,md} and OUT/certified_auroc.png. Resumable like eval."),
    "train": ("noise-augmented fine-tuning of a zoo classifier (for smoothing and certificates)",
              "Fine-tunes (or trains, --scratch) a zoo model on the benchmark's ID training set with Gaussian noise "
              "augmentation at --sigma (pixel units), optionally with consistency regularisation; seeded, resumable "
              "per epoch (--resume). Writes OUT/model.pt (load with --model NAME --checkpoint OUT/model.pt), "
              "OUT/model.json (sha256, command, accuracies), OUT/state.pt, OUT/results.md."),
    "sweep": ("the paper's ablations: lambda, N and sigma sweeps, clean and attacked",
              "Sweeps of smoothed detectors over lambda, N and sigma, clean and under the transfer attack (the "
              "paper's protocol). Writes OUT/results.{json,csv,md}."),
}


def _default_text(f) -> str:
    d = f.default_factory() if f.default is MISSING else f.default
    if isinstance(d, list):
        d = ",".join(str(v) for v in d) or "none"
    return "none" if d is None else str(d)


def _add_settings(p: argparse.ArgumentParser, cls) -> None:
    from ross_ood.cli.settings import field_kind
    S = argparse.SUPPRESS
    p.add_argument("--config", help="YAML file of settings (keys = these flags' names with underscores)")
    for f in fields(cls):
        kind, _ = field_kind(f)
        text = f.metadata["help"].replace("%", "%%")  # argparse formats help texts with %
        # a help text that states its own default keeps it; the others get the field's
        help_ = text if "(default" in text else f"{text} (default: {_default_text(f).replace('%', '%%')})"
        flag = "--" + f.name.replace("_", "-")
        if kind == "bool":
            if f.default:
                p.add_argument(f"--no-{f.name.replace('_', '-')}", dest=f.name, action="store_false", default=S,
                               help=f"turn off (on by default): {text}")
            else:
                p.add_argument(flag, dest=f.name, action="store_true", default=S, help=help_)
            continue
        names = [flag] + ([f.metadata["short"]] if "short" in f.metadata else [])
        extra = {"action": "append"} if f.name == "ood" else {}
        p.add_argument(*names, dest=f.name, default=S, choices=f.metadata.get("choices"), help=help_,
                       metavar=f.name.upper(), **extra)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``ross`` parser. With ``command`` (one of the jobs, ``_DESCRIPTIONS``) only that job's flags
    are built, and with ``command=""`` none: the settings (and torch, which they import) are loaded only
    for a job that runs or shows its help, so ``ross --help`` starts in a fraction of a second."""
    p = argparse.ArgumentParser(prog="ross", description="Robust OOD detection by synergistic smoothing (ROSS).")
    sub = p.add_subparsers(dest="command", required=True)
    for name, (short, long) in _DESCRIPTIONS.items():
        sp = sub.add_parser(name, help=short, description=long)
        if command is None or command == name:
            from ross_ood.cli.settings import COMMANDS
            _add_settings(sp, COMMANDS[name])
        sp.set_defaults(func=_run_job)
    prp = sub.add_parser("report", help="report.md with tables and figures from stored results (no recomputation)",
                         description="Reads DIR/results.json and DIR/*/results.json (eval, attack, sweep, certify) "
                                     "and writes DIR/report.md and DIR/figures/*.png.")
    prp.add_argument("dir", help="a results folder")
    prp.add_argument("--no-figures", dest="figures", action="store_false", help="tables only")
    prp.set_defaults(func=_cmd_report)
    plb = sub.add_parser("leaderboard", help="results/robustness.md from stored attack and certify results",
                         description="Renders a leaderboard spec (YAML: the results files and the rows; see "
                                     "ross_ood.runs.leaderboard) into markdown; no recomputation.")
    plb.add_argument("spec", help="the spec, e.g. results/robustness/leaderboard.yaml")
    plb.add_argument("out", nargs="?", default=None, help="output file (default: the spec's 'out')")
    plb.set_defaults(func=_cmd_leaderboard)
    pcm = sub.add_parser("compare", help="paired AUROC differences of two stored runs (or two detectors of one)",
                         description="A - B per eps, objective and target, with 95% paired bootstrap intervals over "
                                     "the images (the same images in both: runs on other images are refused). "
                                     "Eval and attack runs pair with each other, certify runs with certify runs "
                                     "(certified AUROC per L2 radius). "
                                     "RUN_B defaults to RUN_A, then --a and --b name two of its detectors.")
    pcm.add_argument("run_a")
    pcm.add_argument("run_b", nargs="?", default=None)
    pcm.add_argument("--a", dest="det_a", default=None, help="detector of run A (default: every shared detector)")
    pcm.add_argument("--b", dest="det_b", default=None, help="detector of run B")
    pcm.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    pcm.set_defaults(func=_cmd_compare)
    pdg = sub.add_parser("diagnose", help="the attack diagnosis from four stored attack runs on the same images",
                         description="Convergence (2x steps, 2x copies, paired against the budget), the unbounded-eps "
                                     "check, the targets' wins and silent failures, from stored runs: BASE (the "
                                     "budget), --steps, --copies (the budget doubled) and --unbounded (eps 255/255, "
                                     "pixel). What `ross attack --diagnose` computes in one process, in pieces. Runs "
                                     "of another model, seed, attack version, budget or images are refused. BASE "
                                     "alone: the masked-gradient check (the square target beside the gradient legs).")
    pdg.add_argument("base", help="the attack run with the budget itself")
    pdg.add_argument("--steps", default=None, help="the run with twice the steps")
    pdg.add_argument("--copies", default=None, help="the run with twice the noisy copies")
    pdg.add_argument("--unbounded", default=None, help="the run at eps 255/255 (pixel)")
    pdg.add_argument("--detector", default=None, help="the detector (default: the one the runs share)")
    pdg.add_argument("--out", default=None, help="folder for diagnosis.json and diagnosis.md (default: print only)")
    pdg.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples (default 1000)")
    pdg.set_defaults(func=_cmd_diagnose)
    pco = sub.add_parser("combine", help="one table from the pieces (--part K/M) of a long eval, attack or certify run",
                         description="Joins stored runs made with --part 1/M ... M/M and otherwise the same settings "
                                     "into one run folder: per-input scores (certify: per-input certified bounds) "
                                     "concatenated, every metric and interval recomputed over all the images. Pieces with other settings, models or attack "
                                     "versions, or on the same images, are refused.")
    pco.add_argument("out", help="output folder of the combined run")
    pco.add_argument("runs", nargs="+", help="the pieces' run folders")
    pco.add_argument("--eps", default=None,
                     help="attack pieces: combine only these budgets (e.g. 2 or 2,8), which every piece holds; "
                          "the pieces may then have been run with other --eps lists")
    pco.add_argument("--legs", action="store_true",
                     help="merge attack runs on the SAME images that ran different attack legs (e.g. a later "
                          "--target square run beside a stored run): per input the worst over them, per target and "
                          "over all (worst)")
    pco.set_defaults(func=_cmd_combine)
    prr = sub.add_parser("reproduce", help="the paper's tables from one command (presets offline, openood)",
                         description="offline: reduced-scale tables on the data root's JPEG CIFAR-10 copy, "
                                     "cifar10-jpeg (eval x 3 seeds, attack, sweeps, certificates), then one report "
                                     "(36 min on 2 CPU "
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


def resolve_settings(args: argparse.Namespace):
    """defaults < --config file < flags given on the command line; validated."""
    from ross_ood.cli.settings import COMMANDS, load_config_file
    cls = COMMANDS[args.command]
    values = load_config_file(args.config, cls) if getattr(args, "config", None) else {}
    values.update({k: v for k, v in vars(args).items() if k not in ("command", "config", "func")})
    if hasattr(cls, "with_preset"):  # ross attack --budget: the preset fills the budget settings not given
        values = cls.with_preset(values)
    return cls(**values)


def _run_job(args) -> None:
    from ross_ood.cli.jobs import JOBS
    st = resolve_settings(args)
    doc = JOBS[args.command](st)
    if doc is None:
        return
    out = Path(st.out)
    print((out / "results.md").read_text())
    if getattr(st, "diagnose", False):
        print((out / "diagnosis.md").read_text())
    if "wall_time_s" in doc:
        print(f"wrote {out / 'results.json'}, {out / 'results.csv'}, {out / 'results.md'} "
              f"({doc['wall_time_s']:.1f} s)")


def _cmd_report(args) -> None:
    from ross_ood.runs.report import write_report
    print(f"wrote {write_report(args.dir, figures=args.figures)}")


def _cmd_leaderboard(args) -> None:
    from ross_ood.runs.leaderboard import write_leaderboard
    print(f"wrote {write_leaderboard(args.spec, args.out)}")


def _cmd_compare(args) -> None:
    from ross_ood.runs.compare import compare_runs, render_comparison
    print(render_comparison(compare_runs(args.run_a, args.run_b, args.det_a, args.det_b, args.bootstrap)))


def _cmd_diagnose(args) -> None:
    import json

    from ross_ood.engine.diagnose import (
        diagnosis_from_runs,
        masked_gradient_check,
        render_diagnosis,
        render_masked_check,
    )
    from ross_ood.store import atomic_write_text
    pieces = [args.steps, args.copies, args.unbounded]
    if not any(pieces):
        doc = masked_gradient_check(args.base, args.detector, args.bootstrap)
        text = render_masked_check(doc)
    elif not all(pieces):
        raise ValueError("ross diagnose takes --steps, --copies and --unbounded together (the full diagnosis), or "
                         "none of them (BASE alone: the masked-gradient check)")
    else:
        doc = diagnosis_from_runs(args.base, args.steps, args.copies, args.unbounded, args.detector, args.bootstrap)
        text = render_diagnosis(doc)
    print(text)
    if args.out:
        out = Path(args.out)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "diagnosis.json", json.dumps(doc))
        atomic_write_text(out / "diagnosis.md", text)
        print(f"wrote {out / 'diagnosis.json'}, {out / 'diagnosis.md'}")


def _cmd_combine(args) -> None:
    from ross_ood.runs.combine import combine_runs, merge_legs
    from ross_ood.runs.tables import render
    if args.legs:
        if args.eps is not None:
            raise ValueError("combine --legs keeps the budgets every run holds; --eps does not apply")
        doc = merge_legs(args.runs, args.out)
        print(render(doc))
        print(f"wrote {args.out}/results.json, results.md, input_scores.npz ({len(args.runs)} runs, legs merged)")
        return
    from ross_ood.cli.settings import command_defaults
    doc = combine_runs(args.runs, args.out, eps=args.eps, defaults=command_defaults())
    print(render(doc))
    print(f"wrote {args.out}/results.json, results.md, input_scores.json ({len(args.runs)} pieces)")


def _cmd_reproduce(args) -> None:
    from ross_ood.cli.reproduce import run_reproduce
    path = run_reproduce(args.preset, args.out, args.data_root, args.device, args.checkpoints, args.quick,
                         args.progress, log=lambda m: print(m, file=sys.stderr, flush=True))
    print(f"wrote {path}")


def main(argv=None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    job = next((a for a in argv if not a.startswith("-")), None)
    args = build_parser(job if job in _DESCRIPTIONS else "").parse_args(argv)
    import warnings

    from ross_ood.validate import ContractError

    def one_line(message, category, filename, lineno, file=None, line=None):
        print(f"ross {args.command}: warning: {message}", file=sys.stderr if file is None else file)
    shown = warnings.showwarning
    warnings.showwarning = one_line  # a warning is one line that names the command, as errors are
    try:
        args.func(args)
    except (ValueError, FileNotFoundError, ImportError, ContractError) as e:
        print(f"ross {args.command}: error: {e}", file=sys.stderr)
        return 2
    finally:
        warnings.showwarning = shown
        torch = sys.modules.get("torch")  # never imported by the commands that read stored files only
        if torch is not None and torch.distributed.is_available() and torch.distributed.is_initialized():
            torch.distributed.destroy_process_group()
    return 0


if __name__ == "__main__":
    sys.exit(main())
