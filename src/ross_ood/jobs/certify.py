"""``ross certify``: certified AUROC / FPR@95 vs L2 radius (pixel space) for smoothed
detectors at several sigma, beside the clean metrics of the same smoothed detectors."""
from __future__ import annotations

import time

from ..certify import certified_records
from ..evaluate import compute_set, fit_detectors, plan_units
from ..settings import CertifySettings
from .common import base_doc, build_detectors, finish, open_model_and_benchmark, start_job

__all__ = ["run_certify"]


def _arrays(st, job, model, bench, units, sigma) -> dict:
    out = {}
    for s, ds in bench.sets().items():
        bar = job.prog(f"{s} s={sigma:g}", len(ds)) if job.prog else None
        try:
            out[s] = compute_set(model, ds, s, units, job.cache, st.batch_size, st.block_size, st.workers,
                                 bar.update if bar else None)
        finally:
            if bar:
                bar.close()
    return out


def run_certify(st: CertifySettings) -> dict | None:
    """Run ``ross certify``; returns the results document (rank 0) or None (other ranks)."""
    job, opened = start_job(st, lambda dev: [open_model_and_benchmark(st, dev, st.model[i] if st.model else None)
                                             for i in range(len(st.sigma))])
    records, model_names, taus, t0 = [], {}, {}, time.time()
    for sigma, (model, model_name, root, bench) in zip(st.sigma, opened):
        model_names[f"{sigma:g}"] = model_name
        dets = build_detectors(st, model, sigma=sigma)
        arrays = _arrays(st, job, model, bench, plan_units(dets), sigma)
        fitted = fit_detectors(dets, arrays["id_val"])
        taus.update({f"{n}@{sigma:g}": t for n, t in fitted.items()})
        for name, det in dets.items():
            samples = {s: a[det.unit().name]["features"] for s, a in arrays.items()}
            records += certified_records(det, samples, bench.groups, st.radii, st.alpha, st.grid,
                                         {"detector": name, "sigma": sigma, "norm": "L2", "noise_space": "pixel",
                                          "n_samples": st.n_samples, "alpha": st.alpha, "model": model_name},
                                         st.bootstrap, st.seed)
    if job.rank != 0:
        return None
    doc = base_doc("certify", job, root, models=model_names, radii=st.radii, n_ood_sets=len(bench.ood),
                   results=[r for r in records if r["ood_set"] != "mean"],
                   means=[r for r in records if r["ood_set"] == "mean"], taus=taus,
                   set_sizes={k: len(v) for k, v in bench.sets().items()}, wall_time_s=time.time() - t0)
    doc["noise_space"] = "pixel"
    finish(job, doc)
    try:
        from ..plots import plot_certified
        plot_certified(doc["means"], job.out / "certified_auroc.png",
                       title=f"{st.benchmark}: certified AUROC vs L2 eps")
    except ImportError:  # matplotlib is an optional extra
        pass
    return doc
