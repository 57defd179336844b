"""PGD: projected gradient ascent with signed steps (Madry et al., "Towards Deep Learning Models
Resistant to Adversarial Attacks", ICLR 2018), with EOT over ``cfg.eot`` draws (Athalye, Carlini &
Wagner, ICML 2018).

x_{t+1} = Proj_{B_inf(x, eps) cap [0,1]}(x_t + alpha sign(grad_x s(x_t))), alpha = step_size x eps,
from a uniform random start; the last iterate (the ROSS paper's transfer attack) or the best.
Reference implementation: torchattacks ``torchattacks/attacks/pgd.py``."""
from __future__ import annotations

import torch

from ross_ood.attacks.base import (
    AttackConfig,
    ScoreFn,
    _gain_and_grad,
    _start,
    project,
)

__all__ = ['pgd']


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
