"""L-infinity attacks on any differentiable scalar score: PGD and APGD, with EOT.

Objectives: ``min`` lowers the score (applied to ID inputs: ID looks OOD), ``max`` raises it
(applied to OOD inputs: OOD looks ID). The budget ``eps`` is in ``pixel`` units (the
adversarial image is clipped to [0, 1]) or ``normalized`` units (eps * std_c per channel,
no clipping, as the ROSS paper). All randomness (start points, EOT noise) is seeded.

``score_fn(x, draw)`` returns (B,) scores; ``draw`` numbers the EOT draw so that a
randomised defence can use fresh noise for each draw and step.

Early stopping (APGD and restarts): ``stop_fn(x)`` says per input whether attacking it
further is wasted (the caller decides; ``adversarial`` stops an input once the defended
score of its best iterate has crossed every clean score of the other side, which is exact
for the separate PGD-Min / PGD-Max metrics). A stopped input keeps the iterate that was
checked; the others continue as if alone, because every draw is keyed by the input's own
content and draw number: the result of an input never depends on which others are in its batch.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch

from .model import ModelWrapper
from .noise import channel_scale, content_keys, draw_noise
from .validate import SPACES, check_choice, check_int, check_number

__all__ = ["AttackConfig", "StopFn", "pgd", "apgd", "eps_tensor", "project", "run_attack", "OBJECTIVES", "ALGORITHMS"]

OBJECTIVES = ("min", "max")  # per attacked input: lower (ID) or raise (OOD) its score
ALGORITHMS = ("pgd", "apgd")
_START_SALT = 1 << 20  # keeps start points apart from the smoothing noise streams
#: bumped whenever the attack code changes what it computes: part of every cache key
ATTACK_VERSION = 3
CHECK_EVERY = 10  # default APGD steps between early-stopping checks
ScoreFn = Callable[[torch.Tensor, int], torch.Tensor]
StopFn = Callable[[torch.Tensor], torch.Tensor]  # (B, ...) inputs -> (B,) bool: "done, stop attacking"


@dataclass(frozen=True)
class AttackConfig:
    """One attack. ``algorithm``: pgd or apgd. ``step_size`` as a fraction of eps (PGD)."""

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


def apgd(score_fn: ScoreFn, x: torch.Tensor, eps: torch.Tensor, cfg: AttackConfig, clip: bool,
         restart: int = 0, stop_fn: StopFn | None = None, check_every: int = CHECK_EVERY,
         x_init: torch.Tensor | None = None) -> tuple[torch.Tensor, torch.Tensor]:
    """APGD (Croce & Hein, ICML 2020, Alg. 1) on the gain: step size 2 eps halved at
    checkpoints when progress stalls, momentum 0.75, best iterate returned. Per input.
    With ``stop_fn``, every ``check_every`` steps the best iterates of the running inputs are
    checked and the done ones leave the batch (they return that best iterate). ``x_init``
    (projected into the ball) replaces the random start: a warm start from an earlier attack."""
    sign = 1.0 if cfg.objective == "max" else -1.0
    n_iter = max(cfg.steps, 1)
    # checkpoints p_0 = 0, p_1 = 0.22, p_{j+1} = p_j + max(p_j - p_{j-1} - 0.03, 0.06)
    p = [0.0, 0.22]
    while p[-1] < 1:
        p.append(p[-1] + max(p[-1] - p[-2] - 0.03, 0.06))
    checks = sorted({int(round(q * n_iter)) for q in p[1:] if q * n_iter <= n_iter})
    b = x.shape[0]
    view = (b,) + (1,) * (x.dim() - 1)
    eta = torch.full(view, 2.0, device=x.device, dtype=x.dtype) * eps  # per input and channel
    draw = restart * (n_iter + 1) * cfg.eot
    x0 = _start(x, eps, clip, cfg, restart) if x_init is None else project(x_init.to(x.dtype), x, eps, clip)
    f0, g = _gain_and_grad(score_fn, x0, sign, cfg.eot, draw)
    draw += cfg.eot
    x_best, f_best = x0.clone(), f0.clone()
    x1 = project(x0 + eta * g.sign(), x, eps, clip)
    f1, g = _gain_and_grad(score_fn, x1, sign, cfg.eot, draw)
    draw += cfg.eot
    better = f1 > f_best
    x_best[better], f_best = x1[better], torch.where(better, f1, f_best)
    x_prev, x_k, f_k = x0, x1, f1
    increases = (f1 > f0).float()
    last_check, f_best_at_check = 0, f_best.clone()
    eta_reduced_at_check = torch.zeros(b, dtype=torch.bool, device=x.device)
    out_x, out_f = x_best.clone(), f_best.clone()  # results of the inputs that stop early
    idx = torch.arange(b, device=x.device)  # the running inputs' rows in the output
    for k in range(1, n_iter):
        if stop_fn is not None and k % check_every == 0:
            done = stop_fn(x_best).to(x.device)
            if done.any():
                out_x[idx[done]], out_f[idx[done]] = x_best[done], f_best[done]
                keep = ~done
                idx, x, eta, x_best, f_best = idx[keep], x[keep], eta[keep], x_best[keep], f_best[keep]
                x_prev, x_k, f_k, g = x_prev[keep], x_k[keep], f_k[keep], g[keep]
                increases, f_best_at_check = increases[keep], f_best_at_check[keep]
                eta_reduced_at_check = eta_reduced_at_check[keep]
                view = (len(idx),) + (1,) * (x.dim() - 1)
                if not len(idx):
                    break
        z = project(x_k + eta * g.sign(), x, eps, clip)
        x_new = project(x_k + 0.75 * (z - x_k) + 0.25 * (x_k - x_prev), x, eps, clip)
        f_new, g_new = _gain_and_grad(score_fn, x_new, sign, cfg.eot, draw)
        draw += cfg.eot
        increases = increases + (f_new > f_k).float()
        better = f_new > f_best
        x_best[better], f_best = x_new[better], torch.where(better, f_new, f_best)
        x_prev, x_k, f_k, g = x_k, x_new, f_new, g_new
        if k + 1 in checks:
            span = k + 1 - last_check
            cond1 = increases < 0.75 * span
            cond2 = (~eta_reduced_at_check) & (f_best <= f_best_at_check)
            halve = cond1 | cond2
            eta = torch.where(halve.view(view), eta / 2, eta)
            x_k = torch.where(halve.view(view), x_best, x_k)
            if halve.any():
                f_k = torch.where(halve, f_best, f_k)
                _, g_h = _gain_and_grad(score_fn, x_k, sign, cfg.eot, draw)
                draw += cfg.eot
                g = torch.where(halve.view(view), g_h, g)
            eta_reduced_at_check = halve
            increases = torch.zeros_like(increases)
            last_check, f_best_at_check = k + 1, f_best.clone()
    out_x[idx], out_f[idx] = x_best, f_best
    return out_x.detach(), out_f


def run_attack(score_fn: ScoreFn, x: torch.Tensor, model: ModelWrapper, cfg: AttackConfig,
               eval_fn: Callable[[torch.Tensor], torch.Tensor] | None = None, stop_fn: StopFn | None = None,
               check_every: int = CHECK_EVERY, x_init: torch.Tensor | None = None
               ) -> tuple[torch.Tensor, torch.Tensor]:
    """All restarts of one attack; per input, keep the restart whose ``eval_fn`` score is
    worst for the defender (lowest for ``min``, highest for ``max``). Returns (x_adv, score).
    With ``stop_fn`` (APGD only; PGD is the paper's fixed protocol) inputs stop early inside a
    run (see ``apgd``), and a restart runs only on the inputs whose result is not done.
    ``x_init`` warm-starts the first APGD run (later restarts start at random)."""
    if stop_fn is not None and cfg.algorithm != "apgd":
        raise ValueError("early stopping is implemented for APGD only (PGD is the paper's fixed protocol)")
    eps = eps_tensor(model, cfg.eps, cfg.eps_space).to(x.device, x.dtype)
    clip = cfg.eps_space == "pixel"
    sign = 1.0 if cfg.objective == "max" else -1.0
    best_x, best_s = None, None
    todo = torch.arange(len(x), device=x.device)  # inputs the next restart runs on
    for r in range(cfg.restarts):
        if cfg.algorithm == "pgd":
            x_adv, gain = pgd(score_fn, x[todo], eps, cfg, clip, restart=r)
        else:
            x_adv, gain = apgd(score_fn, x[todo], eps, cfg, clip, restart=r, stop_fn=stop_fn,
                               check_every=check_every, x_init=x_init[todo] if x_init is not None and r == 0 else None)
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
