"""Adversarial evaluation: the paper's transfer protocol, adaptive attacks on the defence,
and the per-input worst case.

PGD-Min attacks the ID test inputs (lower the score), PGD-Max attacks each OOD set (raise
the score); the other side stays clean and the metrics are recomputed. PGD-Both attacks
both sides in the same evaluation.

Targets, per detector (every attacked function is the detector's own ``surrogate``):
- ``transfer`` (the paper, exactly): 40-step L-inf PGD, step eps/30, one uniform random
  start, last iterate, on the *base* score; the adversarial inputs are then scored by the
  full defence (fresh noise: the noise is keyed by image content). Inputs are shared by
  every detector with the same base score and cached once.
- ``adaptive``: attacks on the detector's own score. Plain scores: APGD with restarts on
  the score. Smoothed detectors: EOT-APGD on the median of ``attack_n`` noisy scores drawn
  afresh at every step, on the mean of them and on a soft median (smooth surrogates of the
  median: their gradients reach every sample), and, for ROSS, on the gated score S itself
  (raising S for OOD inputs means raising the median *and* lowering D: the gate attack).
- ``square``: gradient-free (``attacks.square``, Andriushchenko et al. 2020): random search on
  the detector's own score, judged on common random numbers, ``square_queries`` per input. It
  does not follow gradients, so a detector whose gradients are masked (flat, quantised, computed
  without autograd) cannot hide from it; ``engine.diagnose`` sets it beside the gradient legs.
- ``worst``: per input, the worst defence score over every attack and restart run (all legs).

Early stopping (``AttackBudget.early_stop``, adaptive and square attacks only; the transfer attack is
the paper's fixed protocol). Under PGD-Min the OOD side is clean: once an ID input's
*defended* score (the detector's own score, computed exactly as the evaluation will compute
it) lies strictly below every clean OOD score of every set, it ranks below all of them, and
no further attack can change the sequence of labels along the sorted scores, so AUROC,
FPR@95 and AUPR of every set are already at their attacked value for that input. Such an
input stops: inside an APGD run (checked every ``check_every`` steps), between restarts, and
for the detector's later attack plans (its transfer or earlier adaptive result already
crosses; the later plan keeps that result). Symmetrically for PGD-Max against the largest
clean ID score. This is exact for PGD-Min and PGD-Max; it is *not* exact for PGD-Both,
where the other side is attacked too and a crossed input could still be passed by it;
PGD-Both reuses the Min and Max inputs, so with early stopping its numbers are those of
attacks that stopped against the clean other side (at most as strong as without).
"""
from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ross_ood.attacks import CHECK_EVERY, OBJECTIVES, SIDES, SQUARE_CHECK_EVERY, AttackConfig, run_attack
from ross_ood.attacks.base import new_attack_run
from ross_ood.attacks.registry import ALGORITHMS, registered_attack
from ross_ood.data.sets import SubsetView
from ross_ood.detectors import SURROGATES, BaseScoreDetector, Detector, FeatureUnit
from ross_ood.engine.evaluate import plan_units, set_fingerprint, unit_arrays
from ross_ood.metrics import ood_records
from ross_ood.model import ModelWrapper, model_fingerprint
from ross_ood.precision import PrecisionChoice, check_precision, network_precision, resolve_precision
from ross_ood.progress import progress
from ross_ood.store import BlockCache, concat_blocks, dist_info, gather_blocks, shard_blocks, stable_key
from ross_ood.validate import check_choice, check_int, check_number, eps_label

__all__ = ["AttackBudget", "resolve_budget", "AttackPlan", "check_targets", "Stop", "plans_for", "compute_adv_set", "attack_benchmark", "AttackResult", "TARGETS",
           "OBJECTIVES", "SIDES"]

TARGETS = ("transfer", "adaptive", "square", "worst")


@dataclass(frozen=True, kw_only=True)
class AttackBudget:
    """Attack strengths. ``transfer_*`` are the paper's; ``adaptive_*`` and ``eotpgd_*`` ours.

    Adaptive plans per detector: APGD (``adaptive_steps`` x ``adaptive_restarts``, first step
    ``apgd_eta0`` x eps) on each of ``surrogates``, and a fixed-schedule EOT-PGD
    (``eotpgd_steps``) on each of ``eotpgd_surrogates``. On smoothed detectors both judge their
    iterates on common random numbers with ``judge_n`` copies (default: the detector's N) when
    ``judge`` is on. The gradient-free plan (``square_queries`` queries per input, Square) compares
    its candidates on the same common random numbers with ``square_n`` copies. ``precision`` drives the gradient steps and the judge (which only chooses
    among iterates); early-stopping checks and every reported score are float32."""

    transfer_steps: int = 40
    transfer_step_size: float = 1 / 30
    adaptive_steps: int = 40
    adaptive_restarts: int = 2
    eot: int = 1
    attack_n: int = 8  # noisy copies per EOT draw in adaptive attacks on smoothed detectors
    surrogates: tuple = ("median", "mean", "ross")
    early_stop: bool = True  # stop attacking inputs that already cross the other side (exact; module doc)
    check_every: int = CHECK_EVERY  # APGD steps between early-stopping checks
    warm_start: bool = False  # start each adaptive plan at the detector's worst input of the earlier plans
    judge: bool = True  # compare iterates on common random numbers (attacks module doc)
    judge_n: int | None = None  # noisy copies of the judge (None: the detector's n_samples)
    apgd_eta0: float = 2.0  # APGD's first step, in eps
    eotpgd_steps: int = 60  # steps of the fixed-schedule EOT-PGD plan (0: no such plan)
    eotpgd_surrogates: tuple = ("mean",)
    eotpgd_n: int = 16  # noisy copies per gradient of the EOT-PGD plan
    eotpgd_restarts: int = 1  # random starts of the EOT-PGD plan (the judge picks per input)
    precision: str = "auto"  # of the gradient steps and the judge (precision.PRECISIONS): auto is bf16 where measured faster
    apgd_judge_every: int = 1  # APGD steps between judgements (attacks.apgd; > 1: a cheaper judge, results/attacks/judge-cost.md)
    square_queries: int = 500  # queries per input of the gradient-free Square leg (0: no such leg)
    square_n: int = 8  # noisy copies of the Square leg's judge on smoothed detectors (its cost: queries x copies)
    extra_attacks: tuple = ()  # attacks of one's own (attacks.registry.register_attack) run in the adaptive target

    def __post_init__(self):
        check_int("transfer_steps", self.transfer_steps, minimum=0)
        check_number("transfer_step_size", self.transfer_step_size, strict=True)
        check_int("adaptive_steps", self.adaptive_steps, minimum=0)
        check_int("restarts", self.adaptive_restarts)
        check_int("eot", self.eot)
        check_int("attack_n", self.attack_n)
        check_int("check_every", self.check_every)
        if not self.surrogates and not self.eotpgd_steps:
            raise ValueError("surrogates: name at least one of " + ", ".join(SURROGATES) + " (or give eotpgd_steps)")
        for s in (*self.surrogates, *self.eotpgd_surrogates):
            check_choice("surrogate", s, SURROGATES)
        if self.judge_n is not None:
            check_int("judge_n", self.judge_n)
        check_number("apgd_eta0", self.apgd_eta0, strict=True)
        check_int("eotpgd_steps", self.eotpgd_steps, minimum=0)
        check_int("eotpgd_n", self.eotpgd_n)
        check_int("eotpgd_restarts", self.eotpgd_restarts)
        check_precision(self.precision)
        check_int("apgd_judge_every", self.apgd_judge_every)
        check_int("square_queries", self.square_queries, minimum=0)
        check_int("square_n", self.square_n)
        object.__setattr__(self, "extra_attacks", tuple(self.extra_attacks))
        for a in self.extra_attacks:
            registered_attack(a)  # a built-in or unknown name is refused by name
        if len(set(self.extra_attacks)) != len(self.extra_attacks):
            raise ValueError(f"extra_attacks names an attack twice: {list(self.extra_attacks)}")

    def gradient_spec(self) -> dict:
        """What, beyond the attack config, determines an adaptive plan's adversarial inputs.
        ``apgd_judge_every`` enters only when set (> 1): at 1 the plans are those of the runs
        cached before it existed, and their caches stay valid."""
        extra = {"apgd_judge_every": self.apgd_judge_every} if self.apgd_judge_every != 1 else {}
        return {"attack_n": self.attack_n, "judge": self.judge, "judge_n": self.judge_n, "precision": self.precision,
                **extra}


def resolve_budget(budget: AttackBudget, model) -> tuple[AttackBudget, PrecisionChoice]:
    """``budget`` with its precision resolved for ``model`` (``precision.resolve_precision``: ``auto``
    becomes bf16 or fp32 by measured speed), and the choice. What runs, what enters the cache keys
    and what a run records is the resolved precision: bf16 and fp32 runs never share a cached attack."""
    from dataclasses import replace
    choice = resolve_precision(budget.precision, model)
    return replace(budget, precision=choice.precision), choice


@dataclass(frozen=True)
class AttackPlan:
    """One attack on one set: ``what`` is the attacked surrogate of ``det``."""

    name: str  # e.g. "transfer/fdbd", "adaptive/ross-fdbd/median"
    target: str
    what: str  # "base" | "median" | "mean" | "softmedian" | "ross"
    det: Detector
    cfg: AttackConfig

    def copies(self, budget: AttackBudget) -> int:
        """Noisy copies per gradient draw of this plan."""
        return budget.eotpgd_n if self.cfg.algorithm == "eotpgd" else budget.attack_n

    def spec(self, budget: AttackBudget) -> dict:
        d = {"what": self.what, "base": self.det.base.spec(), "attack": self.cfg.spec()}
        if self.target == "adaptive":
            d.update(detector=self.det.config(), **budget.gradient_spec(), copies=self.copies(budget))
        if self.target == "square":
            d.update(detector=self.det.config(), square_n=budget.square_n, precision=budget.precision)
        if self.what == "ross":
            d["tau"] = self.det.tau_
        return d


def check_targets(targets, budget: AttackBudget) -> list[str]:
    """``targets`` checked against ``TARGETS`` and the budget (``square`` needs queries)."""
    targets = list(targets)
    if not targets:
        raise ValueError("no target given: name at least one of " + ", ".join(TARGETS))
    for t in targets:
        check_choice("target", t, TARGETS)
    if "square" in targets and not budget.square_queries:
        raise ValueError("target 'square' needs square_queries > 0 (the gradient-free leg's queries per input); "
                         "drop 'square' from the targets to run without it")
    return targets


def plans_for(name: str, det: Detector, eps: float, objective: str, eps_space: str, targets,
              budget: AttackBudget, seed: int) -> list[AttackPlan]:
    """The attacks run against detector ``name`` for one (eps, objective, eps space)."""
    out, want = [], set(check_targets(targets, budget))
    if "worst" in want:
        want |= {"transfer", "adaptive"} | ({"square"} if budget.square_queries else set())
    if "transfer" in want:
        cfg = AttackConfig(eps=eps, objective=objective, eps_space=eps_space, algorithm="pgd",
                           steps=budget.transfer_steps, step_size=budget.transfer_step_size, restarts=1,
                           random_start=True, eot=1, keep="last", seed=seed)
        out.append(AttackPlan(f"transfer/{det.base.name}", "transfer", "base", det, cfg))
    if "adaptive" in want:
        plain = isinstance(det, BaseScoreDetector)

        def whats(names):
            return ["base"] if plain else [w for w in names if w != "ross" or det.kind == "ross"]
        cfg = AttackConfig(eps=eps, objective=objective, eps_space=eps_space, algorithm="apgd",
                           steps=budget.adaptive_steps, step_size=1 / 30, restarts=budget.adaptive_restarts,
                           random_start=True, eot=budget.eot, keep="best", seed=seed, eta0=budget.apgd_eta0)
        out += [AttackPlan(f"adaptive/{name}/{w}", "adaptive", w, det, cfg) for w in whats(budget.surrogates)]
        if budget.eotpgd_steps:
            cfg = AttackConfig(eps=eps, objective=objective, eps_space=eps_space, algorithm="eotpgd",
                               steps=budget.eotpgd_steps, step_size=1 / 4, restarts=budget.eotpgd_restarts,
                               random_start=True, eot=budget.eot, keep="best", seed=seed)
            out += [AttackPlan(f"adaptive/{name}/eotpgd-{w}", "adaptive", w, det, cfg)
                    for w in whats(budget.eotpgd_surrogates)]
        for a in budget.extra_attacks:  # attacks of one's own: their registered steps, restarts and params
            reg = registered_attack(a)
            cfg = AttackConfig(eps=eps, objective=objective, eps_space=eps_space, algorithm=a, steps=reg.steps,
                               restarts=reg.restarts, random_start=True, eot=budget.eot, keep="best", seed=seed,
                               params=tuple(sorted(reg.params.items())))
            out += [AttackPlan(f"adaptive/{name}/{a}-{w}", "adaptive", w, det, cfg) for w in whats(reg.surrogates)]
    if "square" in want:  # last: the early-stopping keys of the plans before it stay those of older caches
        cfg = AttackConfig(eps=eps, objective=objective, eps_space=eps_space, algorithm="square",
                           steps=budget.square_queries, restarts=1, random_start=True, eot=1, keep="best", seed=seed)
        out.append(AttackPlan(f"square/{name}", "square", "base", det, cfg))
    return out


def _stops_early(algorithm: str) -> bool:
    """Whether the algorithm honours early stopping (PGD does not; an attack of one's own says so)."""
    if algorithm == "pgd":
        return False
    return algorithm in ALGORITHMS or registered_attack(algorithm).early_stop


def _scoring_units(plan: AttackPlan, dets: dict[str, Detector]) -> list[FeatureUnit]:
    """The units that score this plan's adversarial inputs: those of every detector with its
    base (transfer), or of the attacked detector alone (adaptive)."""
    if plan.target == "transfer":
        return plan_units({n: d for n, d in dets.items() if d.base.spec() == plan.det.base.spec()})
    return [plan.det.unit()]


@dataclass(frozen=True)
class Stop:
    """Early stopping of one adaptive plan: the detector's scores beyond ``threshold`` (below
    for ``min``, above for ``max``) are done."""

    threshold: float
    side: str

    def done(self, scores) -> np.ndarray:
        s = np.asarray(scores, np.float64)
        return s < self.threshold if self.side == "min" else s > self.threshold


def _stop_fn(model, det: Detector, stop: Stop):
    """Done-check on attack iterates: the detector's score of the float32 image, exactly as
    the evaluation scores the stored adversarial input (same pixels, so same noise keys)."""
    unit = det.unit()

    def fn(x: torch.Tensor) -> torch.Tensor:
        feats = unit_arrays(model, x.detach().float(), [unit])[unit.name]["features"]
        return torch.from_numpy(stop.done(det.score_features(feats).double().numpy()))
    return fn


def _at_precision(fn, precision: str, model):
    """``fn`` (a surrogate ``f(x, draw)`` or a judge ``f(x, keys)``) with ``model``'s network run
    at ``precision`` (``precision.network_precision``: the scores stay float32)."""
    if precision == "fp32":
        return fn

    def f(x, arg):
        with network_precision(model, precision):
            return fn(x, arg)
    return f


def _adversarial_inputs(model, xs: torch.Tensor, plan: AttackPlan, budget: AttackBudget, batch_size: int,
                        stop: Stop | None = None, prior: np.ndarray | None = None,
                        prior_scores: np.ndarray | None = None, update=None) -> np.ndarray:
    """The plan's adversarial version of ``xs``. ``prior``: the detector's worst inputs of the
    earlier plans (with their scores ``prior_scores``); with ``stop``, inputs whose prior is
    already done are not attacked and keep it; with ``budget.warm_start`` the attack starts
    from it. ``update(n)``: told of every n inputs done (a progress bar)."""
    fn = _at_precision(plan.det.surrogate(plan.what, plan.copies(budget)), budget.precision, model)
    judge = None
    if plan.target == "square":  # its only signal is the score's value: on a randomised one, always judged
        judge = plan.det.judge(budget.square_n)
    elif budget.judge and plan.target == "adaptive":
        judge = plan.det.judge(budget.judge_n)
    if judge is not None and budget.precision != "fp32":
        judge = _at_precision(judge, budget.precision, model)
    stop_fn = _stop_fn(model, plan.det, stop) if stop is not None else None
    out = xs.float().numpy().copy()
    run = np.arange(len(xs))
    if stop is not None and prior is not None:
        done = stop.done(prior_scores)
        out[done], run = prior[done], np.flatnonzero(~done)
    if update and len(run) < len(xs):
        update(len(xs) - len(run))
    warm = torch.from_numpy(prior) if budget.warm_start and prior is not None else None
    for i in range(0, len(run), batch_size):
        rows = run[i:i + batch_size]
        x_adv, _ = run_attack(fn, xs[rows].to(model.device), model, plan.cfg, stop_fn=stop_fn,
                              check_every=budget.check_every, judge=judge, apgd_judge_every=budget.apgd_judge_every,
                              x_init=None if warm is None else warm[rows].to(model.device))
        out[rows] = x_adv.float().cpu().numpy()
        if update:
            update(len(rows))
    return out


def _score_inputs(model, x_adv: np.ndarray, u: FeatureUnit, batch_size: int) -> dict:
    t = torch.from_numpy(x_adv)
    return concat_blocks([unit_arrays(model, t[i:i + batch_size].to(model.device), [u])[u.name]
                          for i in range(0, len(t), batch_size)])


def _worst_before(plan: AttackPlan, earlier: list[AttackPlan], block: dict, advs: dict):
    """Per input of this block, the earlier plans' adversarial input that is worst for this
    plan's detector (scored by its unit; the first one on ties) and its score; (None, None)
    when no earlier plan is scored by that unit."""
    uname, side = plan.det.unit().name, plan.cfg.objective
    best_x, best_s = None, None
    for q in earlier:
        feats = block[q.name].get(uname)
        if feats is None:
            continue
        s = plan.det.score_features(feats["features"]).double().numpy()
        if best_x is None:
            best_x, best_s = advs[q.name].copy(), s
            continue
        worse = s < best_s if side == "min" else s > best_s
        best_x[worse], best_s = advs[q.name][worse], np.where(worse, s, best_s)
    return best_x, best_s


def compute_adv_set(model: ModelWrapper, ds, set_name: str, plans: list[AttackPlan], dets: dict[str, Detector],
                    budget: AttackBudget, cache: BlockCache, batch_size=64, block_size=256, progress=None,
                    stops: dict[str, Stop] | None = None) -> dict:
    """For every plan: the scoring units' arrays on the adversarial version of ``ds``. ``progress(n)``
    is told of every n inputs done by each plan (``len(ds) * len(plans)`` in all, this rank's share).
    ``stops`` (plan name -> ``Stop``) turns on early stopping for those plans; their cache
    keys include the threshold and the earlier plans they build on."""
    rank, world = dist_info()
    if budget.precision == "auto":  # attack_benchmark resolved it already; a direct caller here
        budget = resolve_budget(budget, model)[0]
    base_key = {"model": model_fingerprint(model), "set": set_fingerprint(ds)}
    stops = stops or {}
    mine = {}
    for start, stop in shard_blocks(len(ds), block_size, rank, world):
        block, xs, advs, keys = {}, None, {}, {}
        for k, plan in enumerate(plans):
            spec = plan.spec(budget)
            st = stops.get(plan.name)
            warm = budget.warm_start and plan.target == "adaptive"
            if st is not None:  # the early-stopped result depends on the threshold and the earlier plans
                every = SQUARE_CHECK_EVERY if plan.cfg.algorithm == "square" else budget.check_every
                spec["stop"] = {"threshold": st.threshold, "side": st.side, "check_every": every}
            if st is not None or warm:
                spec.update(warm_start=warm, after=[keys[q.name] for q in plans[:k]])
            akey = keys[plan.name] = stable_key({**base_key, "block": [start, stop], **spec})
            adv = cache.load(set_name, "adv-" + plan.name, akey)
            if adv is None:
                if xs is None:
                    sub = SubsetView(ds, np.arange(start, stop))
                    xs = torch.stack([sub[i][0] for i in range(len(sub))])
                prior, prior_s = _worst_before(plan, plans[:k], block, advs) if st is not None or warm else (None, None)
                adv = {"x_adv": _adversarial_inputs(model, xs, plan, budget, batch_size, st, prior, prior_s,
                                                    progress)}
                cache.save(set_name, "adv-" + plan.name, akey, adv)
            elif progress:
                progress(stop - start)
            advs[plan.name] = adv["x_adv"]
            res = {}
            for u in _scoring_units(plan, dets):
                ukey, where = stable_key({"adv": akey, **u.spec()}), f"advscore-{plan.name}-{u.name}"
                got = cache.load(set_name, where, ukey)
                if got is None:
                    got = _score_inputs(model, adv["x_adv"], u, batch_size)
                    cache.save(set_name, where, ukey, got)
                res[u.name] = got
            block[plan.name] = res
        mine[(start, stop)] = block
    blocks = gather_blocks(mine, len(ds), set_name)
    return {p.name: {u: concat_blocks([b[p.name][u] for b in blocks]) for u in blocks[0][p.name]} for p in plans}


def _worst(candidates: list[np.ndarray], objective: str) -> np.ndarray:
    c = np.stack(candidates)
    return c.min(0) if objective == "min" else c.max(0)


def _attacked(model, bench, dets, eps, objective, eps_space, targets, budget, seed, cache, batch_size, block_size,
              progress_factory, thresholds: dict[str, float], plan_scores: dict | None = None) -> dict:
    """detector -> attacked set -> target -> per-input worst attacked scores. ``thresholds``:
    per detector, the clean score of the other side that an attacked input must cross to be
    done (early stopping). ``plan_scores``, when given, receives every plan's own scores,
    keyed (eps, objective, set, detector, plan name)."""
    sets = ["id_test"] if objective == "min" else list(bench.ood)
    out = {n: {} for n in dets}
    for s in sets:
        ds = bench.id if s == "id_test" else bench.ood[s]
        owned = {n: plans_for(n, d, eps, objective, eps_space, targets, budget, seed) for n, d in dets.items()}
        plans = {p.name: p for ps in owned.values() for p in ps}
        stops = {p.name: Stop(thresholds[n], objective) for n, ps in owned.items() for p in ps
                 if budget.early_stop and p.target in ("adaptive", "square") and _stops_early(p.cfg.algorithm)}
        total = sum(b - a for a, b in shard_blocks(len(ds), block_size, *dist_info()))  # this rank's images
        with progress(progress_factory, f"{s} {objective} {eps_label(eps)} x{len(plans)} attacks",
                      total * len(plans)) as update:
            arrays = compute_adv_set(model, ds, s, list(plans.values()), dets, budget, cache, batch_size,
                                     block_size, update, stops)
        for n, d in dets.items():
            cand: dict[str, list] = {}
            for p in owned[n]:
                feats = arrays[p.name][d.unit().name]["features"]
                cand.setdefault(p.target, []).append(d.score_features(feats).double().numpy())
                if plan_scores is not None:
                    plan_scores[(eps, objective, s, n, p.name)] = cand[p.target][-1]
            per = {t: _worst(cand[t], objective) for t in targets if t != "worst"}
            if "worst" in targets:
                per["worst"] = _worst([c for v in cand.values() for c in v], objective)
            out[n][s] = per
    return out


def _thresholds(clean: dict, side: str, ood_sets: list[str]) -> dict[str, float]:
    """Per detector: the lowest clean OOD score over all sets (an ID input attacked below it
    is done) or the highest clean ID test score (an OOD input attacked above it is done)."""
    if side == "min":
        return {n: float(min(np.min(per[o]) for o in ood_sets)) for n, per in clean.items()}
    return {n: float(np.max(per["id_test"])) for n, per in clean.items()}


@dataclass
class AttackResult:
    """What ``attack_benchmark`` returns: metric ``records`` per (detector, OOD set, eps, objective,
    target) and their ``means`` over the OOD sets (with bootstrap intervals), the wall time, the
    per-input ``scores`` of every target keyed (detector, eps, side, set, target) (``runs.rundir.ScoreKey``),
    ``plan_scores``, each attack plan's own per-input scores (keyed as ``_attacked`` does), the
    ``budget`` that ran (its precision resolved) and the ``precision`` choice's record."""

    records: list
    means: list
    wall_s: float
    scores: dict
    plan_scores: dict
    budget: AttackBudget | None = None
    precision: dict | None = None


def attack_benchmark(model: ModelWrapper, bench, dets: dict[str, Detector], clean_scores: dict, *, eps_list,
                     objectives=("min", "max", "both"), eps_space: str = "pixel", targets=TARGETS,
                     budget: AttackBudget | None = None, seed: int = 0, cache: BlockCache | None = None,
                     batch_size: int = 64, block_size: int = 256, progress_factory=None, n_resamples: int = 1000,
                     stop_scores: dict | None = None) -> AttackResult:
    """Attack the fitted detectors ``dets`` on ``bench`` at every budget of ``eps_list`` (fractions
    of the pixel range, or normalised units with ``eps_space="normalized"``) for each objective and
    target. ``clean_scores`` is ``EvalResult.scores`` of the clean evaluation that fitted them.
    ``stop_scores`` (like ``clean_scores``): the clean scores the early-stopping thresholds come
    from, when they are not those of ``bench`` (a piece of a run stops where the whole run would).
    ``cache``: a ``BlockCache`` that makes the run resumable (default: none)."""
    t0 = time.time()
    new_attack_run()
    budget, choice = resolve_budget(AttackBudget() if budget is None else budget, model)
    targets = check_targets(targets, budget)
    cache = BlockCache(None) if cache is None else cache
    plan_scores: dict = {}
    attacked_scores: dict = {}
    clean = {n: {s: v["score"] for s, v in per.items()} for n, per in clean_scores.items()}
    stop = clean if stop_scores is None else {n: {s: v["score"] for s, v in per.items()}
                                              for n, per in stop_scores.items()}
    records, means = [], []
    for eps in eps_list:
        att = {side: _attacked(model, bench, dets, eps, side, eps_space, targets, budget, seed, cache, batch_size,
                               block_size, progress_factory, _thresholds(stop, side, list(bench.ood)), plan_scores)
               for side in ("min", "max") if any(side in SIDES[o] for o in objectives)}
        for side, per_det in att.items():
            for n, per_set in per_det.items():
                for s, per_t in per_set.items():
                    for tgt, v in per_t.items():
                        attacked_scores[(n, eps, side, s, tgt)] = np.asarray(v, np.float64)
        for objective in objectives:
            for n in dets:
                for tgt in targets:
                    id_s = att["min"][n]["id_test"][tgt] if "min" in SIDES[objective] else clean[n]["id_test"]
                    ood = {o: att["max"][n][o][tgt] if "max" in SIDES[objective] else clean[n][o] for o in bench.ood}
                    adaptive = "+".join(["apgd", *(["eotpgd"] if budget.eotpgd_steps else []), *budget.extra_attacks])
                    extra = {"detector": n, "attack": {"transfer": "pgd", "adaptive": adaptive,
                                                       "square": "square"}.get(tgt, "worst-of"),
                             "target": tgt, "eps": eps, "eps_space": eps_space, "objective": objective}
                    recs = ood_records(id_s, ood, bench.groups, {"mean": ("all", list(bench.ood))}, extra,
                                       n_resamples, seed)
                    records += recs[:-1]
                    means.append(recs[-1])
    return AttackResult(records, means, time.time() - t0, attacked_scores, plan_scores, budget, choice.record())
