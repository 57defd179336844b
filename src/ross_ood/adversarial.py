"""Adversarial evaluation: the paper's transfer protocol, adaptive attacks on the defence,
and the per-input worst case.

PGD-Min attacks the ID test inputs (lower the score), PGD-Max attacks each OOD set (raise
the score); the other side stays clean and the metrics are recomputed.

Targets, per detector:
- ``transfer`` (the paper, exactly): 40-step L-inf PGD, step eps/30, one uniform random
  start, last iterate, on the *base* score; the adversarial inputs are then scored by the
  full defence (fresh noise: the noise is keyed by image content). Inputs are shared by
  every detector with the same base score and cached once.
- ``adaptive``: attacks on the detector's own score. Plain scores: APGD with restarts on
  the score. Smoothed detectors: EOT-APGD on the median of ``attack_n`` noisy scores drawn
  afresh at every step, on the mean of them and on a soft median (smooth surrogates of the
  median: their gradients reach every sample), and, for
  ROSS, on the gated score S itself (raising S for OOD inputs means raising the median
  *and* lowering D: the gate attack).
- ``worst``: per input, the worst defence score over every attack and restart run.
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from .attacks import AttackConfig, run_attack
from .data.sets import SubsetView
from .evaluate import (DetSpec, Smoothing, Unit, _batch_units, detector_scores, model_fingerprint, plan_units,
                       set_fingerprint)
from .metrics import METRIC_NAMES, ood_metrics
from .model import ModelWrapper
from .smoothing import median_stats, noisy_scores, ross_gate
from .store import BlockCache, concat_blocks, dist_info, gather_blocks, shard_blocks, stable_key

__all__ = ["AttackSettings", "AttackPlan", "plans_for", "attack_benchmark", "TARGETS", "soft_median", "SURROGATES"]

SURROGATES = ("median", "mean", "softmedian", "ross")


def soft_median(s: torch.Tensor, width: float = 0.1) -> torch.Tensor:
    """A soft quantile: the sorted noisy scores averaged with Gaussian weights centred on the
    middle rank (standard deviation ``width`` x N ranks). Unlike the median, whose gradient
    reaches one sample, its gradient spreads over the samples near the median."""
    n = s.shape[1]
    ranks = torch.arange(n, dtype=s.dtype, device=s.device)
    w = torch.exp(-0.5 * ((ranks - (n - 1) / 2) / max(width * n, 0.5)) ** 2)
    return (s.sort(dim=1).values * (w / w.sum())).sum(1)

TARGETS = ("transfer", "adaptive", "worst")


@dataclass(frozen=True)
class AttackSettings:
    """Budgets and strengths. ``transfer_*`` are the paper's; ``adaptive_*`` ours."""

    transfer_steps: int = 40
    transfer_step_size: float = 1 / 30
    adaptive_steps: int = 40
    adaptive_restarts: int = 2
    eot: int = 1
    attack_n: int = 8  # noisy copies per EOT draw in adaptive attacks on smoothed detectors
    surrogates: tuple = ("median", "mean", "ross")


@dataclass(frozen=True)
class AttackPlan:
    """One attack on one set: ``what`` is the attacked function, ``cfg`` the attack."""

    name: str  # e.g. "transfer/fdbd", "adaptive/ross-fdbd/median"
    target: str
    what: str  # "base" | "median" | "mean" | "ross"
    det: DetSpec
    cfg: AttackConfig

    def spec(self, smoothing: Smoothing, tau: float | None, attack_n: int) -> dict:
        d = {"what": self.what, "base": self.det.base.spec(), "attack": self.cfg.spec()}
        if self.what != "base":
            d["smoothing"] = {**smoothing.key(), "attack_n": attack_n}
        if self.what == "ross":
            d["tau"] = tau
            d["lam"] = self.det.lam
        return d


def plans_for(det: DetSpec, eps: float, objective: str, space: str, targets, st: AttackSettings,
              seed: int) -> list[AttackPlan]:
    """The attacks run against ``det`` for one (eps, objective, space)."""
    out = []
    want = set(targets)
    if "worst" in want:
        want |= {"transfer", "adaptive"}
    if "transfer" in want:
        cfg = AttackConfig(eps, objective, space, "pgd", st.transfer_steps, st.transfer_step_size, 1, True, 1,
                           "last", seed)
        out.append(AttackPlan(f"transfer/{det.base.name}", "transfer", "base", det, cfg))
    if "adaptive" in want:
        cfg = AttackConfig(eps, objective, space, "apgd", st.adaptive_steps, 1 / 30, st.adaptive_restarts, True,
                           st.eot, "best", seed)
        if det.kind == "base":
            out.append(AttackPlan(f"adaptive/{det.name}/base", "adaptive", "base", det, cfg))
        else:
            for what in st.surrogates:
                if what == "ross" and det.kind != "ross":
                    continue
                out.append(AttackPlan(f"adaptive/{det.name}/{what}", "adaptive", what, det, cfg))
    return out


def _attack_fn(plan: AttackPlan, model: ModelWrapper, sm: Smoothing, tau, attack_n: int):
    base = plan.det.base
    if plan.what == "base":
        return lambda x, draw: base(model, x)

    def fn(x, draw):
        mat = noisy_scores(model, x, [base], attack_n, sm.sigma, sm.space, sm.seed, chunk_size=sm.chunk_size,
                           salt=1 + draw, noise_device=sm.noise_device)[base.name]
        if plan.what == "mean":
            return mat.double().mean(1)
        if plan.what == "softmedian":
            return soft_median(mat.double())
        st = median_stats(mat)
        if plan.what == "median":
            return st["median"]
        return ross_gate(st["median"], st["D"], tau, plan.det.lam)
    return fn


def _eval_units(plan: AttackPlan, dets: list[DetSpec], sm: Smoothing) -> list[Unit]:
    """Which detectors score this plan's adversarial inputs: all with its base (transfer),
    or the attacked detector alone (adaptive)."""
    if plan.target == "transfer":
        chosen = [d for d in dets if d.base.spec() == plan.det.base.spec()]
    else:
        chosen = [plan.det]
    return [u for u in plan_units(chosen, sm) if u.name != "pred"]


def compute_adv_set(model, ds, set_name, plans, dets, sm, taus, st: AttackSettings, cache: BlockCache,
                    batch_size=64, block_size=256, progress=None) -> dict:
    """For every plan: the defence's unit arrays on the adversarial version of ``ds``."""
    rank, world = dist_info()
    base_key = {"model": model_fingerprint(model), "set": set_fingerprint(ds)}
    mine = {}
    for start, stop in shard_blocks(len(ds), block_size, rank, world):
        block = {}
        sub = SubsetView(ds, np.arange(start, stop))
        xs = None
        for plan in plans:
            tau = taus.get(plan.det.name)
            akey = stable_key({**base_key, "block": [start, stop], **plan.spec(sm, tau, st.attack_n)})
            adv = cache.load(set_name, "adv-" + plan.name, akey)
            if adv is None:
                if xs is None:
                    xs = torch.stack([sub[i][0] for i in range(len(sub))])
                fn = _attack_fn(plan, model, sm, tau, st.attack_n)
                parts = []
                for i in range(0, len(xs), batch_size):
                    xb = xs[i:i + batch_size].to(model.device)
                    x_adv, _ = run_attack(fn, xb, model, plan.cfg)
                    parts.append(x_adv.float().cpu().numpy())
                adv = {"x_adv": np.concatenate(parts)}
                cache.save(set_name, "adv-" + plan.name, akey, adv)
            units = _eval_units(plan, dets, sm)
            res = {}
            for u in units:
                ukey = stable_key({"adv": akey, **u.spec()})
                got = cache.load(set_name, f"advscore-{plan.name}-{u.name}", ukey)
                if got is None:
                    x_adv = torch.from_numpy(adv["x_adv"])
                    pieces = []
                    for i in range(0, len(x_adv), batch_size):
                        xb = x_adv[i:i + batch_size].to(model.device)
                        pieces.append(_batch_units(model, xb, torch.full((len(xb),), -1), [u])[u.name])
                    got = concat_blocks(pieces)
                    cache.save(set_name, f"advscore-{plan.name}-{u.name}", ukey, got)
                res[u.name] = got
            block[plan.name] = res
        mine[(start, stop)] = block
        if progress:
            progress(stop - start)
    blocks = gather_blocks(mine, len(ds), set_name)
    return {plan.name: {u: concat_blocks([b[plan.name][u] for b in blocks]) for u in blocks[0][plan.name]}
            for plan in plans}


def attack_benchmark(model: ModelWrapper, bench, dets: list[DetSpec], sm: Smoothing, clean_arrays: dict,
                     taus: dict, eps_list, objectives, space: str, targets, st: AttackSettings, seed: int,
                     cache: BlockCache, batch_size=64, block_size=256, progress_factory=None):
    """Records (per detector, OOD set, eps, objective, target) and their means over OOD sets."""
    t0 = time.time()
    clean = {d.name: {s: detector_scores(d, clean_arrays[s], taus.get(d.name))["score"] for s in clean_arrays}
             for d in dets}
    ood_sets = list(bench.ood)
    records = []
    for eps in eps_list:
        for objective in objectives:
            sets = ["id_test"] if objective == "min" else ood_sets
            # attacked scores per detector, per set, per target
            attacked = {d.name: {s: {} for s in sets} for d in dets}
            for s in sets:
                ds = bench.id if s == "id_test" else bench.ood[s]
                plans, owners = {}, {}
                for d in dets:
                    for p in plans_for(d, eps, objective, space, targets, st, seed):
                        plans.setdefault(p.name, p)
                        owners.setdefault(d.name, []).append(p.name)
                prog = progress_factory(f"{s} {objective} {eps:.4g}", len(ds)) if progress_factory else None
                try:
                    arrays = compute_adv_set(model, ds, s, list(plans.values()), dets, sm, taus, st, cache,
                                             batch_size, block_size, prog.update if prog else None)
                finally:
                    if prog:
                        prog.close()
                for d in dets:
                    for pname in owners[d.name]:
                        p = plans[pname]
                        sc = detector_scores(d, arrays[pname], taus.get(d.name))["score"]
                        attacked[d.name][s].setdefault(p.target, []).append(sc)
            for d in dets:
                per_target = {}
                for s in sets:
                    cand = attacked[d.name][s]
                    for tgt in targets:
                        if tgt == "worst":
                            allc = np.stack([c for v in cand.values() for c in v])
                            worst = allc.min(0) if objective == "min" else allc.max(0)
                            per_target.setdefault(tgt, {})[s] = worst
                        else:
                            c = np.stack(cand[tgt])
                            per_target.setdefault(tgt, {})[s] = c.min(0) if objective == "min" else c.max(0)
                for tgt, per_set in per_target.items():
                    for o in ood_sets:
                        id_s = per_set["id_test"] if objective == "min" else clean[d.name]["id_test"]
                        ood_s = clean[d.name][o] if objective == "min" else per_set[o]
                        m = ood_metrics(id_s, ood_s)
                        records.append({"detector": d.name, "ood_set": o, "group": bench.groups[o], **m,
                                        "attack": "pgd" if tgt == "transfer" else
                                        ("apgd" if tgt == "adaptive" else "worst-of"),
                                        "target": tgt, "eps": eps, "eps_space": space, "objective": objective})
    return records, time.time() - t0


def mean_over_sets(records: list) -> list:
    """Means over OOD sets per (detector, target, eps, space, objective)."""
    groups = {}
    for r in records:
        k = (r["detector"], r["target"], r["eps"], r["eps_space"], r["objective"])
        groups.setdefault(k, []).append(r)
    out = []
    for (det, tgt, eps, space, obj), rs in groups.items():
        out.append({"detector": det, "ood_set": "mean", "target": tgt, "eps": eps, "eps_space": space,
                    "objective": obj, "attack": rs[0]["attack"],
                    **{k: float(np.mean([r[k] for r in rs])) for k in METRIC_NAMES}})
    return out
