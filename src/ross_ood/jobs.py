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
from dataclasses import dataclass

import torch

from .config import parse_lam

__all__ = ["run_eval", "run_attack_cmd", "run_certify", "run_sweep", "setup_runtime", "parse_eps"]

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


@dataclass
class _Job:
    """What every job starts with: device, output folder (config saved), cache, progress."""

    dev: torch.device
    out: Path
    rank: int
    world: int
    cache: object
    prog: object


def _start_job(cfg: dict) -> _Job:
    from .store import BlockCache, dist_info
    dev = setup_runtime(cfg["device"])
    out = Path(cfg["out"])
    rank, world = dist_info()
    if rank == 0:
        out.mkdir(parents=True, exist_ok=True)
        _save_config(out, cfg)
    return _Job(dev, out, rank, world, BlockCache(out / "cache"), _progress_factory(cfg["progress"]))


# ----------------------------------------------------------------------- eval
def run_eval(cfg: dict) -> dict | None:
    """Run ``ross eval`` with a resolved configuration; returns the results document (rank 0)."""
    from .evaluate import Smoothing, evaluate_benchmark, parse_detectors
    from .report import render, versions, write_results
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
    sm = Smoothing(cfg["n_samples"], cfg["sigma"], cfg["noise_space"], cfg["seed"], cfg["chunk_size"],
                   cfg["noise_device"])
    job = _start_job(cfg)
    dev, out, rank, world = job.dev, job.out, job.rank, job.world
    model, model_name, root = _open_model(cfg, dev)
    bench = _open_benchmark(cfg, model, root)
    res = evaluate_benchmark(model, bench, dets, sm, job.cache, cfg["batch_size"], cfg["block_size"],
                             cfg["workers"], job.prog)
    if rank != 0:
        return None
    doc = {"command": "eval", "benchmark": cfg["benchmark"], "model": model_name, "id_accuracy": res.id_accuracy,
           "id_accuracy_val_and_test": res.id_accuracy_val_and_test,
           "results": res.records, "means": res.means, "taus": res.taus, "set_sizes": res.sizes,
           "groups": bench.groups, "notes": res.notes, "seed": cfg["seed"], "data_root": str(root),
           "noise_space": sm.space, "detectors": [d.config(sm) for d in dets], "config": cfg,
           "versions": versions(), "world_size": world, "device": str(dev), "wall_time_s": res.wall_time_s}
    write_results(out, doc, render(doc))
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


def run_attack_cmd(cfg: dict) -> dict | None:
    """Run ``ross attack`` with a resolved configuration; returns the results document (rank 0)."""
    from .adversarial import TARGETS, AttackSettings, attack_benchmark, mean_over_sets
    from .evaluate import Smoothing, evaluate_benchmark, parse_detectors
    from .report import render, versions, write_results
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
    sm = Smoothing(cfg["n_samples"], cfg["sigma"], cfg["noise_space"], cfg["seed"], cfg["chunk_size"],
                   cfg["noise_device"])
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
    from .adversarial import SURROGATES
    for s_ in surrogates:
        if s_ not in SURROGATES:
            raise ValueError(f"surrogate must be one of {SURROGATES}, got {s_!r}")
    st = AttackSettings(cfg["transfer_steps"], 1 / 30, cfg["adaptive_steps"], cfg["restarts"], cfg["eot"],
                        cfg["attack_n"], surrogates)
    job = _start_job(cfg)
    dev, out, rank, world, cache, prog = job.dev, job.out, job.rank, job.world, job.cache, job.prog
    model, model_name, root = _open_model(cfg, dev)
    bench = _open_benchmark(cfg, model, root)
    clean = evaluate_benchmark(model, bench, dets, sm, cache, cfg["batch_size"], cfg["block_size"], cfg["workers"],
                               prog)
    records, wall = attack_benchmark(model, bench, dets, sm, clean.arrays, clean.taus, eps_list, objectives,
                                     cfg["eps_space"], targets, st, cfg["seed"], cache, cfg["attack_batch"],
                                     cfg["block_size"], prog)
    if rank != 0:
        return None
    means = mean_over_sets(records)
    doc = {"command": "attack", "benchmark": cfg["benchmark"], "model": model_name, "id_accuracy": clean.id_accuracy,
           "clean": clean.records, "clean_means": clean.means, "results": records, "means": means,
           "taus": clean.taus, "set_sizes": clean.sizes, "groups": bench.groups, "notes": clean.notes,
           "seed": cfg["seed"], "data_root": str(root), "noise_space": sm.space, "eps_space": cfg["eps_space"],
           "attack_settings": {k: getattr(st, k) for k in st.__dataclass_fields__}, "eps_list": eps_list,
           "targets": targets,
           "detectors": [d.config(sm) for d in dets], "config": cfg, "versions": versions(), "world_size": world,
           "device": str(dev), "wall_time_s": clean.wall_time_s + wall}
    write_results(out, doc, render(doc))
    return doc


# ----------------------------------------------------------------------- certify
def run_certify(cfg: dict) -> dict | None:
    """Certified AUROC / FPR@95 vs L2 radius (pixel space) for smoothed detectors at several
    sigma, beside the clean metrics of the same smoothed detectors."""
    import numpy as np

    from .certify import median_bounds, ross_bounds, worst_case_metrics
    from .evaluate import Smoothing, compute_set, detector_scores, parse_detectors, plan_units
    from .metrics import METRIC_NAMES, ood_metrics
    from .report import render, versions, write_results
    from .smoothing import calibrate_tau, median_stats
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
    job = _start_job(cfg)
    dev, out, rank, world, cache, prog = job.dev, job.out, job.rank, job.world, job.cache, job.prog
    records, model_names, taus, sizes = [], {}, {}, {}
    t0 = time.time()
    for i, sigma in enumerate(sigmas):
        mcfg = dict(cfg, model=models[i] if models else cfg["model"])
        model, model_name, root = _open_model(mcfg, dev)
        model_names[sigma] = model_name
        bench = _open_benchmark(cfg, model, root)
        sm = Smoothing(cfg["n_cert"], sigma, "pixel", cfg["seed"], cfg["chunk_size"], cfg["noise_device"])
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
    doc = {"command": "certify", "benchmark": cfg["benchmark"], "models": {f"{k:g}": v for k, v in model_names.items()},
           "results": per_set, "radii": radii, "n_ood_sets": len(bench.ood),
           "means": means, "taus": taus, "set_sizes": sizes, "seed": cfg["seed"], "data_root": str(root),
           "noise_space": "pixel", "config": cfg, "versions": versions(), "world_size": world, "device": str(dev),
           "wall_time_s": time.time() - t0}
    write_results(out, doc, render(doc))
    try:
        from .plots import plot_certified
        plot_certified(means, out / "certified_auroc.png", title=f"{cfg['benchmark']}: certified AUROC vs L2 eps")
    except ImportError:  # matplotlib is an optional extra
        pass
    return doc


# ----------------------------------------------------------------------- sweep
def run_sweep(cfg: dict) -> dict | None:
    """The paper's ablations: lambda, N and sigma sweeps of smoothed detectors, clean and under
    the transfer attack (the paper's protocol). The N sweep slices one run at the largest N
    (draw j of an input is the same noise for every N) and the lambda sweep reuses the same
    noisy scores, so only the sigma sweep needs new noisy passes; the adversarial inputs of the
    transfer attack do not depend on N, sigma or lambda and are computed once."""
    import dataclasses

    import numpy as np

    from .adversarial import AttackSettings, compute_adv_set, plans_for
    from .evaluate import Smoothing, compute_set, detector_scores, parse_detectors, plan_units
    from .metrics import METRIC_NAMES, ood_metrics
    from .report import render, versions, write_results
    dets = parse_detectors(cfg["detectors"], parse_lam(cfg["lam"]))
    for d in dets:
        if d.kind == "base":
            raise ValueError(f"sweep needs smoothed detectors (median-<score> or ross-<score>), got {d.name!r}")
    params = _split(cfg["params"])
    for p in params:
        if p not in ("lam", "n_samples", "sigma"):
            raise ValueError(f"sweep params must be among lam, n_samples, sigma; got {p!r}")
    lams = [float(v) for v in _split(cfg["lams"])]
    ns = [int(v) for v in _split(cfg["ns"])]
    sigmas = [float(v) for v in _split(cfg["sweep_sigmas"])]
    if any(v < 1 for v in ns) or any(v <= 0 for v in sigmas) or any(v < 0 for v in lams):
        raise ValueError(f"sweep values out of range: ns {ns}, sigmas {sigmas}, lams {lams}")
    eps_list = parse_eps(cfg["attack_eps"]) if str(cfg["attack_eps"]).strip() else []
    objectives = _split(cfg["objective"]) if eps_list else []
    job = _start_job(cfg)
    dev, out, rank, world, cache, prog = job.dev, job.out, job.rank, job.world, job.cache, job.prog
    model, model_name, root = _open_model(cfg, dev)
    bench = _open_benchmark(cfg, model, root)
    t0 = time.time()
    n_default, sigma_default = int(cfg["n_samples"]), float(cfg["sigma"])
    n_max = max(ns + [n_default]) if "n_samples" in params else n_default
    st = AttackSettings(transfer_steps=cfg["transfer_steps"])
    sets = bench.sets()

    def noisy_arrays(sigma: float, n: int) -> dict:
        """set -> condition -> {unit: arrays} at this sigma, for clean and attacked inputs."""
        sm = Smoothing(n, sigma, cfg["noise_space"], cfg["seed"], cfg["chunk_size"], cfg["noise_device"])
        units = plan_units(dets, sm)
        res = {s: {"clean": None} for s in sets}
        for s, ds in sets.items():
            bar = prog(f"{s} sigma={sigma:g}", len(ds)) if prog else None
            try:
                res[s]["clean"] = compute_set(model, ds, s, units, cache, cfg["batch_size"], cfg["block_size"],
                                              cfg["workers"], bar.update if bar else None)
            finally:
                if bar:
                    bar.close()
        for eps in eps_list:
            for obj in objectives:
                targets = ["id_test"] if obj == "min" else list(bench.ood)
                for s in targets:
                    plans = {}
                    for d in dets:
                        p = plans_for(d, eps, obj, cfg["eps_space"], ["transfer"], st, cfg["seed"])[0]
                        plans.setdefault(p.name, p)
                    adv = compute_adv_set(model, sets[s], s, list(plans.values()), dets, sm, {}, st, cache,
                                          cfg["attack_batch"], cfg["block_size"])
                    merged = {}
                    for pa in adv.values():
                        merged.update(pa)
                    res[s][(eps, obj)] = merged
        return res

    def score_sets(det, arrays_by_set, cond, n, lam) -> tuple[dict, float]:
        d = dataclasses.replace(det, lam=lam)
        sliced = {}
        for s, per in arrays_by_set.items():
            arr = per[cond] if cond in per else per["clean"]
            mat = arr[f"noisy/{d.base.name}"]["noisy"][:, :n]
            sliced[s] = {f"noisy/{d.base.name}": {"noisy": mat}}
        from .smoothing import calibrate_tau, median_stats
        val_m = median_stats(torch.from_numpy(arrays_by_set["id_val"]["clean"][f"noisy/{d.base.name}"]["noisy"][:, :n]))
        tau = calibrate_tau(val_m["median"], 0.05)
        return {s: detector_scores(d, sliced[s], tau)["score"] for s in sliced}, tau

    def rows_for(param, value, arrays_by_set, n, lam, sigma):
        rows = []
        conds = ["clean"] + [(e, o) for e in eps_list for o in objectives]
        for d in dets:
            clean, _ = score_sets(d, arrays_by_set, "clean", n, lam)
            for cond in conds:
                if cond == "clean":
                    sc, name = clean, "clean"
                else:
                    sc, _ = score_sets(d, arrays_by_set, cond, n, lam)
                    name = f"PGD-{'Min' if cond[1] == 'min' else 'Max'} {round(cond[0] * 255, 2):g}/255"
                per = []
                for o in bench.ood:
                    id_s = sc["id_test"] if cond == "clean" or cond[1] == "min" else clean["id_test"]
                    ood_s = sc[o] if cond == "clean" or cond[1] == "max" else clean[o]
                    per.append({"ood_set": o, **ood_metrics(id_s, ood_s)})
                base = {"param": param, param: value, "detector": d.name, "condition": name,
                        "n_samples": n, "lam": lam, "sigma": sigma}
                rows += [{**base, **r, "group": bench.groups[r["ood_set"]]} for r in per]
                rows.append({**base, "ood_set": "mean", "group": "all",
                             **{k: float(np.mean([r[k] for r in per])) for k in METRIC_NAMES}})
        return rows

    records = []
    default_lam = dets[0].lam
    if "lam" in params or "n_samples" in params:
        base_arrays = noisy_arrays(sigma_default, n_max)
        if "lam" in params:
            for lam in lams:
                records += rows_for("lam", lam, base_arrays, n_default, lam, sigma_default)
        if "n_samples" in params:
            for n in ns:
                records += rows_for("n_samples", n, base_arrays, n, default_lam, sigma_default)
    if "sigma" in params:
        for sig in sigmas:
            records += rows_for("sigma", sig, noisy_arrays(sig, n_default), n_default, default_lam, sig)
    if rank != 0:
        return None
    attack_desc = ("none" if not eps_list else
                   f"transfer (paper protocol, {st.transfer_steps}-step PGD on the base score), eps "
                   + ", ".join(f"{round(e * 255, 2):g}/255" for e in eps_list) + f" in {cfg['eps_space']} space")
    doc = {"command": "sweep", "benchmark": cfg["benchmark"], "model": model_name, "params": params,
           "defaults": {"n_samples": n_default, "sigma": sigma_default, "lam": default_lam},
           "results": [r for r in records if r["ood_set"] != "mean"],
           "means": [r for r in records if r["ood_set"] == "mean"], "attack_desc": attack_desc,
           "set_sizes": {k: len(v) for k, v in sets.items()}, "groups": bench.groups, "seed": cfg["seed"],
           "data_root": str(root), "noise_space": cfg["noise_space"], "eps_space": cfg["eps_space"], "config": cfg,
           "versions": versions(), "world_size": world, "device": str(dev), "wall_time_s": time.time() - t0}
    write_results(out, doc, render(doc))
    return doc
