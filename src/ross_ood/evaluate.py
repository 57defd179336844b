"""Run detectors over a benchmark: shared forward passes, cached resumable blocks, metrics.

The expensive part is forward passes, so a run is planned per data set as *units*:
``pred`` (clean predictions and labels), ``clean/<score>`` (a plain score) and
``noisy/<base>`` (the (n, N) matrix of a base score over N noisy copies). All pass-level
clean scores share one forward pass; all bases smoothed with the same (N, sigma, space,
seed) share the N noisy passes. Detectors are then read off the units: a plain score, the
median of a noisy matrix, or ROSS (median, D and tau from the ID validation medians), so
eight detectors cost about as much as the most expensive one.
"""
from __future__ import annotations

import hashlib
import time
from dataclasses import dataclass, field
from typing import Callable

import numpy as np
import torch

from .data.sets import ImageSet, SubsetView
from .metrics import METRIC_NAMES, accuracy, ood_metrics
from .model import ModelWrapper
from .scores import Score, get_score
from .smoothing import NOISE_SPACES, calibrate_tau, noisy_scores, ross_gate
from .store import BlockCache, concat_blocks, dist_info, gather_blocks, shard_blocks, stable_key

__all__ = ["DetSpec", "Smoothing", "parse_detectors", "plan_units", "compute_set", "detector_scores",
           "evaluate_benchmark", "set_fingerprint", "model_fingerprint", "Unit"]


@dataclass(frozen=True)
class Smoothing:
    n_samples: int = 25
    sigma: float = 0.05
    space: str = "pixel"
    seed: int = 0
    chunk_size: int = 128
    noise_device: str = "cpu"

    def __post_init__(self):
        if int(self.n_samples) < 1:
            raise ValueError(f"n_samples must be >= 1, got {self.n_samples}")
        if not self.sigma >= 0:
            raise ValueError(f"sigma must be >= 0, got {self.sigma}")
        if self.space not in NOISE_SPACES:
            raise ValueError(f"noise space must be one of {NOISE_SPACES}, got {self.space!r}")

    def key(self) -> dict:  # chunk_size does not change the numbers; noise_device only when not cpu
        k = {"n": int(self.n_samples), "sigma": float(self.sigma), "space": self.space, "seed": int(self.seed)}
        if self.noise_device != "cpu":
            k["noise_device"] = self.noise_device
        return k


@dataclass
class DetSpec:
    """A detector of a run: ``kind`` is ``base``, ``median`` or ``ross``."""

    name: str
    kind: str
    base: Score
    lam: float = 0.01

    def config(self, smoothing: Smoothing) -> dict:
        d = {"name": self.name, "kind": self.kind, "base": self.base.spec()}
        if self.kind != "base":
            d["smoothing"] = smoothing.key()
        if self.kind == "ross":
            d["lam"] = self.lam
        return d


def parse_detectors(names, lam: float | dict = 0.01, score_params: dict | None = None) -> list[DetSpec]:
    """``msp``, ``fdbd``, ``pro-fdbd`` ... (plain), ``median-<score>``, ``ross-<score>``.
    ``lam`` is one number or {base name: lam}; ``score_params`` is {score name: {param: value}}."""
    if isinstance(names, str):
        names = [n for n in names.split(",") if n.strip()]
    if not names:
        raise ValueError("no detectors given")
    score_params = score_params or {}
    out = []
    for raw in names:
        name = raw.strip().lower()
        kind, base = "base", name
        for prefix in ("ross-", "median-"):
            if name.startswith(prefix):
                kind, base = prefix[:-1], name[len(prefix):]
        params = dict(score_params.get(base.replace("pro-", ""), {}))
        if base.startswith("pro-"):
            params.update(score_params.get("pro", {}))
        score = get_score(base, **params)
        lam_v = lam.get(base, lam.get("default", 0.01)) if isinstance(lam, dict) else float(lam)
        out.append(DetSpec(name, kind, score, float(lam_v)))
    if len({d.name for d in out}) != len(out):
        raise ValueError(f"duplicate detector names in {names}")
    return out


@dataclass(frozen=True)
class Unit:
    """One cached array family of a data set."""

    name: str  # "pred", "clean/<score>", "noisy/<score>"
    score: Score | None = None
    smoothing: Smoothing | None = None

    def spec(self) -> dict:
        d = {"unit": self.name}
        if self.score is not None:
            d["score"] = self.score.spec()
        if self.smoothing is not None:
            d["smoothing"] = self.smoothing.key()
        return d


def plan_units(dets: list[DetSpec], smoothing: Smoothing) -> list[Unit]:
    units: dict[str, Unit] = {"pred": Unit("pred")}
    for d in dets:
        if d.kind == "base":
            units.setdefault(f"clean/{d.base.name}", Unit(f"clean/{d.base.name}", d.base))
        else:
            units.setdefault(f"noisy/{d.base.name}", Unit(f"noisy/{d.base.name}", d.base, smoothing))
    return list(units.values())


def set_fingerprint(ds: ImageSet) -> dict:
    """What identifies a set's images: its source, subset indices and preprocessing."""
    if isinstance(ds, SubsetView):
        return {"base": set_fingerprint(ds.base), "indices": ds.indices,
                "prep": [ds.channels, ds.size, ds.pre_size]}
    return {"describe": ds.describe(), "len": len(ds), "prep": [ds.channels, ds.size, ds.pre_size]}


def model_fingerprint(model: ModelWrapper) -> str:
    fp = getattr(model, "fingerprint", None)
    if fp:
        return fp
    h = hashlib.sha256()
    for k, v in model.state_dict().items():
        h.update(k.encode())
        h.update(v.detach().cpu().contiguous().numpy().tobytes())
    return h.hexdigest()[:16]


def _batch_units(model: ModelWrapper, x: torch.Tensor, y: torch.Tensor, units: list[Unit]) -> dict:
    out: dict[str, dict[str, np.ndarray]] = {}
    clean_pass = [u for u in units if u.smoothing is None and u.score is not None and u.score.pass_level]
    need_feats = any(u.score.needs_features for u in clean_pass)
    with torch.no_grad():
        o = model.outputs(x, features=need_feats)
        out["pred"] = {"pred": o.logits.argmax(1).cpu().numpy(), "label": y.numpy()}
        for u in clean_pass:
            out[u.name] = {"score": u.score.from_outputs(o, model).double().cpu().numpy()}
    for u in units:
        if u.smoothing is None and u.score is not None and not u.score.pass_level:
            with torch.no_grad():
                out[u.name] = {"score": u.score(model, x).double().cpu().numpy()}
    groups: dict[Smoothing, list[Unit]] = {}
    for u in units:
        if u.smoothing is not None:
            groups.setdefault(u.smoothing, []).append(u)
    for sm, us in groups.items():
        with torch.no_grad():
            mats = noisy_scores(model, x, [u.score for u in us], sm.n_samples, sm.sigma, sm.space, sm.seed,
                                chunk_size=sm.chunk_size, noise_device=sm.noise_device)
        for u in us:
            out[u.name] = {"noisy": mats[u.score.name].float().cpu().numpy()}
    return out


def compute_set(model: ModelWrapper, ds: ImageSet, set_name: str, units: list[Unit], cache: BlockCache,
                batch_size: int = 128, block_size: int = 512, workers: int = 0,
                progress: Callable[[int], None] | None = None) -> dict[str, dict[str, np.ndarray]]:
    """Arrays of every unit over the whole set ``ds`` (this process computes its shard of the
    blocks, loads cached ones, and all processes exchange results)."""
    if len(ds) == 0:
        raise ValueError(f"data set {set_name!r} is empty")
    rank, world = dist_info()
    base_key = {"model": model_fingerprint(model), "set": set_fingerprint(ds)}
    mine: dict[tuple[int, int], dict] = {}
    for start, stop in shard_blocks(len(ds), block_size, rank, world):
        keys = {u.name: stable_key({**base_key, "block": [start, stop], **u.spec()}) for u in units}
        have = {u.name: cache.load(set_name, u.name, keys[u.name]) for u in units}
        todo = [u for u in units if have[u.name] is None]
        if todo:
            sub = SubsetView(ds, np.arange(start, stop))
            loader = torch.utils.data.DataLoader(sub, batch_size=batch_size, shuffle=False, num_workers=workers)
            parts: dict[str, list[dict]] = {u.name: [] for u in todo}
            for x, y in loader:
                res = _batch_units(model, x.to(model.device), y, todo)
                for u in todo:
                    parts[u.name].append(res[u.name])
                if progress:
                    progress(len(x))
            for u in todo:
                arrays = concat_blocks(parts[u.name])
                cache.save(set_name, u.name, keys[u.name], arrays)
                have[u.name] = arrays
        elif progress:
            progress(stop - start)
        mine[(start, stop)] = have
    blocks = gather_blocks(mine, len(ds), set_name)
    return {u.name: concat_blocks([b[u.name] for b in blocks]) for u in units}


def _median_d(noisy: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    from .smoothing import median_stats
    st = median_stats(torch.from_numpy(noisy))
    return st["median"].numpy(), st["D"].numpy()


def detector_scores(det: DetSpec, arrays: dict, tau: float | None = None) -> dict[str, np.ndarray]:
    """The detector's score on a set from its unit arrays; for ROSS also median and D."""
    if det.kind == "base":
        return {"score": arrays[f"clean/{det.base.name}"]["score"]}
    m, d = _median_d(arrays[f"noisy/{det.base.name}"]["noisy"])
    if det.kind == "median":
        return {"score": m, "median": m, "D": d}
    s = ross_gate(torch.from_numpy(m), torch.from_numpy(d), tau, det.lam).numpy()
    return {"score": s, "median": m, "D": d}


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


def summarize(dets: list[DetSpec], scores: dict, groups: dict, id_set: str = "id_test") -> tuple[list, list]:
    """Per-set metric records and near/far/all means from per-detector per-set scores."""
    records, means = [], []
    for det in dets:
        per = {}
        for set_name, group in groups.items():
            m = ood_metrics(scores[det.name][id_set]["score"], scores[det.name][set_name]["score"])
            per[set_name] = m
            records.append({"detector": det.name, "ood_set": set_name, "group": group, **m})
        for g in ("near", "far", "all"):
            names = [k for k, v in groups.items() if (v == g or g == "all")]
            if names:
                means.append({"detector": det.name, "ood_set": f"{g}-mean", "group": g,
                              **{k: float(np.mean([per[n][k] for n in names])) for k in METRIC_NAMES}})
    return records, means


def evaluate_benchmark(model: ModelWrapper, bench, dets: list[DetSpec], smoothing: Smoothing,
                       cache: BlockCache, batch_size: int = 128, block_size: int = 512, workers: int = 0,
                       progress_factory: Callable | None = None) -> EvalResult:
    """Clean evaluation of ``dets`` on a built benchmark (see ``data.build_benchmark``)."""
    t0 = time.time()
    units = plan_units(dets, smoothing)
    sets = bench.sets()
    arrays = {}
    for set_name, ds in sets.items():
        prog = progress_factory(set_name, len(ds)) if progress_factory else None
        try:
            arrays[set_name] = compute_set(model, ds, set_name, units, cache, batch_size, block_size, workers,
                                           prog.update if prog else None)
        finally:
            if prog:
                prog.close()
    taus = {}
    for det in dets:
        if det.kind == "ross":
            m, _ = _median_d(arrays["id_val"][f"noisy/{det.base.name}"]["noisy"])
            taus[det.name] = calibrate_tau(m, 0.05)
    scores = {det.name: {s: detector_scores(det, arrays[s], taus.get(det.name)) for s in sets} for det in dets}
    records, means = summarize(dets, scores, bench.groups)
    pred = arrays["id_test"]["pred"]
    has_labels = (pred["label"] >= 0).all()
    acc = accuracy(pred["pred"], pred["label"]) if has_labels else float("nan")
    both = {k: np.concatenate([arrays[s]["pred"][k] for s in ("id_val", "id_test")]) for k in ("pred", "label")}
    acc_all = accuracy(both["pred"], both["label"]) if (both["label"] >= 0).all() else float("nan")
    sizes = {k: len(v) for k, v in sets.items()}
    return EvalResult(records, means, acc, acc_all, taus, scores, sizes, time.time() - t0, list(bench.notes), arrays)
