"""The ``ross`` command line: ``ross eval`` (and the commands of later modules).

Every command's settings come from, in increasing priority: built-in defaults, a YAML
config file (``--config``, read with ``yaml.safe_load``; unknown keys are an error), and
the flags given on the command line. The resolved configuration is saved beside the results.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path

import torch

__all__ = ["main", "run_eval", "EVAL_DEFAULTS", "resolve_config", "build_parser"]

DEFAULT_DETECTORS = "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-fdbd"

EVAL_DEFAULTS = {
    "benchmark": "cifar10", "model": None, "checkpoint": None, "data_root": None,
    "detectors": DEFAULT_DETECTORS, "limit": None, "seed": 0, "split_seed": 0, "out": "runs/eval",
    "n_samples": 25, "sigma": 0.05, "lam": "0.01", "noise_space": "pixel", "batch_size": 128,
    "chunk_size": 128, "block_size": 512, "device": "auto", "ood": [], "only_extra": False, "workers": 0,
    "progress": True,
}


# --------------------------------------------------------------------------- config
def _parse_lam(v) -> float | dict:
    if isinstance(v, (int, float)):
        return float(v)
    v = str(v)
    if "=" not in v:
        return float(v)
    out = {}
    for part in v.split(","):
        k, _, val = part.partition("=")
        out[k.strip()] = float(val)
    return out


def _check_value(key: str, value, default):
    """Type-check a config value against its default's type; a clear error otherwise."""
    if value is None or default is None:
        return value
    if isinstance(default, bool):
        if not isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be true or false, got {value!r}")
        return value
    if isinstance(default, int) and not isinstance(default, bool):
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValueError(f"config key {key!r} must be an integer, got {value!r}")
        return value
    if isinstance(default, float):
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"config key {key!r} must be a number, got {value!r}")
        return float(value)
    if isinstance(default, list):
        if isinstance(value, str):
            return [v for v in value.split(",") if v]
        if not isinstance(value, list):
            raise ValueError(f"config key {key!r} must be a list, got {value!r}")
        return value
    if isinstance(default, str):
        if isinstance(value, list):
            return ",".join(str(v) for v in value)
        if isinstance(value, bool):
            raise ValueError(f"config key {key!r} must be a string, got {value!r}")
        return str(value)
    return value


def load_config_file(path: str | os.PathLike, defaults: dict) -> dict:
    import yaml
    p = Path(path)
    if not p.is_file():
        raise FileNotFoundError(f"config file not found: {p}")
    try:
        doc = yaml.safe_load(p.read_text())
    except yaml.YAMLError as e:
        raise ValueError(f"config file {p} is not valid YAML: {e}") from None
    if doc is None:
        return {}
    if not isinstance(doc, dict):
        raise ValueError(f"config file {p} must hold a mapping of settings, got {type(doc).__name__}")
    out = {}
    for k, v in doc.items():
        key = str(k).replace("-", "_")
        if key not in defaults:
            raise ValueError(f"unknown config key {k!r} in {p}; known keys: {', '.join(sorted(defaults))}")
        out[key] = _check_value(key, v, defaults[key])
    return out


def resolve_config(defaults: dict, args: argparse.Namespace) -> dict:
    """defaults < --config file < flags given on the command line."""
    given = {k: v for k, v in vars(args).items() if k not in ("command", "config", "func")}
    cfg = dict(defaults)
    if getattr(args, "config", None):
        cfg.update(load_config_file(args.config, defaults))
    cfg.update(given)
    return cfg


# ----------------------------------------------------------------------- runtime
def setup_runtime(device: str) -> torch.device:
    """Join the torch.distributed group when launched by torchrun; pick this rank's device."""
    world = int(os.environ.get("WORLD_SIZE", "1"))
    local = int(os.environ.get("LOCAL_RANK", "0"))
    if device == "auto":
        device = f"cuda:{local}" if torch.cuda.is_available() else "cpu"
    dev = torch.device(device)
    if dev.type == "cuda":
        torch.cuda.set_device(dev)
    if world > 1 and not torch.distributed.is_initialized():
        backend = "nccl" if dev.type == "cuda" else "gloo"
        torch.distributed.init_process_group(backend=backend)
    return dev


def _progress_factory(enabled: bool):
    from .store import dist_info
    if not enabled or dist_info()[0] != 0:
        return None
    from tqdm import tqdm

    def make(name, total):
        return tqdm(total=total, desc=f"{name:>14}", unit="img", file=sys.stderr, leave=False, dynamic_ncols=True)
    return make


def _open_model(cfg: dict, dev: torch.device):
    from .data import BENCHMARKS, default_data_root
    from .models import load_model
    root = default_data_root(cfg["data_root"])
    if cfg["benchmark"] not in BENCHMARKS:
        raise ValueError(f"unknown benchmark {cfg['benchmark']!r}; known: {', '.join(BENCHMARKS)}")
    name = cfg["model"] or BENCHMARKS[cfg["benchmark"]].model
    model = load_model(name, root, checkpoint=cfg["checkpoint"], device=dev)
    return model, name, root


def _open_benchmark(cfg: dict, model, root):
    from .data import build_benchmark, parse_extra_ood
    if cfg["limit"] is not None and cfg["limit"] < 1:
        raise ValueError(f"--limit must be >= 1, got {cfg['limit']}")
    return build_benchmark(cfg["benchmark"], root, model.channels, model.input_size, limit=cfg["limit"],
                           seed=cfg["seed"], split_seed=cfg["split_seed"], extra_ood=parse_extra_ood(cfg["ood"]),
                           only_extra=cfg["only_extra"])


def _save_config(out: Path, cfg: dict) -> None:
    import yaml

    from .store import atomic_write_text
    atomic_write_text(out / "config.yaml", yaml.safe_dump(cfg, sort_keys=True))


# ----------------------------------------------------------------------- eval
def run_eval(cfg: dict) -> dict | None:
    """Run ``ross eval`` with a resolved configuration; returns the results document (rank 0)."""
    from .evaluate import Smoothing, evaluate_benchmark, parse_detectors
    from .report import markdown_table, versions, write_results
    from .store import BlockCache, dist_info
    dets = parse_detectors(cfg["detectors"], _parse_lam(cfg["lam"]))
    sm = Smoothing(cfg["n_samples"], cfg["sigma"], cfg["noise_space"], cfg["seed"], cfg["chunk_size"])
    dev = setup_runtime(cfg["device"])
    model, model_name, root = _open_model(cfg, dev)
    bench = _open_benchmark(cfg, model, root)
    out = Path(cfg["out"])
    rank, world = dist_info()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _save_config(out, cfg)
    res = evaluate_benchmark(model, bench, dets, sm, BlockCache(out / "cache"), cfg["batch_size"],
                             cfg["block_size"], cfg["workers"], _progress_factory(cfg["progress"]))
    if rank != 0:
        return None
    sizes = ", ".join(f"{k} {v}" for k, v in res.sizes.items())
    title = (f"## {cfg['benchmark']} / {model_name}: FPR@95 / AUROC (%)\n\n"
             f"ID accuracy {100 * res.id_accuracy:.2f}% on id_test ({100 * res.id_accuracy_val_and_test:.2f}% on "
             f"id_val + id_test). Sets: {sizes}. "
             f"Smoothing: N={sm.n_samples}, sigma={sm.sigma} ({sm.space} space), seed {sm.seed}. "
             + " ".join(n.rstrip(".") + "." for n in res.notes))
    md = markdown_table(res.records, res.means, title=title)
    doc = {"command": "eval", "benchmark": cfg["benchmark"], "model": model_name, "id_accuracy": res.id_accuracy,
           "id_accuracy_val_and_test": res.id_accuracy_val_and_test,
           "results": res.records, "means": res.means, "taus": res.taus, "set_sizes": res.sizes,
           "groups": bench.groups, "notes": res.notes, "seed": cfg["seed"], "data_root": str(root),
           "noise_space": sm.space, "detectors": [d.config(sm) for d in dets], "config": cfg,
           "versions": versions(), "world_size": world, "device": str(dev), "wall_time_s": res.wall_time_s}
    write_results(out, doc, md)
    _save_scores(out, res.scores)
    return doc


def _save_scores(out: Path, scores: dict) -> None:
    """Per-detector per-set scores (and ROSS median / D) for reports: ``scores.npz``."""
    import io

    import numpy as np

    from .store import atomic_write_bytes
    flat = {f"{det}|{s}|{k}": v for det, per in scores.items() for s, d in per.items() for k, v in d.items()}
    buf = io.BytesIO()
    np.savez_compressed(buf, **flat)
    atomic_write_bytes(out / "scores.npz", buf.getvalue())


# ----------------------------------------------------------------------- attack
ATTACK_DEFAULTS = {
    **EVAL_DEFAULTS, "out": "runs/attack",
    "detectors": "msp,energy,gen,odin,fdbd,pro-fdbd,ross-msp,ross-energy,ross-gen,ross-fdbd",
    "eps": "2,4,8,16", "eps_space": "pixel", "objective": "min,max", "target": "transfer,adaptive,worst",
    "transfer_steps": 40, "adaptive_steps": 40, "restarts": 2, "eot": 1, "attack_n": 8,
    "surrogates": "median,mean,ross", "attack_batch": 64,
}


def _parse_eps(v) -> list[float]:
    """'2,4,8/255,0.03' -> fractions of the pixel range; bare numbers are in 1/255 units."""
    out = []
    for part in str(v).split(","):
        part = part.strip()
        if not part:
            continue
        num, _, den = part.partition("/")
        val = float(num) / (float(den) if den else 255.0)
        if val < 0:
            raise ValueError(f"eps must be >= 0, got {part}")
        out.append(val)
    if not out:
        raise ValueError("no eps given")
    return out


def _split(v) -> list[str]:
    return [x.strip() for x in (v.split(",") if isinstance(v, str) else v) if str(x).strip()]


def attack_table(clean_means: list, means: list, target: str, eps_list: list, title: str) -> str:
    """Rows = detectors; columns = clean, then eps x {PGD-Min, PGD-Max}; mean over OOD sets."""
    from .report import cell
    dets = list(dict.fromkeys(r["detector"] for r in clean_means))
    idx = {(r["detector"], r["eps"], r["objective"]): r for r in means if r["target"] == target}
    clean = {r["detector"]: r for r in clean_means}
    cols = ["clean"] + [f"{round(e * 255, 2):g}/255 {'PGD-Min' if o == 'min' else 'PGD-Max'}"
                        for e in eps_list for o in ("min", "max")]
    lines = [title, "", "| detector | " + " | ".join(cols) + " |", "|---" * (len(cols) + 1) + "|"]
    for d in dets:
        cells = [cell(clean[d])]
        for e in eps_list:
            for o in ("min", "max"):
                r = idx.get((d, e, o))
                cells.append(cell(r) if r else "")
        lines.append(f"| {d} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_attack_cmd(cfg: dict) -> dict | None:
    """Run ``ross attack`` with a resolved configuration; returns the results document (rank 0)."""
    from .adversarial import TARGETS, AttackSettings, attack_benchmark, mean_over_sets
    from .evaluate import Smoothing, evaluate_benchmark, parse_detectors
    from .report import versions, write_results
    from .store import BlockCache, dist_info
    dets = parse_detectors(cfg["detectors"], _parse_lam(cfg["lam"]))
    sm = Smoothing(cfg["n_samples"], cfg["sigma"], cfg["noise_space"], cfg["seed"], cfg["chunk_size"])
    eps_list = _parse_eps(cfg["eps"])
    objectives = _split(cfg["objective"])
    targets = _split(cfg["target"])
    for o in objectives:
        if o not in ("min", "max"):
            raise ValueError(f"objective must be min or max, got {o!r}")
    for t in targets:
        if t not in TARGETS:
            raise ValueError(f"target must be one of {TARGETS}, got {t!r}")
    if cfg["eps_space"] not in ("pixel", "normalized"):
        raise ValueError(f"eps space must be pixel or normalized, got {cfg['eps_space']!r}")
    surrogates = tuple(_split(cfg["surrogates"]))
    for s_ in surrogates:
        if s_ not in ("median", "mean", "ross"):
            raise ValueError(f"surrogate must be median, mean or ross, got {s_!r}")
    st = AttackSettings(cfg["transfer_steps"], 1 / 30, cfg["adaptive_steps"], cfg["restarts"], cfg["eot"],
                        cfg["attack_n"], surrogates)
    dev = setup_runtime(cfg["device"])
    model, model_name, root = _open_model(cfg, dev)
    bench = _open_benchmark(cfg, model, root)
    out = Path(cfg["out"])
    rank, world = dist_info()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _save_config(out, cfg)
    cache = BlockCache(out / "cache")
    prog = _progress_factory(cfg["progress"])
    clean = evaluate_benchmark(model, bench, dets, sm, cache, cfg["batch_size"], cfg["block_size"], cfg["workers"],
                               prog)
    records, wall = attack_benchmark(model, bench, dets, sm, clean.arrays, clean.taus, eps_list, objectives,
                                     cfg["eps_space"], targets, st, cfg["seed"], cache, cfg["attack_batch"],
                                     cfg["block_size"], prog)
    if rank != 0:
        return None
    means = mean_over_sets(records)
    clean_means = [r for r in clean.means if r["ood_set"] == "all-mean"]
    sizes = ", ".join(f"{k} {v}" for k, v in clean.sizes.items())
    head = (f"ID accuracy {100 * clean.id_accuracy:.2f}%. Sets: {sizes}. eps in {cfg['eps_space']} space"
            f"{' (eps*std per channel, no clipping)' if cfg['eps_space'] == 'normalized' else ' (clipped to [0,1])'}; "
            f"smoothing N={sm.n_samples}, sigma={sm.sigma} ({sm.space}). PGD-Min attacks ID test inputs, "
            f"PGD-Max each OOD set; cells FPR@95 / AUROC (%), mean over {len(bench.ood)} OOD sets.")
    parts = [f"## {cfg['benchmark']} / {model_name}: robustness", "", head, ""]
    desc = {"transfer": f"transfer (paper protocol: {st.transfer_steps}-step PGD, step eps/30, 1 random start, "
                        "last iterate, on the base score)",
            "adaptive": f"adaptive (APGD {st.adaptive_steps} steps x {st.adaptive_restarts} restarts on the "
                        f"detector's own score; smoothed: EOT x{st.eot} over {st.attack_n} fresh noisy copies, "
                        f"surrogates {', '.join(surrogates)})",
            "worst": "worst case per input over all attacks and restarts"}
    for t in targets:
        parts += [attack_table(clean_means, means, t, eps_list, f"### target: {desc[t]}"), ""]
    md = "\n".join(parts)
    doc = {"command": "attack", "benchmark": cfg["benchmark"], "model": model_name, "id_accuracy": clean.id_accuracy,
           "clean": clean.records, "clean_means": clean.means, "results": records, "means": means,
           "taus": clean.taus, "set_sizes": clean.sizes, "groups": bench.groups, "notes": clean.notes,
           "seed": cfg["seed"], "data_root": str(root), "noise_space": sm.space, "eps_space": cfg["eps_space"],
           "attack_settings": {k: getattr(st, k) for k in st.__dataclass_fields__},
           "detectors": [d.config(sm) for d in dets], "config": cfg, "versions": versions(), "world_size": world,
           "device": str(dev), "wall_time_s": clean.wall_time_s + wall}
    write_results(out, doc, md)
    return doc


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
    pa.add_argument("--surrogates", default=S, help="median,mean,ross (default all)")
    pa.add_argument("--attack-batch", dest="attack_batch", type=int, default=S, help="images per attack batch")
    pa.set_defaults(func=lambda a: _print_result(run_attack_cmd(resolve_config(ATTACK_DEFAULTS, a))))
    return p


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
