"""L-infinity attacks on any differentiable scalar score: PGD and APGD, with EOT.

Objectives: ``min`` lowers the score (applied to ID inputs: ID looks OOD), ``max`` raises it
(applied to OOD inputs: OOD looks ID). The budget ``eps`` is in ``pixel`` units (the
adversarial image is clipped to [0, 1]) or ``normalized`` units (eps * std_c per channel,
no clipping, as the ROSS paper). All randomness (start points, EOT noise) is seeded.

``score_fn(x, draw)`` returns (B,) scores; ``draw`` numbers the EOT draw so that a
randomised defence can use fresh noise for each draw and step.

Randomised defences: the score an attack climbs is random, so two iterates scored on different
draws cannot be compared. ``judge(x, keys)`` (optional) is the defence's own statistic on
*common random numbers*: noise keyed by the clean inputs' ``keys`` and fixed for the whole
attack. Given a judge, every comparison between iterates (the best iterate, APGD's progress
checks and step-size halving, the choice between restarts) is made on it; without one (a
deterministic score) the attack's own value of the score is exact and is used.

Algorithms: ``pgd`` (the paper's fixed step, last or best iterate), ``apgd`` (Croce & Hein 2020,
first step ``eta0`` x eps) and ``eotpgd``, a fixed-schedule EOT-PGD: sign steps of cosine-decaying
size from ``step_size`` x eps to ``step_min`` x eps, the best iterate by the judge every
``judge_every`` steps. The last needs no progress signal from the noisy objective at all, which
is what makes it hard to fool on a randomised score.

Early stopping (APGD and restarts): ``stop_fn(x)`` says per input whether attacking it
further is wasted (the caller decides; ``adversarial`` stops an input once the defended
score of its best iterate has crossed every clean score of the other side, which is exact
for the separate PGD-Min / PGD-Max metrics). A stopped input keeps the iterate that was
checked; the others continue as if alone, because every draw is keyed by the input's own
content and draw number: the result of an input never depends on which others are in its batch.
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from functools import partial
from typing import Callable

import torch

from ross_ood.model import ModelWrapper
from ross_ood.noise import channel_scale, content_keys, draw_noise
from ross_ood.validate import SPACES, check_choice, check_int, check_number

#: evaluation objectives and the attacked sides they combine: PGD-Min (ID attacked down), PGD-Max
#: (OOD attacked up) and PGD-Both (both at once, as ATD, ALOE and AROS evaluate). Every input's
#: attack depends only on its own score, so PGD-Both pairs exactly the attacked inputs of the
#: other two, and reads them from the same cache.
SIDES = {"min": ("min",), "max": ("max",), "both": ("min", "max")}
#: how the tables name each objective
OBJECTIVE_NAMES = {"min": "PGD-Min", "max": "PGD-Max", "both": "PGD-Both"}

__all__ = ["AttackConfig", "StopFn", "JudgeFn", "pgd", "apgd", "eotpgd", "eps_tensor", "project", "run_attack", "OBJECTIVES", "ALGORITHMS", "SIDES", "OBJECTIVE_NAMES"]

OBJECTIVES = ("min", "max")  # per attacked input: lower (ID) or raise (OOD) its score
ALGORITHMS = ("pgd", "apgd", "eotpgd")
_START_SALT = 1 << 20  # keeps start points apart from the smoothing noise streams
#: bumped whenever the attack code changes what it computes: part of every cache key
ATTACK_VERSION = 4
CHECK_EVERY = 10  # default APGD steps between early-stopping checks
ScoreFn = Callable[[torch.Tensor, int], torch.Tensor]
StopFn = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) inputs -> (B,) bool: "done, stop attacking"
JudgeFn = Callable[[torch.Tensor, list], torch.Tensor]  # (x, clean inputs' keys) -> (B,) the defence's score


@dataclass(frozen=True)
class AttackConfig:
    """One attack. ``algorithm``: pgd, apgd or eotpgd. ``step_size``: PGD's step, or EOT-PGD's
    first step, as a fraction of eps; ``step_min``: EOT-PGD's last step; ``eta0``: APGD's first
    step; ``judge_every``: EOT-PGD's steps between judgements of the iterate."""

    eps: float
    objective: str  # "min" or "max"
    eps_space: str = "pixel"
    algorithm: str = "pgd"
    steps: int = 40
    step_size: float = 1 / 30
    restarts: int = 1
    random_start: bool = True
    eot: int = 1
    keep: str = "last"  # "last" iterate (the paper's PGD) or "best"
    seed: int = 0
    eta0: float = 2.0
    step_min: float = 1 / 40
    judge_every: int = 10

    def __post_init__(self):
        check_choice("objective", self.objective, OBJECTIVES)
        check_choice("eps_space", self.eps_space, SPACES)
        check_choice("attack algorithm", self.algorithm, ALGORITHMS)
        check_number("eps", self.eps)
        check_int("steps", self.steps, minimum=0)
        check_int("restarts", self.restarts)
        check_int("eot", self.eot)
        check_number("step_size", self.step_size, strict=True)
        check_choice("keep", self.keep, ("last", "best"))
        check_number("eta0", self.eta0, strict=True)
        check_number("step_min", self.step_min, strict=True)
        check_int("judge_every", self.judge_every)

    def spec(self) -> dict:
        return {"version": ATTACK_VERSION, **{k: getattr(self, k) for k in self.__dataclass_fields__}}


def eps_tensor(model: ModelWrapper, eps: float, eps_space: str) -> torch.Tensor:
    """Per-channel pixel-space budget, shape (1, C, 1, 1)."""
    return channel_scale(model.std, eps, eps_space)


def project(x_adv: torch.Tensor, x: torch.Tensor, eps: torch.Tensor, clip: bool) -> torch.Tensor:
    """Into the L-infinity ball of radius ``eps`` around ``x`` (and [0, 1] when ``clip``)."""
    out = x + (x_adv - x).clamp(-eps, eps)
    return out.clamp(0.0, 1.0) if clip else out


def _gain_and_grad(score_fn: ScoreFn, x: torch.Tensor, sign: float, eot: int, draw0: int):
    """Mean over ``eot`` draws of sign * score, and its input gradient."""
    x = x.detach().requires_grad_(True)
    with torch.enable_grad():
        total = 0
        for k in range(eot):
            total = total + sign * score_fn(x, draw0 + k)
        gain = total / eot
        (g,) = torch.autograd.grad(gain.sum(), x)
    return gain.detach(), g.detach()


def _start(x, eps, clip, cfg: AttackConfig, restart: int):
    """Uniform start in the eps ball. Like the smoothing noise, the start of an input depends
    only on (seed, restart, the input's content), not on its batch."""
    if not cfg.random_start:
        return x.clone()
    keys = content_keys(x)
    u = draw_noise(keys, [0] * len(keys), x.shape[1:], cfg.seed, _START_SALT + restart, uniform=True)
    u = u.to(x.device, x.dtype) * 2 - 1
    return project(x + u * eps, x, eps, clip)


def pgd(score_fn: ScoreFn, x: torch.Tensor, eps: torch.Tensor, cfg: AttackConfig, clip: bool,
        restart: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Sign-gradient PGD; returns (x_adv, the gain of x_adv as seen by the attack)."""
    sign = 1.0 if cfg.objective == "max" else -1.0
    x_adv = _start(x, eps, clip, cfg, restart)
    alpha = eps * cfg.step_size
    best_x, best_gain = x_adv.clone(), None
    draw = restart * (cfg.steps + 1) * cfg.eot
    for _ in range(cfg.steps):
        gain, g = _gain_and_grad(score_fn, x_adv, sign, cfg.eot, draw)
        draw += cfg.eot
        if cfg.keep == "best":
            if best_gain is None:
                best_gain = gain.clone()
                best_x = x_adv.clone()
            else:
                better = gain > best_gain
                best_gain = torch.where(better, gain, best_gain)
                best_x[better] = x_adv[better]
        x_adv = project(x_adv + alpha * g.sign(), x, eps, clip).detach()
    with torch.no_grad():
        gain = sum(sign * score_fn(x_adv, draw + k) for k in range(cfg.eot)) / cfg.eot
    if cfg.keep == "best" and best_gain is not None:
        better = gain > best_gain
        best_x[better] = x_adv[better]
        return best_x, torch.where(better, gain, best_gain)
    return x_adv, gain


class _Running:
    """The rows of a batch still being attacked, and the finished results of the others:
    ``drop(done)`` files the done rows' best iterates and removes them from every tensor in
    ``state`` (and from ``keys``)."""

    def __init__(self, x_best: torch.Tensor, f_best: torch.Tensor, keys):
        self.out_x, self.out_f = x_best.clone(), f_best.clone()
        self.idx = torch.arange(len(x_best), device=x_best.device)
        self.keys = keys

    def drop(self, done: torch.Tensor, state: dict) -> dict:
        self.out_x[self.idx[done]], self.out_f[self.idx[done]] = state["x_best"][done], state["f_best"][done]
        keep = ~done
        self.idx = self.idx[keep]
        if self.keys is not None:
            self.keys = [k for k, d in zip(self.keys, done.tolist()) if not d]
        return {k: v[keep] for k, v in state.items()}

    def finish(self, x_best: torch.Tensor, f_best: torch.Tensor):
        self.out_x[self.idx], self.out_f[self.idx] = x_best, f_best
        return self.out_x.detach(), self.out_f


def _judged(judge: JudgeFn | None, sign: float, x: torch.Tensor, keys, gain: torch.Tensor | None = None):
    """The attacker's value of iterates ``x``: sign x the judge's score, or, without a judge,
    ``gain`` (the attack's own exact value of a deterministic score)."""
    if judge is None:
        return gain
    return sign * judge(x, keys).to(x.device, torch.float64)


def apgd(score_fn: ScoreFn, x: torch.Tensor, eps: torch.Tensor, cfg: AttackConfig, clip: bool,
         restart: int = 0, stop_fn: StopFn | None = None, check_every: int = CHECK_EVERY,
         x_init: torch.Tensor | None = None, judge: JudgeFn | None = None,
         keys: list | None = None, trace: list | None = None,
         judge_every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD (Croce & Hein, ICML 2020, Alg. 1) on the gain: first step ``cfg.eta0`` x eps, halved
    at checkpoints when progress stalls, momentum 0.75, best iterate returned. Per input.
    With a ``judge`` (and the clean inputs' ``keys``), progress, halving and the best iterate are
    judged on common random numbers (module doc). With ``stop_fn``, every ``check_every`` steps
    the best iterates of the running inputs are checked and the done ones leave the batch (they
    return that best iterate). ``x_init`` (projected into the ball) replaces the random start.

    ``judge_every`` > 1 (a cheaper judge: fewer judgements, not fewer copies) judges only every
    ``judge_every``-th iterate, the iterate of each step-size checkpoint and the last one (the
    first two always): only judged iterates can become the best one, and the checkpoint's
    progress condition counts increases between consecutive judged iterates against 0.75 x the
    judgements of its span. 1 (the default) judges every iterate, the algorithm above exactly.
    Without a judge every iterate is valued by its own gain, which costs nothing extra."""
    sign = 1.0 if cfg.objective == "max" else -1.0
    n_iter = max(cfg.steps, 1)
    # checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    checks = sorted({int(round(q * n_iter)) for q in p[1:] if q * n_iter <= n_iter})
    b = x.shape[0]
    view = (b,) + (1,) * (x.dim() - 1)
    eta = torch.full(view, float(cfg.eta0), device=x.device, dtype=x.dtype) * eps  # per input and channel
    draw = restart * (n_iter + 1) * cfg.eot
    x0 = _start(x, eps, clip, cfg, restart) if x_init is None else project(x_init.to(x.dtype), x, eps, clip)
    gain0, g = _gain_and_grad(score_fn, x0, sign, cfg.eot, draw)
    draw += cfg.eot
    f0 = _judged(judge, sign, x0, keys, gain0)
    x_best, f_best = x0.clone(), f0.clone()
    x1 = project(x0 + eta * g.sign(), x, eps, clip)
    gain1, g = _gain_and_grad(score_fn, x1, sign, cfg.eot, draw)
    draw += cfg.eot
    f1 = _judged(judge, sign, x1, keys, gain1)
    better = f1 > f_best
    x_best[better], f_best = x1[better], torch.where(better, f1, f_best)
    st = {"x": x, "eta": eta, "x_best": x_best, "f_best": f_best, "x_prev": x0, "x_k": x1, "f_k": f1, "g": g,
          "increases": (f1 > f0).float(), "f_best_at_check": f_best.clone(),
          "eta_reduced_at_check": torch.zeros(b, dtype=torch.bool, device=x.device)}
    run = _Running(x_best, f_best, keys)
    _trace(trace, restart, 0, run.idx, f0)
    _trace(trace, restart, 1, run.idx, f1)
    judged_in_span = 1  # judged iterates since the last checkpoint (x1 against x0 so far)
    for k in range(1, n_iter):
        if stop_fn is not None and k % check_every == 0:
            done = stop_fn(st["x_best"]).to(x.device)
            if done.any():
                st = run.drop(done, st)
                view = (len(run.idx),) + (1,) * (x.dim() - 1)
                if not len(run.idx):
                    break
        xc, x_k, eps_k = st["x"], st["x_k"], eps
        z = project(x_k + st["eta"] * st["g"].sign(), xc, eps_k, clip)
        x_new = project(x_k + 0.75 * (z - x_k) + 0.25 * (x_k - st["x_prev"]), xc, eps_k, clip)
        gain_new, g_new = _gain_and_grad(score_fn, x_new, sign, cfg.eot, draw)
        draw += cfg.eot
        judged = judge is None or (k + 1) % judge_every == 0 or k + 1 in checks or k + 1 == n_iter
        if judged:
            f_new = _judged(judge, sign, x_new, run.keys, gain_new)
            st["increases"] = st["increases"] + (f_new > st["f_k"]).float()
            better = f_new > st["f_best"]
            st["x_best"][better], st["f_best"] = x_new[better], torch.where(better, f_new, st["f_best"])
            st["f_k"], judged_in_span = f_new, judged_in_span + 1
        st["x_prev"], st["x_k"], st["g"] = x_k, x_new, g_new
        if k + 1 in checks:
            cond1 = st["increases"] < 0.75 * judged_in_span
            cond2 = (~st["eta_reduced_at_check"]) & (st["f_best"] <= st["f_best_at_check"])
            halve = cond1 | cond2
            st["eta"] = torch.where(halve.view(view), st["eta"] / 2, st["eta"])
            st["x_k"] = torch.where(halve.view(view), st["x_best"], st["x_k"])
            if halve.any():
                st["f_k"] = torch.where(halve, st["f_best"], st["f_k"])
                _, g_h = _gain_and_grad(score_fn, st["x_k"], sign, cfg.eot, draw)
                st["g"] = torch.where(halve.view(view), g_h, st["g"])
            # the draw counter moves whether or not some input of this batch halved: a randomised
            # score's later draws must not depend on the other inputs (before version 4 they did)
            draw += cfg.eot
            st["eta_reduced_at_check"] = halve
            st["increases"] = torch.zeros_like(st["increases"])
            judged_in_span, st["f_best_at_check"] = 0, st["f_best"].clone()
        if judged:
            _trace(trace, restart, k + 1, run.idx, f_new)
    return run.finish(st["x_best"], st["f_best"])


def _trace(trace: list | None, restart: int, step: int, idx: torch.Tensor, f: torch.Tensor) -> None:
    """Diagnostics: the attacker's value (judged) of the current iterate of each running input."""
    if trace is not None:
        trace.append((restart, step, idx.cpu().numpy().copy(), f.detach().double().cpu().numpy().copy()))


def eotpgd(score_fn: ScoreFn, x: torch.Tensor, eps: torch.Tensor, cfg: AttackConfig, clip: bool,
           restart: int = 0, stop_fn: StopFn | None = None, check_every: int = CHECK_EVERY,
           x_init: torch.Tensor | None = None, judge: JudgeFn | None = None,
           keys: list | None = None, trace: list | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """Fixed-schedule EOT-PGD: ``cfg.steps`` sign steps of size eps x (m + (M - m)(1 + cos(pi t / T)) / 2),
    M = ``step_size``, m = ``step_min`` (large first, small last, no dependence on the noisy
    objective), each on the gradient of ``cfg.eot`` draws of ``score_fn``. The start and every
    ``judge_every``-th iterate are judged (on common random numbers with a ``judge``; else by the
    exact deterministic score) and the best is returned, per input. Early stopping as in ``apgd``,
    at the judgements."""
    sign = 1.0 if cfg.objective == "max" else -1.0
    steps = cfg.steps
    draw = restart * (steps + 1) * cfg.eot
    x_adv = _start(x, eps, clip, cfg, restart) if x_init is None else project(x_init.to(x.dtype), x, eps, clip)

    def value(xv, keys_now):
        if judge is not None:
            return _judged(judge, sign, xv, keys_now)
        with torch.no_grad():
            return sign * score_fn(xv, 0).to(torch.float64)
    f_best = value(x_adv, keys)
    st = {"x": x, "x_adv": x_adv, "x_best": x_adv.clone(), "f_best": f_best}
    run = _Running(st["x_best"], f_best, keys)
    _trace(trace, restart, 0, run.idx, f_best)
    for t in range(steps):
        frac = cfg.step_min + (cfg.step_size - cfg.step_min) * 0.5 * (1 + math.cos(math.pi * t / steps))
        _, g = _gain_and_grad(score_fn, st["x_adv"], sign, cfg.eot, draw)
        draw += cfg.eot
        st["x_adv"] = project(st["x_adv"] + frac * eps * g.sign(), st["x"], eps, clip).detach()
        if (t + 1) % cfg.judge_every == 0 or t + 1 == steps:
            f = value(st["x_adv"], run.keys)
            _trace(trace, restart, t + 1, run.idx, f)
            better = f > st["f_best"]
            st["x_best"][better], st["f_best"] = st["x_adv"][better], torch.where(better, f, st["f_best"])
        if stop_fn is not None and (t + 1) % check_every == 0 and t + 1 < steps:
            done = stop_fn(st["x_best"]).to(x.device)
            if done.any():
                st = run.drop(done, st)
                if not len(run.idx):
                    break
    return run.finish(st["x_best"], st["f_best"])


def run_attack(score_fn: ScoreFn, x: torch.Tensor, model: ModelWrapper, cfg: AttackConfig,
               eval_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, stop_fn: StopFn | None = None,
               check_every: int = CHECK_EVERY, x_init: torch.Tensor | None = None,
               judge: JudgeFn | None = None, trace: list | None = None,
               apgd_judge_every: int = 1) -> tuple[torch.Tensor, torch.Tensor]:
    """All restarts of one attack; per input, keep the restart that is worst for the defender
    (lowest score for ``min``, highest for ``max``) by ``eval_fn``, else by the ``judge`` (common
    random numbers keyed by the clean inputs ``x``), else by the attack's own value. Returns
    (x_adv, score). With ``stop_fn`` (APGD and EOT-PGD; PGD is the paper's fixed protocol) inputs
    stop early inside a run, and a restart runs only on the inputs whose result is not done.
    ``x_init`` warm-starts the first run (later restarts start at random). ``trace`` (a list, APGD
    and EOT-PGD) receives (restart, step, rows, attacker's value) of every judged iterate.
    ``apgd_judge_every``: APGD's steps between judgements (``apgd``; EOT-PGD's is ``cfg.judge_every``)."""
    if stop_fn is not None and cfg.algorithm == "pgd":
        raise ValueError("early stopping is implemented for APGD and EOT-PGD only (PGD is the paper's fixed protocol)")
    eps = eps_tensor(model, cfg.eps, cfg.eps_space).to(x.device, x.dtype)
    clip = cfg.eps_space == "pixel"
    sign = 1.0 if cfg.objective == "max" else -1.0
    keys = content_keys(x) if judge is not None else None
    best_x, best_s = None, None
    todo = torch.arange(len(x), device=x.device)  # inputs the next restart runs on
    for r in range(cfg.restarts):
        sub_keys = None if keys is None else [keys[i] for i in todo.tolist()]
        if cfg.algorithm == "pgd":
            x_adv, gain = pgd(score_fn, x[todo], eps, cfg, clip, restart=r)
        else:
            algo = partial(apgd, judge_every=apgd_judge_every) if cfg.algorithm == "apgd" else eotpgd
            x_adv, gain = algo(score_fn, x[todo], eps, cfg, clip, restart=r, stop_fn=stop_fn,
                               check_every=check_every, judge=judge, keys=sub_keys, trace=trace,
                               x_init=x_init[todo] if x_init is not None and r == 0 else None)
        with torch.no_grad():
            s = eval_fn(x_adv) if eval_fn is not None else sign * gain
        if best_x is None:
            best_x, best_s = x_adv, s
        else:
            better = sign * s > sign * best_s[todo]
            best_x[todo[better]] = x_adv[better]
            best_s[todo[better]] = s[better]
        if stop_fn is not None and r + 1 < cfg.restarts:
            todo = todo[~stop_fn(best_x[todo]).to(x.device)]
            if not len(todo):
                break
    return best_x.detach(), best_s.detach()
