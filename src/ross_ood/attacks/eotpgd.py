"""EOT-PGD with a fixed cosine step schedule (no progress signal from the noisy objective).

x_{t+1} = Proj(x_t + alpha_t sign(mean over draws of grad_x s(x_t + noise))), alpha_t from
``step_size`` x eps down to ``step_min`` x eps by a cosine; the best iterate by the judge every
``judge_every`` steps. Athalye, Carlini & Wagner, "Obfuscated Gradients Give a False Sense of
Security", ICML 2018 (EOT); reference implementation: torchattacks ``torchattacks/attacks/eotpgd.py``."""
from __future__ import annotations

import math

import torch

from ross_ood.attacks.base import (
    CHECK_EVERY,
    AttackConfig,
    JudgeFn,
    ScoreFn,
    StopFn,
    _gain_and_grad,
    _Running,
    _start,
    _trace,
    _valuer,
    project,
)

__all__ = ['eotpgd']


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

    value = _valuer(score_fn, judge, sign)
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
