"""One call for a detector's whole robustness report, on the user's own images.

``robustness_report(detector, id_images, {"name": ood_images, ...}, eps=[2/255, 8/255])`` scores
the ID test images and every OOD set clean, attacks them with the default attack (the paper's
transfer PGD, adaptive APGD and EOT-PGD on the defended score, the gradient-free Square attack on
the defended score, the worst case per input) for
PGD-Min (ID pushed down), PGD-Max (OOD pushed up) and PGD-Both, and returns a
``RobustnessReport``: AUROC / FPR@95 per budget, objective and target with bootstrap intervals,
the per-input scores, and (with ``certify_radii``) certified AUROC per L2 radius for smoothed
detectors. ``report.save(dir)`` writes a run folder that ``ross compare``, ``ross report`` and the
leaderboard read like a ``ross attack`` run. It is the same computation as ``ross attack``
(``engine.adversarial.attack_benchmark``); only the images come from memory.
"""
from __future__ import annotations

import json
import os
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from ross_ood.attacks import ATTACK_VERSION
from ross_ood.data.benchmarks import Benchmark
from ross_ood.data.sets import TensorSet
from ross_ood.detectors import Detector
from ross_ood.detectors.custom import as_detector
from ross_ood.engine.adversarial import TARGETS, AttackBudget, attack_benchmark, check_targets
from ross_ood.engine.evaluate import compute_set, detector_scores, plan_units, set_fingerprint, summarize
from ross_ood.metrics import check_bootstrap_size
from ross_ood.progress import bars
from ross_ood.progress import progress as bar
from ross_ood.runs.rundir import prepare_out, save_input_scores, write_results
from ross_ood.runs.tables import render, versions
from ross_ood.store import BlockCache, atomic_write_text
from ross_ood.validate import check_certify_args, check_choice, check_eps, check_int, eps_label

__all__ = ["robustness_report", "attack_report", "RobustnessReport", "Attack", "BUDGET_PRESETS", "budget_preset"]

#: attack budgets by name: ``default`` is the attack every stored number uses (attack version 4);
#: ``quick`` is a cheap look (a quarter of the steps, no EOT-PGD, 100 gradient-free queries): a
#: stronger attack can only lower it
BUDGET_PRESETS = {
    "default": AttackBudget(),
    "quick": AttackBudget(transfer_steps=10, adaptive_steps=10, adaptive_restarts=1, eotpgd_steps=0, square_queries=100),
}


def budget_preset(budget) -> AttackBudget:
    """An ``AttackBudget`` from a preset name (``BUDGET_PRESETS``) or an ``AttackBudget``."""
    if isinstance(budget, AttackBudget):
        return budget
    if budget is None:
        return BUDGET_PRESETS["default"]
    check_choice("budget", budget, tuple(BUDGET_PRESETS))
    return BUDGET_PRESETS[budget]


@dataclass
class RobustnessReport:
    """The result of ``robustness_report``. ``doc`` is the results document (the format of
    ``ross attack``'s ``results.json``); ``scores`` the per-input scores keyed
    (detector, eps or "clean", side, set, target) (``runs.rundir.ScoreKey``)."""

    doc: dict
    scores: dict
    certified: list = field(default_factory=list)

    def auroc(self, eps: float | str = "clean", objective: str = "both", target: str = "worst",
              group: str = "all-mean") -> float:
        """Mean AUROC (fraction) over the OOD sets of ``group`` (``all-mean``, ``near-mean``,
        ``far-mean`` or one set's name) clean (``eps="clean"``) or under attack."""
        if eps == "clean":
            rows = self.doc["clean_means"] + self.doc["clean"]
            hit = [r for r in rows if r["ood_set"] == group]
        else:
            rows = self.doc["means"] + self.doc["results"]
            name = "mean" if group == "all-mean" else group
            hit = [r for r in rows if r["ood_set"] == name and r["objective"] == objective and r["target"] == target
                   and abs(r["eps"] - eps) < 1e-12]
        if not hit:
            raise KeyError(f"no record for eps {eps!r}, objective {objective!r}, target {target!r}, group {group!r}")
        return float(hit[0]["auroc"])

    def table(self) -> str:
        """The markdown tables of ``ross attack`` (and the certified table, when computed)."""
        text = render(self.doc)
        if self.certified:
            rows = ["| detector | L2 radius | certified AUROC | certified FPR@95 |", "|---|---|---|---|"]
            rows += [f"| {r['detector']} | {r['radius']:g} | {100 * r['auroc']:.2f} | {100 * r['fpr95']:.2f} |"
                     for r in self.certified]
            text += "\n\n### certified (percentile smoothing, mean over the OOD sets)\n\n" + "\n".join(rows)
        return text

    def save(self, out: str | os.PathLike) -> Path:
        """A run folder: ``results.json`` / ``.md`` / ``.csv``, ``input_scores.npz``, ``config.yaml``."""
        import yaml
        out = Path(out)
        prepare_out(out)
        atomic_write_text(out / "config.yaml", yaml.safe_dump(self.doc["config"], sort_keys=True))
        clean = {}
        attacked = {}
        for k, v in self.scores.items():
            if k[1] == "clean":
                clean.setdefault(k[0], {})[k[3]] = {"score": v}
            else:
                attacked[k] = v
        save_input_scores(out, clean, attacked)
        doc = dict(self.doc, certified=self.certified) if self.certified else self.doc
        write_results(out, doc, self.table())
        return out


def _name(det) -> str:
    """The command line's name of a detector: ``energy``, ``median-energy``, ``ross-fdbd``, ..."""
    base = det.base.name
    return base if det.kind == "base" else f"{det.kind}-{base}"


def robustness_report(detector: Detector, id_images, ood_sets: dict, *, eps=(2 / 255, 8 / 255),
                      budget="default", objectives=("min", "max", "both"), targets=TARGETS,
                      groups: dict | None = None, certify_radii=None, certify_n: int = 2000,
                      alpha: float = 0.001, n_resamples: int = 1000, seed: int = 0, batch_size: int = 64,
                      cache_dir: str | os.PathLike | None = None, name: str | None = None,
                      model=None, progress: bool | None = None) -> RobustnessReport:
    """The robustness report of a fitted detector (see the module doc).

    Parameters
    ----------
    detector : Detector or an object with ``score(x)``
        Fitted (``fit`` on held-out ID images): ``BaseScoreDetector``, ``MedianSmoothing``,
        ``QuantileSmoothing`` or ``ROSS``; or a detector object of your own (``score``, optionally
        ``surrogate`` and ``spec``: ``ross_ood.detectors.custom``), with ``model``, the classifier it
        guards (``ross_ood.wrap``).
    id_images, ood_sets
        ID test images and ``{name: images}`` of OOD sets; each a (N, C, H, W) tensor in [0, 1]
        or a DataLoader / iterable of batches (tensors, (x, y) tuples, dicts with ``x``).
    eps : float or sequence
        L-inf budgets as fractions of the pixel range (8/255 = 0.0314), each in (0, 1].
    budget : "default", "quick" or AttackBudget
        The attack's budget (``BUDGET_PRESETS``); ``default`` is the one every stored number uses.
    groups : dict, optional
        ``{set name: "near" | "far"}`` for near / far means (default: every set ``near``).
    certify_radii : sequence, optional
        L2 radii (pixel units) for certified AUROC (smoothed median / quantile detectors), from
        ``certify_n`` noise samples per image at failure probability ``alpha``.
    cache_dir : path, optional
        A folder that makes the report resumable (a killed call redoes only unfinished blocks).
    progress : bool, optional
        Progress bars with the time left, on stderr (None: only when stderr is a terminal).
        ``budget.precision`` ``auto`` (the default) runs the attack in bf16 where it is measured
        faster on this machine, else fp32 (``ross_ood.precision``); the report records which ran.
    """
    eps_list = [check_eps(e, strict=True) for e in (eps if isinstance(eps, (list, tuple)) else [eps])]
    seed, batch_size, n_resamples = check_int("seed", seed, 0), check_int("batch_size", batch_size), \
        check_int("n_resamples", n_resamples, 0)
    if certify_radii:  # checked before the attack runs: a bad certificate argument loses no attack
        certify_n = check_int("certify_n", certify_n)
        for r in certify_radii:
            check_certify_args(r, alpha, 1)
    detector = as_detector(detector, model)
    if certify_radii and not hasattr(detector, "certified_bounds"):
        raise ValueError(f"{name or _name(detector)} has no certificate: certified AUROC (certify_radii) needs a median "
                         "or quantile smoothed detector")
    if not isinstance(ood_sets, dict) or not ood_sets:
        raise ValueError("ood_sets must be a non-empty {name: images} mapping")
    budget = budget_preset(budget)
    targets = check_targets(targets, budget)
    model = detector.model
    sets = {"id_test": TensorSet(id_images, "id_test")}
    for k, v in ood_sets.items():
        if k in ("id_test", "id_val"):
            raise ValueError(f"OOD set name {k!r} is reserved; choose another")
        sets[k] = TensorSet(v, k)
    for ds in sets.values():  # the model's size, else the ID images' (no set is resized silently)
        ds.prepare(model.channels, model.input_size or sets["id_test"].x.shape[-1])
    for k, ds in sets.items():  # before any work: one image has no interval
        check_bootstrap_size("the ID set" if k == "id_test" else f"OOD set {k!r}", len(ds), n_resamples)
    groups = dict(groups) if groups is not None else {k: "near" for k in ood_sets}
    unknown = sorted(set(groups) ^ set(ood_sets))
    if unknown:
        raise ValueError(f"groups must name every OOD set once: {', '.join(unknown)}")
    for g in groups.values():
        check_choice("group", g, ("near", "far"))
    bench = Benchmark("custom", None, sets["id_test"], {k: sets[k] for k in ood_sets}, groups)
    name = name or _name(detector)
    dets = {name: detector}
    cache = BlockCache(None if cache_dir is None else Path(cache_dir))
    units = plan_units(dets)
    clean = {name: {}}
    make = bars(progress)
    for s, ds in sets.items():
        with bar(make, f"{s} clean", len(ds)) as update:
            arrays = compute_set(model, ds, s, units, cache, batch_size, 512, 0, update)
        clean[name][s] = detector_scores(detector, arrays)
    records, means = summarize([name], clean, groups, n_resamples=n_resamples, seed=seed)
    n_samples, sigma = getattr(detector, "n_samples", 1), getattr(detector, "sigma", 0.0)
    noise_space = getattr(detector, "noise_space", "pixel")
    rep = attack_report(model, bench, dets, clean, records, means, eps_list=eps_list, objectives=objectives,
                        targets=targets, budget=budget, seed=seed, cache=cache, batch_size=batch_size,
                        n_resamples=n_resamples, progress_factory=make)
    rep.doc = {"command": "attack", "benchmark": "custom", "model": getattr(model, "name", type(model.net).__name__),
               "seed": seed, "noise_space": noise_space,
               "config": {"n_samples": n_samples, "sigma": sigma, "noise_space": noise_space, "seed": seed,
                          "eps": [eps_label(e) for e in eps_list], "objective": list(objectives),
                          "target": list(targets), "bootstrap": n_resamples},
               "versions": versions(), "id_accuracy": None, **rep.doc}
    if certify_radii:
        rep.certified = _certify(detector, name, sets, groups, [float(r) for r in certify_radii], certify_n, alpha,
                                 make, batch_size)
    return rep


def attack_report(model, bench, dets: dict, clean_scores: dict, clean_records: list, clean_means: list, *, eps_list,
                  objectives=("min", "max", "both"), eps_space: str = "pixel", targets=TARGETS, budget=None,
                  seed: int = 0, cache: BlockCache | None = None, batch_size: int = 64, block_size: int = 256,
                  progress_factory=None, n_resamples: int = 1000, stop_scores: dict | None = None) -> RobustnessReport:
    """The attack part of a robustness report, on a built benchmark (``ross attack`` and
    ``robustness_report`` both come here): ``attack_benchmark`` on fitted ``dets`` whose clean
    scores (detector -> set -> {"score": ...}), records and means are given, and the results
    document's attack fields (the caller adds its command, settings and versions)."""
    budget = budget_preset(budget)
    res = attack_benchmark(model, bench, dets, clean_scores, eps_list=eps_list, objectives=list(objectives),
                           eps_space=eps_space, targets=list(targets), budget=budget, seed=seed, cache=cache,
                           batch_size=batch_size, block_size=block_size, progress_factory=progress_factory,
                           n_resamples=n_resamples, stop_scores=stop_scores)
    scores = {(n, "clean", "clean", s, "clean"): np.asarray(v["score"], np.float64)
              for n, per in clean_scores.items() for s, v in per.items() if s != "id_val"}
    scores.update(res.scores)
    sets = {"id_test": bench.id, **bench.ood}
    doc = {"clean": clean_records, "clean_means": clean_means, "results": res.records, "means": res.means,
           "set_sizes": {k: len(v) for k, v in sets.items()},
           "set_fingerprints": {k: set_fingerprint(v) for k, v in sets.items()}, "groups": bench.groups,
           "eps_space": eps_space, "attack_settings": asdict(res.budget), "precision": res.precision,
           "attack_version": ATTACK_VERSION,
           "eps_list": list(eps_list), "targets": list(targets),
           "detectors": [{"name": n, **d.config()} for n, d in dets.items()], "wall_time_s": res.wall_s}
    return RobustnessReport(json.loads(json.dumps(doc, default=float)), scores)


def _certify(det, name, sets, groups, radii, n, alpha, make=None, batch_size: int = 64) -> list:
    import torch

    from ross_ood.certify import worst_case_metrics
    if not hasattr(det, "certified_bounds"):
        raise ValueError(f"{name} has no certificate: certified AUROC needs a median or quantile smoothed detector")
    cert = det.with_params(n_samples=n)
    feats = {}
    for s, ds in sets.items():
        with bar(make, f"{s} certify", len(ds)) as update:
            parts = []
            for i in range(0, len(ds.x), batch_size):
                parts.append(cert.features(ds.x[i:i + batch_size]))  # noise keyed by content: batching changes nothing
                if update:
                    update(len(parts[-1]))
            feats[s] = torch.cat(parts)
    out = []
    for r in radii:
        lo, _ = cert.certified_bounds(feats["id_test"], radius=r, alpha=alpha)
        aurocs, fprs = [], []
        for s in groups:
            _, hi = cert.certified_bounds(feats[s], radius=r, alpha=alpha)
            m = worst_case_metrics(np.asarray(lo), np.asarray(hi))
            aurocs.append(m["auroc"])
            fprs.append(m["fpr95"])
        out.append({"detector": name, "radius": r, "n": n, "alpha": alpha, "auroc": float(np.mean(aurocs)),
                    "fpr95": float(np.mean(fprs))})
    return out


class Attack:
    """Adversarial images for a fitted detector, in the torchattacks style, with the report's
    defaults: ``Attack(det, eps=8/255, objective="min")(x)`` returns images within the L-inf ball
    of radius ``eps`` (a fraction of the pixel range) around ``x`` and in [0, 1]. ``objective``
    ``min`` lowers the detector's score (an ID image made to look OOD), ``max`` raises it (OOD made
    to look ID). ``target``: ``transfer`` (the paper's PGD on the base score), ``adaptive`` (APGD
    and EOT-PGD on the defended score), ``square`` (gradient-free, on the defended score) or ``worst`` (per image, the attacked image with the worst
    detector score over all of them, as the report's worst case). No early stopping: every image
    gets the whole budget. ``detector`` may be an object of your own with ``score(x)`` (then pass
    ``model``, the classifier it guards; ``ross_ood.detectors.custom``). ``progress``: a bar with the
    time left (None: when stderr is a terminal). The budget's precision ``auto`` is resolved per call
    (``ross_ood.precision``)."""

    def __init__(self, detector: Detector, *, eps: float, objective: str = "min", target: str = "worst",
                 budget="default", seed: int = 0, batch_size: int = 64, model=None, progress: bool | None = None):
        detector = as_detector(detector, model)
        eps = check_eps(eps, strict=True)
        check_choice("objective", objective, ("min", "max"))
        from dataclasses import replace
        self.detector, self.eps, self.objective, self.target = detector, float(eps), objective, target
        self.budget = replace(budget_preset(budget), early_stop=False)
        check_targets([target], self.budget)
        self.seed, self.batch_size, self.progress = check_int("seed", seed, 0), check_int("batch_size", batch_size), \
            progress

    def __call__(self, x):
        import torch

        from ross_ood.attacks.base import new_attack_run
        from ross_ood.engine.adversarial import _adversarial_inputs, _score_inputs, plans_for, resolve_budget
        det, model = self.detector, self.detector.model
        budget = resolve_budget(self.budget, model)[0]
        new_attack_run()
        if not isinstance(x, torch.Tensor):
            raise TypeError(f"images must be a tensor (B, C, H, W) in [0, 1], got {type(x).__name__}")
        xs = TensorSet(x, "images").prepare(model.channels, model.input_size).x
        plans = [p for p in plans_for(_name(det), det, self.eps, self.objective, "pixel", [self.target], budget,
                                      self.seed) if self.target == "worst" or p.target == self.target]
        best, best_s = None, None
        with bar(bars(self.progress), f"attack {self.objective} x{len(plans)}", len(xs) * len(plans)) as update:
            advs = [(plan, _adversarial_inputs(model, xs, plan, budget, self.batch_size, update=update))
                    for plan in plans]
        for plan, adv in advs:
            with torch.no_grad():
                s = det.score_features(_score_inputs(model, adv, det.unit(), self.batch_size)["features"])
            s = s.double().numpy()
            if best is None:
                best, best_s = adv.copy(), s
                continue
            worse = s < best_s if self.objective == "min" else s > best_s
            best[worse], best_s = adv[worse], np.where(worse, s, best_s)
        return torch.from_numpy(best).to(x.device, x.dtype)
