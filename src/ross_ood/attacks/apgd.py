"""APGD: step-size-free PGD with momentum (Croce & Hein, "Reliable evaluation of adversarial
robustness with an ensemble of diverse parameter-free attacks", ICML 2020).

z_{k+1} = Proj(x_k + eta_k sign(grad)), x_{k+1} = Proj(x_k + 0.75 (z_{k+1} - x_k) + 0.25 (x_k - x_{k-1}));
eta_0 = ``eta0`` x eps, halved at checkpoints where progress stalled, restarting from the best
point; on a randomised defence every comparison is made by the judge on common random numbers.
Reference implementation: fra31/auto-attack ``autoattack/autopgd_base.py``."""
from __future__ import annotations

import torch

from ross_ood.attacks.base import (
    CHECK_EVERY,
    AttackConfig,
    JudgeFn,
    ScoreFn,
    StopFn,
    _gain_and_grad,
    _judged,
    _Running,
    _start,
    _trace,
    project,
)

__all__ = ['apgd']


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
