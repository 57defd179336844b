"""``ross sweep``: the paper's ablations, lambda, N and sigma sweeps of smoothed detectors,
clean and under the transfer attack (the paper's protocol).

The N sweep slices one run at the largest N (draw j of an input is the same noise for every
N) and the lambda sweep reuses the same noisy scores, so only the sigma sweep needs new
noisy passes; the transfer attack's adversarial inputs do not depend on N, sigma or lambda
and are computed once. Every detector is refitted (tau, threshold) at every point.
"""
from __future__ import annotations

import time

from ross_ood.attacks import OBJECTIVE_NAMES
from ross_ood.cli.jobs.common import base_doc, build_detectors, finish, open_model_and_benchmark, start_job
from ross_ood.cli.settings import SweepSettings
from ross_ood.engine.adversarial import compute_adv_set, plans_for
from ross_ood.engine.evaluate import compute_set, plan_units
from ross_ood.metrics import ood_records
from ross_ood.progress import progress
from ross_ood.validate import eps_label

__all__ = ["run_sweep"]


def _condition_name(cond) -> str:
    if cond == "clean":
        return "clean"
    eps, obj = cond
    return f"{OBJECTIVE_NAMES[obj]} {eps_label(eps)}"


def _arrays(st, job, model, bench, dets) -> dict:
    """set -> condition ("clean" or (eps, objective)) -> unit arrays, for ``dets``' smoothing."""
    sets = bench.sets()
    res = {}
    for s, ds in sets.items():
        with progress(job.prog, f"{s} N={next(iter(dets.values())).n_samples}", len(ds)) as update:
            res[s] = {"clean": compute_set(model, ds, s, plan_units(dets), job.cache, st.batch_size,
                                           st.block_size, st.workers, update)}
    for eps in st.eps_values:
        for obj in st.objective:
            for s in (["id_test"] if obj == "min" else list(bench.ood)):
                plans = {p.name: p for n, d in dets.items()
                         for p in plans_for(n, d, eps, obj, st.eps_space, ["transfer"], st.attack_budget, st.seed)}
                adv = compute_adv_set(model, sets[s], s, list(plans.values()), dets, st.attack_budget, job.cache,
                                      st.attack_batch, st.block_size)
                res[s][(eps, obj)] = {u: a for per in adv.values() for u, a in per.items()}
    return res


def _rows(st, bench, det, name, arrays, param, value) -> list:
    """Records of one detector at one sweep point (``det`` already carries the point)."""
    u, n = det.unit().name, det.n_samples
    feats = lambda s, cond: arrays[s][cond][u]["features"][:, :n]  # noqa: E731
    det.fit_features(feats("id_val", "clean"))
    clean = {s: det.score_features(feats(s, "clean")).numpy() for s in arrays}
    rows = []
    for cond in ["clean"] + [(e, o) for e in st.eps_values for o in st.objective]:
        attacked = "clean" if cond == "clean" else cond[1]
        id_s = det.score_features(feats("id_test", cond)).numpy() if attacked == "min" else clean["id_test"]
        ood = {o: det.score_features(feats(o, cond)).numpy() if attacked == "max" else clean[o] for o in bench.ood}
        extra = {"param": param, param: value, "detector": name, "condition": _condition_name(cond), "n_samples": n,
                 "lam": getattr(det, "lam", None), "sigma": det.sigma}
        rows += ood_records(id_s, ood, bench.groups, {"mean": ("all", list(bench.ood))}, extra, st.bootstrap,
                            st.seed)
    return rows


def _point(det, param, value):
    if param == "lam" and not hasattr(det, "lam"):
        return det.with_params()
    return det.with_params(**{param: value})


def run_sweep(st: SweepSettings) -> dict | None:
    """Run ``ross sweep``; returns the results document (rank 0) or None (other ranks)."""
    job, (model, model_name, root, bench) = start_job(st, lambda dev: open_model_and_benchmark(st, dev))
    t0, records = time.time(), []
    if "lam" in st.sweep or "n_samples" in st.sweep:
        n_max = max(st.n_samples_values + [st.n_samples]) if "n_samples" in st.sweep else st.n_samples
        dets = build_detectors(st, model, n_samples=n_max)
        arrays = _arrays(st, job, model, bench, dets)
        for param, values in (("lam", st.lam_values), ("n_samples", st.n_samples_values)):
            if param in st.sweep:
                for v in values:
                    for name, d in dets.items():
                        base = d.with_params(n_samples=st.n_samples) if param == "lam" else d
                        records += _rows(st, bench, _point(base, param, v), name, arrays, param, v)
    if "sigma" in st.sweep:
        for sigma in st.sigma_values:
            dets = build_detectors(st, model, sigma=sigma)
            arrays = _arrays(st, job, model, bench, dets)
            records += [r for name, d in dets.items() for r in _rows(st, bench, d, name, arrays, "sigma", sigma)]
    if job.rank != 0:
        return None
    attack_desc = ("none" if not st.eps_values else
                   f"transfer (paper protocol, {st.transfer_steps}-step PGD on the base score), eps "
                   + ", ".join(map(eps_label, st.eps_values)) + f" in {st.eps_space} space")
    doc = base_doc("sweep", job, root, model=model_name, params=st.sweep,
                   defaults={"n_samples": st.n_samples, "sigma": st.sigma, "lam": st.lam},
                   results=[r for r in records if r["ood_set"] != "mean"],
                   means=[r for r in records if r["ood_set"] == "mean"], attack_desc=attack_desc,
                   set_sizes={k: len(v) for k, v in bench.sets().items()}, groups=bench.groups,
                   eps_space=st.eps_space, wall_time_s=time.time() - t0)
    return finish(job, doc)
