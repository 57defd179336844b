"""The jobs behind the command line: ``ross eval``, ``ross attack``, ``ross certify``.

Each job takes a resolved configuration (see ``config``), runs under torchrun unchanged
(every process computes its blocks, rank 0 writes the results) and returns the results
document on rank 0 (None on the other ranks).
"""
from __future__ import annotations

import os
from pathlib import Path
import sys
import time

import torch

from .config import parse_lam

__all__ = ["run_eval", "run_attack_cmd", "run_certify", "certify_table", "setup_runtime", "attack_table", "parse_eps"]

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
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
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


def parse_eps(v) -> list[float]:
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
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
    sm = Smoothing(cfg["n_samples"], cfg["sigma"], cfg["noise_space"], cfg["seed"], cfg["chunk_size"])
    eps_list = parse_eps(cfg["eps"])
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


# ----------------------------------------------------------------------- certify
def certify_table(records: list, radii: list, title: str) -> str:
    """Rows = detector @ sigma; columns = clean, then each radius; mean over OOD sets."""
    from .report import cell
    rows = list(dict.fromkeys((r["detector"], r["sigma"]) for r in records))
    idx = {(r["detector"], r["sigma"], r["radius"]): r for r in records if r["ood_set"] == "mean"}
    cols = ["clean"] + [f"eps={r:g}" for r in radii]
    lines = [title, "", "| detector | sigma | " + " | ".join(cols) + " |", "|---" * (len(cols) + 2) + "|"]
    for det, sig in rows:
        cells = [cell(idx[(det, sig, "clean")])] + [cell(idx[(det, sig, r)]) for r in radii]
        lines.append(f"| {det} | {sig:g} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


def run_certify(cfg: dict) -> dict | None:
    """Certified AUROC / FPR@95 vs L2 radius (pixel space) for smoothed detectors at several
    sigma, beside the clean metrics of the same smoothed detectors."""
    import numpy as np

    from .certify import median_bounds, ross_bounds, worst_case_metrics
    from .evaluate import Smoothing, compute_set, detector_scores, parse_detectors, plan_units
    from .metrics import METRIC_NAMES, ood_metrics
    from .report import versions, write_results
    from .smoothing import calibrate_tau, median_stats
    from .store import BlockCache, dist_info
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
    for d in dets:
        if d.kind == "base":
            raise ValueError(f"certify needs smoothed detectors (median-<score> or ross-<score>), got {d.name!r}")
    sigmas = [float(s) for s in _split(cfg["sigmas"])]
    radii = [float(r) for r in _split(cfg["radii"])]
    if any(s <= 0 for s in sigmas) or any(r < 0 for r in radii):
        raise ValueError(f"sigmas must be > 0 and radii >= 0, got {sigmas} and {radii}")
    if not 0 < cfg["alpha"] < 1:
        raise ValueError(f"alpha must be in (0, 1), got {cfg['alpha']}")
    if cfg["n_cert"] < 1:
        raise ValueError(f"n_cert must be >= 1, got {cfg['n_cert']}")
    models = _split(cfg["models"]) if cfg["models"] else []
    if models and len(models) != len(sigmas):
        raise ValueError(f"--models must name one model per sigma ({len(sigmas)}), got {len(models)}")
    dev = setup_runtime(cfg["device"])
    out = Path(cfg["out"])
    rank, world = dist_info()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _save_config(out, cfg)
    cache = BlockCache(out / "cache")
    prog = _progress_factory(cfg["progress"])
    records, model_names, taus, sizes = [], {}, {}, {}
    t0 = time.time()
    for i, sigma in enumerate(sigmas):
        mcfg = dict(cfg, model=models[i] if models else cfg["model"])
        model, model_name, root = _open_model(mcfg, dev)
        model_names[sigma] = model_name
        bench = _open_benchmark(cfg, model, root)
        sm = Smoothing(cfg["n_cert"], sigma, "pixel", cfg["seed"], cfg["chunk_size"])
        units = plan_units(dets, sm)
        arrays = {}
        for s, ds in bench.sets().items():
            bar = prog(f"{s} s={sigma:g}", len(ds)) if prog else None
            try:
                arrays[s] = compute_set(model, ds, s, units, cache, cfg["batch_size"], cfg["block_size"],
                                        cfg["workers"], bar.update if bar else None)
            finally:
                if bar:
                    bar.close()
        sizes = {k: len(v) for k, v in bench.sets().items()}
        for d in dets:
            mats = {s: arrays[s][f"noisy/{d.base.name}"]["noisy"] for s in arrays}
            tau = calibrate_tau(median_stats(torch.from_numpy(mats["id_val"]))["median"], 0.05)
            taus[f"{d.name}@{sigma:g}"] = tau
            clean = {s: detector_scores(d, arrays[s], tau)["score"] for s in arrays}
            vr = d.base.value_range
            for radius in ["clean"] + radii:
                per = []
                for o in bench.ood:
                    if radius == "clean":
                        m = ood_metrics(clean["id_test"], clean[o])
                        abst = (0.0, 0.0)
                    else:
                        if d.kind == "ross":
                            args = (radius, sigma, tau, d.lam, cfg["alpha"], cfg["grid"], vr)
                            lo = ross_bounds(mats["id_test"], *args)["lo"]
                            hi = ross_bounds(mats[o], *args)["hi"]
                        else:
                            lo = median_bounds(mats["id_test"], radius, sigma, cfg["alpha"], value_range=vr)[0]
                            hi = median_bounds(mats[o], radius, sigma, cfg["alpha"], value_range=vr)[1]
                        m = worst_case_metrics(lo, hi)
                        abst = (float(np.mean(~np.isfinite(lo) | (lo <= vr[0]))),
                                float(np.mean(~np.isfinite(hi) | (hi >= vr[1]))))
                    rec = {"detector": d.name, "ood_set": o, "group": bench.groups[o], **m, "sigma": sigma,
                           "radius": radius, "norm": "L2", "space": "pixel", "n_cert": cfg["n_cert"],
                           "alpha": cfg["alpha"], "model": model_name, "abstain_id": abst[0], "abstain_ood": abst[1]}
                    records.append(rec)
                    per.append(rec)
                records.append({**{k: per[0][k] for k in ("detector", "sigma", "radius", "norm", "space", "n_cert",
                                                          "alpha", "model")},
                                "ood_set": "mean", "group": "all",
                                **{k: float(np.mean([p[k] for p in per])) for k in METRIC_NAMES},
                                "abstain_id": float(np.mean([p["abstain_id"] for p in per])),
                                "abstain_ood": float(np.mean([p["abstain_ood"] for p in per]))})
    if rank != 0:
        return None
    per_set = [r for r in records if r["ood_set"] != "mean"]
    means = [r for r in records if r["ood_set"] == "mean"]
    models_txt = ", ".join(f"sigma {s:g}: {m}" for s, m in model_names.items())
    title = (f"## {cfg['benchmark']}: certified FPR@95 / AUROC (%) vs L2 radius eps (pixel space)\n\n"
             f"Worst case over the L2 ball: certified lower bounds of ID scores against certified upper bounds "
             f"of OOD scores (percentile smoothing, n = {cfg['n_cert']} noise samples per input, failure "
             f"probability alpha = {cfg['alpha']} per input); 'clean' is the same smoothed detector without an "
             f"adversary. Mean over {len(bench.ood)} OOD sets. Models: {models_txt}. Sets: "
             + ", ".join(f"{k} {v}" for k, v in sizes.items()) + ".")
    md = certify_table(records, radii, title)
    doc = {"command": "certify", "benchmark": cfg["benchmark"], "models": model_names, "results": per_set,
           "means": means, "taus": taus, "set_sizes": sizes, "seed": cfg["seed"], "data_root": str(root),
           "noise_space": "pixel", "config": cfg, "versions": versions(), "world_size": world, "device": str(dev),
           "wall_time_s": time.time() - t0}
    write_results(out, doc, md)
    try:
        from .plots import plot_certified
        plot_certified(means, out / "certified_auroc.png", title=f"{cfg['benchmark']}: certified AUROC vs L2 eps")
    except ImportError:  # matplotlib is an optional extra
        pass
    return doc
