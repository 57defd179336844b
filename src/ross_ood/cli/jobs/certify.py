"""``ross certify``: certified AUROC / FPR@95 vs L2 radius (pixel space) for smoothed
detectors at several sigma, beside the clean metrics of the same smoothed detectors."""
from __future__ import annotations

import time

from ross_ood.certify import certified_input_bounds, records_from_bounds
from ross_ood.cli.jobs.common import (
    base_doc,
    build_detectors,
    finish,
    open_model_and_benchmark,
    set_fingerprints,
    start_job,
)
from ross_ood.cli.settings import CertifySettings
from ross_ood.engine.evaluate import compute_set, fit_detectors, plan_units
from ross_ood.progress import progress
from ross_ood.runs.rundir import save_bounds

__all__ = ["run_certify"]

def _arrays(st, job, model, bench, units, sigma, need_val: bool) -> dict:
    out = {}
    for s, ds in bench.sets().items():
        if s == "id_val" and not need_val:  # nothing calibrates: 2,000 noise samples per image saved
            continue
        with progress(job.prog, f"{s} s={sigma:g}", len(ds)) as update:
            out[s] = compute_set(model, ds, s, units, job.cache, st.batch_size, st.block_size, st.workers, update)
    return out


#: salt of the noise behind the certify table's accuracy (apart from the certificate's own draws)
ACCURACY_SALT = 97


def _accuracy(model, ds, sigma: float, seed: int, batch_size: int) -> dict:
    """The classifier's accuracy on the ID test images, clean and under one draw of the
    certificate's noise per image (clipped to [0, 1]; keyed by the image's pixels, so a run in
    parts draws what the whole run draws): how much a network not trained with that noise loses."""
    import torch

    from ross_ood.noise import content_keys, draw_noise
    if ds.labels is None or bool((torch.as_tensor(ds.labels) < 0).any()):
        return {}
    right = {"clean": 0, "noisy": 0}
    with torch.no_grad():
        for i in range(0, len(ds), batch_size):
            xs, ys = zip(*(ds[j] for j in range(i, min(i + batch_size, len(ds)))))
            x, y = torch.stack(xs), torch.as_tensor(ys)
            noise = draw_noise(content_keys(x), [0] * len(x), x.shape[1:], seed, ACCURACY_SALT)
            for k, xin in (("clean", x), ("noisy", (x + sigma * noise).clamp(0.0, 1.0))):
                right[k] += int((model(xin.to(model.device)).argmax(1).cpu() == y).sum())
    return {"clean": right["clean"] / len(ds), "noisy": right["noisy"] / len(ds), "n": len(ds)}


def run_certify(st: CertifySettings) -> dict | None:
    """Run ``ross certify``; returns the results document (rank 0) or None (other ranks)."""
    job, opened = start_job(st, lambda dev: [open_model_and_benchmark(st, dev, st.model[i] if st.model else None)
                                             for i in range(len(st.sigma))])
    records, model_names, taus, t0 = [], {}, {}, time.time()
    bounds, value_ranges, need_val, accuracy = {}, {}, False, {}
    for sigma, (model, model_name, root, bench) in zip(st.sigma, opened):
        model_names[f"{sigma:g}"] = model_name
        dets = build_detectors(st, model, sigma=sigma)
        need_val = any(d.needs_fit for d in dets.values())  # only ROSS's tau calibrates on id_val
        arrays = _arrays(st, job, model, bench, plan_units(dets), sigma, need_val)
        accuracy[f"{sigma:g}"] = _accuracy(model, bench.id, sigma, st.seed, st.batch_size)
        if need_val:
            taus.update({f"{n}@{sigma:g}": t for n, t in fit_detectors(dets, arrays["id_val"]).items()})
        for name, det in dets.items():
            samples = {s: a[det.unit().name]["features"] for s, a in arrays.items()}
            per = certified_input_bounds(det, samples, bench.groups, st.radii, st.alpha, st.grid)
            value_ranges[name] = [float(v) for v in det.base.value_range]
            bounds.update({(name, float(sigma), rad, s): v for rad, sets in per.items() for s, v in sets.items()})
            records += records_from_bounds(per, bench.groups, det.base.value_range,
                                           {"detector": name, "sigma": sigma, "norm": "L2", "noise_space": "pixel",
                                            "n_samples": st.n_samples, "alpha": st.alpha, "model": model_name},
                                           st.bootstrap, st.seed)
    if job.rank != 0:
        return None
    doc = base_doc("certify", job, root, models=model_names, radii=st.radii, n_ood_sets=len(bench.ood),
                   results=[r for r in records if r["ood_set"] != "mean"],
                   means=[r for r in records if r["ood_set"] == "mean"], taus=taus,
                   set_sizes={k: len(v) for k, v in bench.sets().items() if k != "id_val" or need_val},
                   set_fingerprints=set_fingerprints(bench), groups=bench.groups, value_ranges=value_ranges,
                   id_accuracy=accuracy, wall_time_s=time.time() - t0)
    doc["noise_space"] = "pixel"
    save_bounds(job.out, bounds)
    finish(job, doc)
    try:
        from ross_ood.runs.plots import plot_certified
        plot_certified(doc["means"], job.out / "certified_auroc.png",
                       title=f"{st.benchmark}: certified AUROC vs L2 eps")
    except ImportError:  # matplotlib is an optional extra
        pass
    return doc
