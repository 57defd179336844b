"""Run detectors over a benchmark: shared forward passes, cached resumable blocks, metrics.

The expensive part is forward passes, so a run is planned per data set as *units*:
``pred`` (clean predictions and labels) and each detector's feature array (``unit()``):
``clean/<score>`` (a plain score) or ``noisy/<score>`` (the (n, N) matrix of a base score
over N noisy copies). All pass-level clean scores share one forward pass; all bases smoothed
with the same noise share the N noisy passes. The detector objects then turn the arrays
into scores (``fit_features`` on the ID validation set, ``score_features`` everywhere), so
eight detectors cost about as much as the most expensive one and every formula lives in
the detector classes.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from ross_ood.data.sets import ImageSet, SubsetView
from ross_ood.detectors import Detector, FeatureUnit
from ross_ood.metrics import accuracy, group_means, ood_records
from ross_ood.model import ModelWrapper, model_fingerprint
from ross_ood.progress import progress
from ross_ood.scores.base import score_outputs, score_values
from ross_ood.smoothing import median_stats, noisy_scores
from ross_ood.store import BlockCache, concat_blocks, dist_info, gather_blocks, shard_blocks, stable_key

__all__ = ["plan_units", "unit_arrays", "compute_set", "fit_detectors", "detector_scores", "summarize",
           "evaluate_benchmark", "set_fingerprint", "EvalResult", "PRED"]

PRED = "pred"


def plan_units(dets: dict[str, Detector]) -> list[FeatureUnit]:
    """The distinct feature arrays that ``dets`` read (shared between detectors)."""
    units: dict[str, FeatureUnit] = {}
    for name, d in dets.items():
        u = d.unit()
        if u.name in units and units[u.name].spec() != u.spec():
            raise ValueError(f"detector {name!r} reads {u.name} with other settings than another detector "
                             "of this run; give detectors of one run the same smoothing")
        units.setdefault(u.name, u)
    return list(units.values())


def set_fingerprint(ds: ImageSet) -> dict:
    """What identifies a set's images: a digest of its contents and subset, and preprocessing."""
    return {"signature": ds.signature(), "len": len(ds), "prep": [ds.channels, ds.size, ds.pre_size]}


def unit_arrays(model: ModelWrapper, x: torch.Tensor, units: list[FeatureUnit],
                y: torch.Tensor | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Every unit's arrays for one batch (``pred`` too when labels ``y`` are given)."""
    out: dict[str, dict[str, np.ndarray]] = {}
    clean = [u for u in units if u.smoothing is None]
    shared = [u for u in clean if u.score.pass_level]
    with torch.no_grad():
        if shared or y is not None:
            o = model.outputs(x, features=any(u.score.needs_features for u in shared))
            if y is not None:
                out[PRED] = {"pred": o.logits.argmax(1).cpu().numpy(), "label": y.numpy()}
            for u in shared:
                out[u.name] = {"features": score_outputs(u.score, o, model).double().cpu().numpy()}
    for u in clean:
        if not u.score.pass_level:
            with torch.no_grad():
                out[u.name] = {"features": score_values(u.score, model, x).double().cpu().numpy()}
    groups: dict = {}
    for u in units:
        if u.smoothing is not None:
            groups.setdefault(u.smoothing, []).append(u)
    for sm, us in groups.items():
        with torch.no_grad():
            mats = noisy_scores(model, x, [u.score for u in us], sm)
        for u in us:
            out[u.name] = {"features": mats[u.score.name].float().cpu().numpy()}
    return out


def _block_loader(ds: ImageSet, start: int, stop: int, batch_size: int, workers: int):
    sub = SubsetView(ds, np.arange(start, stop))
    return torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=workers)


def compute_set(model: ModelWrapper, ds: ImageSet, set_name: str, units: list[FeatureUnit], cache: BlockCache,
                batch_size: int = 128, block_size: int = 512, workers: int = 0,
                progress: Callable[[int], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Arrays of ``pred`` and every unit over the whole set ``ds`` (this process computes its
    shard of the blocks, loads cached ones, and all processes exchange results)."""
    if len(ds) == 0:
        raise ValueError(f"data set {set_name!r} is empty")
    rank, world = dist_info()
    base_key = {"model": model_fingerprint(model), "set": set_fingerprint(ds)}
    specs = {PRED: {"unit": PRED}, **{u.name: u.spec() for u in units}}
    mine: dict[tuple[int, int], dict] = {}
    for start, stop in shard_blocks(len(ds), block_size, rank, world):
        keys = {n: stable_key({**base_key, "block": [start, stop], **spec}) for n, spec in specs.items()}
        have = {n: cache.load(set_name, n, keys[n]) for n in specs}
        todo = [u for u in units if have[u.name] is None]
        if todo or have[PRED] is None:
            parts: dict[str, list[dict]] = {n: [] for n in specs if have[n] is None}
            for x, y in _block_loader(ds, start, stop, batch_size, workers):
                res = unit_arrays(model, x.to(model.device), todo, y)
                for n in parts:
                    parts[n].append(res[n])
                if progress:
                    progress(len(x))
            for n, p in parts.items():
                have[n] = concat_blocks(p)
                cache.save(set_name, n, keys[n], have[n])
        elif progress:
            progress(stop - start)
        mine[(start, stop)] = have
    blocks = gather_blocks(mine, len(ds), set_name)
    return {n: concat_blocks([b[n] for b in blocks]) for n in specs}


def fit_detectors(dets: dict[str, Detector], val_arrays: dict) -> dict[str, float]:
    """Fit every detector on the ID validation arrays; returns the ROSS taus by name."""
    for d in dets.values():
        d.fit_features(val_arrays[d.unit().name]["features"])
    return {n: d.tau_ for n, d in dets.items() if getattr(d, "tau_", None) is not None}


def detector_scores(det: Detector, arrays: dict) -> dict[str, np.ndarray]:
    """A fitted detector's scores on a set from its arrays; smoothed ones add median and D."""
    feats = torch.as_tensor(arrays[det.unit().name]["features"])
    out = {"score": det.score_features(feats).double().numpy()}
    if feats.dim() == 2:
        st = median_stats(feats)
        out.update(median=st["median"].numpy(), D=st["D"].numpy())
    return out


@dataclass
class EvalResult:
    records: list
    means: list
    id_accuracy: float
    id_accuracy_val_and_test: float
    taus: dict
    scores: dict  # detector -> set -> {"score", ("median", "D")}
    sizes: dict
    wall_time_s: float
    notes: list = field(default_factory=list)
    arrays: dict = field(default_factory=dict)  # set -> unit -> arrays


def summarize(names, scores: dict, groups: dict, id_set: str = "id_test", n_resamples: int = 1000,
              seed: int = 0) -> tuple[list, list]:
    """Per-set metric records and near/far/all means (with bootstrap intervals) from
    per-detector per-set scores."""
    records, means = [], []
    for name in names:
        recs = ood_records(scores[name][id_set]["score"], {s: scores[name][s]["score"] for s in groups}, groups,
                           group_means(groups), {"detector": name}, n_resamples, seed)
        records += [r for r in recs if r["ood_set"] in groups]
        means += [r for r in recs if r["ood_set"] not in groups]
    return records, means


def _accuracies(arrays: dict) -> tuple[float, float]:
    """ID test accuracy, and accuracy over validation + test (NaN where labels are missing)."""
    def acc(sets):
        p = {k: np.concatenate([arrays[s][PRED][k] for s in sets]) for k in ("pred", "label")}
        return accuracy(p["pred"], p["label"]) if (p["label"] >= 0).all() else float("nan")
    return acc(["id_test"]), acc(["id_val", "id_test"])


def evaluate_benchmark(model: ModelWrapper, bench, dets: dict[str, Detector], cache: BlockCache,
                       batch_size: int = 128, block_size: int = 512, workers: int = 0,
                       progress_factory: Callable | None = None, n_resamples: int = 1000, seed: int = 0) -> EvalResult:
    """Clean evaluation of ``dets`` (name -> detector, fitted here on the ID validation set)
    on a built benchmark (see ``data.build_benchmark``)."""
    t0 = time.time()
    units = plan_units(dets)
    sets = bench.sets()
    arrays = {}
    for set_name, ds in sets.items():
        with progress(progress_factory, set_name, len(ds)) as update:
            arrays[set_name] = compute_set(model, ds, set_name, units, cache, batch_size, block_size, workers, update)
    taus = fit_detectors(dets, arrays["id_val"])
    scores = {n: {s: detector_scores(d, arrays[s]) for s in sets} for n, d in dets.items()}
    records, means = summarize(list(dets), scores, bench.groups, n_resamples=n_resamples, seed=seed)
    acc, acc_all = _accuracies(arrays)
    sizes = {k: len(v) for k, v in sets.items()}
    return EvalResult(records, means, acc, acc_all, taus, scores, sizes, time.time() - t0, list(bench.notes), arrays)
